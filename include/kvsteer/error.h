// Error model of the kvsteer library: every failure a caller can cause is a kvsteer::Error.
#pragma once

#include <stdexcept>
#include <string>

namespace kvsteer {

// What kind of failure an Error reports. The CLI maps InvalidArgument to exit code 2 and every
// other code to exit code 1; the server maps codes to HTTP statuses.
enum class ErrorCode {
  InvalidArgument,  // a value the caller passed is out of range or malformed
  NotFound,         // a file, key or item does not exist
  Io,               // reading or writing a file failed
  Format,           // a file is corrupt, or made for another model or a newer format
  Unsupported,      // architecture, cache type or layout that kvsteer cannot steer
  Backend,          // libllama failed
  Cancelled,        // the caller aborted the computation
};

// Stable lower-case name of a code, e.g. "invalid_argument".
const char* error_code_name(ErrorCode code) noexcept;

// The one exception type the library throws. The message says what failed, the value received,
// the value expected, and a hint where one helps.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace kvsteer
