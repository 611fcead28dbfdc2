// The paper's edit protocol (method.md §2), shared by generate(), the continuous batcher and the
// diagnosis, so that the three cannot disagree on which cell is edited and what is decoded next.
#pragma once

#include <optional>
#include <span>

#include "kvsteer/types.h"

namespace kvsteer::detail {

struct ProtocolSplit {
  std::span<const Token> prefill;  // decoded before the edit; its last cell is the edited one
  Token tail = 0;                  // decoded after the edit: the offset token, or the last
                                   // prompt token when there is none
};

// With an offset token the whole prompt is prefilled and the offset token follows; without one,
// all but the last prompt token are prefilled and the last one follows. Throws
// Error(InvalidArgument) for an empty prompt, and, when `steered`, for a one-token prompt without
// an offset token (no cell before the tail to edit).
ProtocolSplit split_prompt(std::span<const Token> prompt, const std::optional<Token>& offset,
                           bool steered);

}  // namespace kvsteer::detail
