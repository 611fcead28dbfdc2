// Error type of the trainer library.
#pragma once

#include <stdexcept>
#include <string>

namespace kvsteer::train {

// What kind of failure an Error reports; the CLI maps every kind to exit code 1.
enum class ErrorCode {
  InvalidArgument,  // an option or a value out of range
  Io,               // a file could not be opened, read, written or renamed
  Format,           // a file has a wrong magic, version, size or content
  Unsupported,      // a model feature the trainer does not implement
};

// Thrown by every load_*, save_* and training function of the library. The message names what
// failed, the value received and the value expected.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace kvsteer::train
