#include "organism/gen/io.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "kvsteer/error.h"

namespace kvsteer::organism {
namespace {

[[noreturn]] void throw_io(const std::string& what, const std::string& path, int error) {
  throw Error(ErrorCode::Io, "cannot " + what + " '" + path + "': " + std::strerror(error) +
                                 "; hint: check that the folder exists and is writable");
}

void write_file(const std::string& path, std::string_view text) {
  errno = 0;
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) throw_io("create", path, errno);
  const size_t written = std::fwrite(text.data(), 1, text.size(), file);
  const int write_error = errno != 0 ? errno : EIO;
  const bool closed = std::fclose(file) == 0;
  if (written != text.size()) throw_io("write", path, write_error);
  if (!closed) throw_io("close", path, errno);
}

}  // namespace

void write_text_atomic(const std::string& path, std::string_view text) {
  if (path.empty())
    throw Error(ErrorCode::InvalidArgument, "output path is empty; expected a file name");
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  try {
    write_file(tmp, text);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw_io("rename '" + tmp + "' to", path, ec.value());
  }
}

void write_lines_atomic(const std::string& path, const std::vector<std::string>& lines) {
  size_t size = 0;
  for (const std::string& line : lines) size += line.size() + 1;
  std::string text;
  text.reserve(size);
  for (const std::string& line : lines) {
    text += line;
    text += '\n';
  }
  write_text_atomic(path, text);
}

}  // namespace kvsteer::organism
