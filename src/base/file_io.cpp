#include "kvsteer/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/durable.h"
#include "kvsteer/error.h"

namespace kvsteer {
namespace detail {

std::string temporary_path_beside(const std::string& path) {
  static std::atomic<std::uint64_t> counter{0};
  return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
}

void sync_file(const std::string& path, const std::string& what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    const int err = errno;
    if (fd >= 0) {
      ::close(fd);
    }
    throw Error(ErrorCode::Io, "cannot write '" + what + "': " + std::strerror(err));
  }
  ::close(fd);
}

AtomicFile::AtomicFile(std::string path)
    : path_(std::move(path)), tmp_(temporary_path_beside(path_)) {
  if (path_.empty()) {
    throw Error(ErrorCode::InvalidArgument, "output path is empty");
  }
}

AtomicFile::~AtomicFile() {
  if (!committed_) {
    ::unlink(tmp_.c_str());
  }
}

void AtomicFile::commit() {
  sync_file(tmp_, path_);
  std::error_code ec;
  std::filesystem::rename(tmp_, path_, ec);
  if (ec) {
    throw Error(ErrorCode::Io, "cannot write '" + path_ + "': " + ec.message());
  }
  committed_ = true;
  sync_parent_folder(path_);
}

void sync_parent_folder(const std::string& path) noexcept {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) {
    parent = ".";
  }
  const int fd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
}

}  // namespace detail

namespace {

// Writes all of text to fd; false with errno set on failure (ENOSPC on a full disk).
bool write_all(int fd, std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return false;
    }
    text.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

}  // namespace

void write_file_atomic(const std::string& path, std::string_view text) {
  detail::AtomicFile file(path);
  const int fd = ::open(file.tmp().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw Error(ErrorCode::Io, "cannot write '" + path + "': " + std::strerror(errno));
  }
  bool ok = write_all(fd, text);
  int err = errno;
  if (::close(fd) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    throw Error(ErrorCode::Io, "cannot write '" + path + "': " + std::strerror(err));
  }
  file.commit();
}

namespace {

// The type of what path names, following links; not_found when nothing is there.
std::filesystem::file_type kind_of(const std::string& path, const std::string& named) {
  std::error_code ec;
  const auto type = std::filesystem::status(path, ec).type();
  if (type == std::filesystem::file_type::none) {
    throw Error(ErrorCode::Io, "cannot look at " + named + ": " + ec.message());
  }
  return type;
}

// What require_file refuses, for a type already looked up.
void refuse_missing_or_folder(std::filesystem::file_type type, const std::string& named,
                              std::string_view hint) {
  if (type == std::filesystem::file_type::not_found) {
    throw Error(ErrorCode::NotFound, named + " does not exist" + std::string(hint));
  }
  if (type == std::filesystem::file_type::directory) {
    throw Error(ErrorCode::InvalidArgument, named + " is a directory, not a file");
  }
}

// The start of every output-path check: a path, and not a folder's. Returns the path's name.
std::string refuse_empty_or_folder_output(const std::string& path, std::string_view what) {
  if (path.empty()) {
    throw Error(ErrorCode::InvalidArgument, std::string(what) + " path is empty");
  }
  std::string named = std::string(what) + " '" + path + "'";
  if (kind_of(path, named) == std::filesystem::file_type::directory) {
    throw Error(ErrorCode::InvalidArgument, named + " is a directory, not a file");
  }
  return named;
}

}  // namespace

void require_file(const std::string& path, std::string_view what, std::string_view hint) {
  const std::string named = std::string(what) + " '" + path + "'";
  refuse_missing_or_folder(kind_of(path, named), named, hint);
}

void require_regular_file(const std::string& path, std::string_view what) {
  const std::string named = std::string(what) + " '" + path + "'";
  const auto type = kind_of(path, named);
  refuse_missing_or_folder(type, named, {});
  if (type != std::filesystem::file_type::regular) {
    throw Error(ErrorCode::InvalidArgument,
                named + " is not a regular file (a pipe, socket or device cannot be loaded)");
  }
}

void require_output_file(const std::string& path, std::string_view what) {
  const std::string named = refuse_empty_or_folder_output(path, what);
  std::string folder = std::filesystem::path(path).parent_path().string();
  if (folder.empty()) {
    folder = ".";
  }
  if (kind_of(folder, named) != std::filesystem::file_type::directory) {
    throw Error(ErrorCode::NotFound, named + ": its folder '" + folder + "' does not exist");
  }
}

namespace {

// Throws when folder, or the nearest of its parents that exists, is not a folder: a file there
// would make creating the folder fail with the system's less telling words.
void refuse_file_in_place_of_folder(const std::filesystem::path& folder, const std::string& named) {
  for (std::filesystem::path p = folder; !p.empty(); p = p.parent_path()) {
    const auto type = kind_of(p.string(), named);
    if (type == std::filesystem::file_type::directory) {
      return;
    }
    if (type != std::filesystem::file_type::not_found) {
      throw Error(ErrorCode::InvalidArgument,
                  named + ": '" + p.string() + "' is a file, not a folder");
    }
    if (p == p.parent_path()) {
      return;
    }
  }
}

}  // namespace

void require_creatable_file(const std::string& path, std::string_view what) {
  const std::string named = refuse_empty_or_folder_output(path, what);
  refuse_file_in_place_of_folder(std::filesystem::path(path).parent_path(), named);
}

void create_folder(const std::string& path, std::string_view what) {
  const std::string named = std::string(what) + " '" + path + "'";
  refuse_file_in_place_of_folder(path, named);
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) {
    throw Error(ErrorCode::Io, "cannot create " + named + ": " + ec.message());
  }
}

std::string read_text_file(const std::string& path, std::string_view what) {
  const std::string named = std::string(what) + " '" + path + "'";
  require_file(path, what);
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(ErrorCode::Io, "cannot open " + named);
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    throw Error(ErrorCode::Io, "cannot read " + named);
  }
  return text.str();
}

}  // namespace kvsteer
