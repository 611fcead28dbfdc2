#include "steer/stop_strings.h"

#include <algorithm>

namespace kvsteer::detail {

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

}  // namespace kvsteer::detail
