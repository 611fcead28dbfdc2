#include "steer/stop_strings.h"

#include <algorithm>

#include "kvsteer/error.h"

namespace kvsteer::detail {

void check_stop_strings(const std::vector<std::string>& stops) {
  for (std::size_t i = 0; i < stops.size(); ++i) {
    if (stops[i].empty()) {
      throw Error(ErrorCode::InvalidArgument,
                  "stop string " + std::to_string(i + 1) + " of " + std::to_string(stops.size()) +
                      " is empty; give each stop string at least one character");
    }
  }
}

std::size_t find_stop(const std::string& text, std::size_t from,
                      const std::vector<std::string>& stops) {
  std::size_t best = std::string::npos;
  for (const auto& s : stops) {
    if (s.empty()) {
      continue;
    }
    const std::size_t start = from >= s.size() ? from - s.size() + 1 : 0;
    const std::size_t at = text.find(s, start);
    if (at != std::string::npos) {
      best = std::min(best, at);
    }
  }
  return best;
}

AcceptedToken accept_token(const Model& model, Token token, std::string& text,
                           std::int32_t n_generated, const StopRules& rules,
                           std::size_t keep_from) {
  AcceptedToken out;
  if (rules.stop_at_eog && model.is_eog(token)) {
    out.stop = StopReason::Eog;
    out.text_begin = out.text_end = text.size();
    return out;
  }
  out.counted = true;
  out.text_begin = text.size();
  text += model.token_to_piece(token);
  out.text_end = text.size();
  static const std::vector<std::string> kNone;
  const std::size_t at =
      find_stop(text, out.text_begin, rules.stop_strings != nullptr ? *rules.stop_strings : kNone);
  if (at != std::string::npos) {
    text.resize(std::max(at, keep_from));
    out.stop = StopReason::StopString;
  } else if (n_generated + 1 >= rules.n_predict) {
    out.stop = StopReason::Length;
  }
  return out;
}

}  // namespace kvsteer::detail
