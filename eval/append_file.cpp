#include "eval/append_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "kvsteer/error.h"

namespace kvsteer::eval {

AppendFile::AppendFile(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    throw Error(ErrorCode::Io,
                "cannot open " + path_ + " for appending: " + std::string(std::strerror(errno)));
  }
}

AppendFile::~AppendFile() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

AppendFile::AppendFile(AppendFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {}

AppendFile& AppendFile::operator=(AppendFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

void AppendFile::append(std::string_view text) {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    throw Error(ErrorCode::Io, "cannot append to " + path_ + ": " + std::strerror(errno));
  }
  const off_t end = st.st_size;
  std::string_view rest = text;
  int err = 0;
  while (!rest.empty()) {
    const ssize_t n = ::write(fd_, rest.data(), rest.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      err = errno;
      break;
    }
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
  if (err == 0 && ::fdatasync(fd_) != 0) {
    err = errno;
  }
  if (err != 0) {
    // Cut a partial append back, so that no torn line is left behind the earlier ones.
    (void)::ftruncate(fd_, end);
    throw Error(ErrorCode::Io, "cannot append to " + path_ + ": " + std::strerror(err));
  }
}

}  // namespace kvsteer::eval
