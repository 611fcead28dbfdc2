#include "llama_log.h"

#include <cstdio>
#include <deque>
#include <mutex>

#include "llama.h"

namespace kvsteer::tinymodel {
namespace {

struct LogState {
  std::mutex mutex;
  bool verbose = false;
  int quiet = 0;  // nesting depth of QuietLlamaLog
  ggml_log_level last_level = GGML_LOG_LEVEL_NONE;
  std::deque<std::string> errors;
};

constexpr size_t kMaxErrors = 4;

LogState& state() {
  static LogState s;
  return s;
}

void log_callback(ggml_log_level level, const char* text, void* /*user_data*/) noexcept {
  try {
    LogState& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    // CONT continues the previous line at its level.
    const ggml_log_level effective = level == GGML_LOG_LEVEL_CONT ? s.last_level : level;
    s.last_level = effective;
    if (effective == GGML_LOG_LEVEL_ERROR) {
      std::string line = text;
      while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) {
        line.pop_back();
      }
      if (level == GGML_LOG_LEVEL_CONT && !s.errors.empty()) {
        s.errors.back() += line;
      } else {
        s.errors.push_back(line);
        if (s.errors.size() > kMaxErrors) {
          s.errors.pop_front();
        }
      }
    }
    if (s.verbose || (effective == GGML_LOG_LEVEL_ERROR && s.quiet == 0)) {
      std::fputs(text, stderr);
    }
  } catch (...) {
    // A log callback must not throw into C code; losing a line is acceptable.
  }
}

}  // namespace

void install_llama_log(bool verbose) {
  state().verbose = verbose;
  llama_log_set(log_callback, nullptr);
}

QuietLlamaLog::QuietLlamaLog() {
  LogState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  ++s.quiet;
}

QuietLlamaLog::~QuietLlamaLog() {
  LogState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  --s.quiet;
}

void clear_llama_errors() {
  LogState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.errors.clear();
}

std::string llama_errors() {
  LogState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  std::string out;
  for (const std::string& line : s.errors) {
    out += (out.empty() ? "" : " | ") + line;
  }
  return out.empty() ? "(libllama logged no error)" : out;
}

}  // namespace kvsteer::tinymodel
