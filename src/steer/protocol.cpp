#include "steer/protocol.h"

#include "kvsteer/error.h"

namespace kvsteer::detail {

ProtocolSplit split_prompt(std::span<const Token> prompt, const std::optional<Token>& offset,
                           bool steered) {
  if (prompt.empty()) {
    throw Error(ErrorCode::InvalidArgument, "the prompt is empty");
  }
  if (offset) {
    return {prompt, *offset};
  }
  if (steered && prompt.size() < 2) {
    throw Error(ErrorCode::InvalidArgument,
                "steering without an offset token needs a prompt of at least 2 tokens");
  }
  return {prompt.first(prompt.size() - 1), prompt.back()};
}

}  // namespace kvsteer::detail
