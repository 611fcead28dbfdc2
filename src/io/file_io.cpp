#include "kvsteer/file_io.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "kvsteer/error.h"

namespace kvsteer {

void write_file_atomic(const std::string& path, std::string_view text) {
  if (path.empty()) {
    throw Error(ErrorCode::InvalidArgument, "output path is empty");
  }
  // The process id keeps two writers of the same path from sharing a temporary file.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    out.flush();
    if (!out) {
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      throw Error(ErrorCode::Io, "cannot write '" + path + "'");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw Error(ErrorCode::Io, "cannot write '" + path + "': " + ec.message());
  }
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(ErrorCode::Io, "cannot open '" + path + "'");
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    throw Error(ErrorCode::Io, "cannot read '" + path + "'");
  }
  return text.str();
}

}  // namespace kvsteer
