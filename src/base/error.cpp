#include "kvsteer/error.h"

namespace kvsteer {

const char* error_code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::InvalidArgument:
      return "invalid_argument";
    case ErrorCode::NotFound:
      return "not_found";
    case ErrorCode::Io:
      return "io";
    case ErrorCode::Format:
      return "format";
    case ErrorCode::Unsupported:
      return "unsupported";
    case ErrorCode::Backend:
      return "backend";
    case ErrorCode::Cancelled:
      return "cancelled";
  }
  return "unknown";
}

}  // namespace kvsteer
