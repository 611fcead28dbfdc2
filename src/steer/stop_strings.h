// How a generation ends, shared by generate() and the continuous batcher: stop strings, and what
// one sampled token does to the text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kvsteer/generation.h"
#include "kvsteer/model.h"

namespace kvsteer::detail {

// Error(InvalidArgument) for an empty stop string: it would match before any text, so a
// generation asked to stop there would silently run to n_predict instead (find_stop skips it).
void check_stop_strings(const std::vector<std::string>& stops);

// The earliest stop string in text that ends after `from` (text before it was checked already);
// npos if none. Empty stop strings are skipped (check_stop_strings refuses them first).
std::size_t find_stop(const std::string& text, std::size_t from,
                      const std::vector<std::string>& stops);

// When a continuation stops.
struct StopRules {
  std::int32_t n_predict = 0;
  const std::vector<std::string>* stop_strings = nullptr;
  bool stop_at_eog = true;
};

struct AcceptedToken {
  std::optional<StopReason> stop;  // set: the continuation ends with this token
  bool counted = false;            // the token is part of the answer (false: an end-of-generation)
  std::size_t text_begin = 0;      // where the token's text starts in the text
  std::size_t text_end = 0;        // and ends, before any cut
};

// Takes a sampled token into a continuation that has n_generated counted tokens so far: an
// end-of-generation token (when stop_at_eog) ends it with nothing added; else its text is
// appended, a stop string that the new text completes cuts the text at the stop's start (never
// before `keep_from`, text already given out), and the n_predict-th counted token ends it.
AcceptedToken accept_token(const Model& model, Token token, std::string& text,
                           std::int32_t n_generated, const StopRules& rules,
                           std::size_t keep_from = 0);

}  // namespace kvsteer::detail
