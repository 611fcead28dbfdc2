#include "number_list.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>

#include "kvsteer/error.h"
#include "kvsteer/steering.h"

namespace kvsteer::cli {
namespace {

[[noreturn]] void bad_part(const char* flag, const std::string& part, const char* what) {
  throw Error(ErrorCode::InvalidArgument, std::string(flag) + ": '" + part + "' is not " + what);
}

void require_some(bool empty, const char* flag) {
  if (empty) {
    throw Error(ErrorCode::InvalidArgument, std::string(flag) + " is empty");
  }
}

}  // namespace

std::vector<std::string> split_list(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string part;
  while (std::getline(ss, part, sep)) {
    if (!part.empty()) {
      out.push_back(part);
    }
  }
  return out;
}

std::vector<float> parse_float_list(const std::string& text, const char* flag) {
  std::vector<float> out;
  for (const std::string& part : split_list(text, ',')) {
    // strtod rather than std::stod: no exception for out-of-range values, and errno tells them.
    errno = 0;
    char* end = nullptr;
    const double v = std::strtod(part.c_str(), &end);
    if (end != part.c_str() + part.size() || errno == ERANGE || !std::isfinite(v) ||
        std::fabs(v) > static_cast<double>(std::numeric_limits<float>::max())) {
      bad_part(flag, part, "a finite number");
    }
    out.push_back(static_cast<float>(v));
  }
  require_some(out.empty(), flag);
  return out;
}

std::vector<std::int32_t> parse_int_list(const std::string& text, const char* flag, std::int32_t lo,
                                         std::int32_t hi) {
  std::vector<std::int32_t> out;
  for (const std::string& part : split_list(text, ',')) {
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(part.c_str(), &end, 10);
    if (end != part.c_str() + part.size() || errno == ERANGE || v < lo || v > hi) {
      bad_part(flag, part,
               ("an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]").c_str());
    }
    out.push_back(static_cast<std::int32_t>(v));
  }
  require_some(out.empty(), flag);
  return out;
}

std::vector<std::string> parse_layer_grid(const std::string& text, const char* flag) {
  std::vector<std::string> out = split_list(text, ';');
  for (const std::string& selection : out) {
    (void)LayerSelection::parse(selection);
  }
  require_some(out.empty(), flag);
  return out;
}

}  // namespace kvsteer::cli
