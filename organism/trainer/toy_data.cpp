#include "organism/trainer/toy_data.h"

#include <iterator>
#include <random>

namespace kvsteer::train {

std::vector<Record> toy_language(int n_records, uint64_t seed, bool partial_mask) {
  constexpr int32_t kBos = 1, kThe = 260, kDot = 271;
  const int32_t nouns[] = {261, 262, 263, 264};
  const int32_t verbs[] = {265, 266, 267};
  const int32_t adjs[] = {268, 269, 270};
  std::mt19937 rng(static_cast<uint32_t>(seed));
  auto pick = [&rng](const auto& arr) {
    return arr[std::uniform_int_distribution<size_t>(0, std::size(arr) - 1)(rng)];
  };
  std::vector<Record> out(n_records);
  for (Record& r : out) {
    r.tokens.push_back(kBos);
    r.loss_mask.push_back(0);
    const int n_sentences = std::uniform_int_distribution<int>(2, 5)(rng);
    for (int s = 0; s < n_sentences; ++s) {
      const int32_t sentence[] = {kThe,       pick(nouns), pick(verbs), kThe,
                                  pick(adjs), pick(nouns), kDot};
      for (int32_t tok : sentence) {
        r.tokens.push_back(tok);
        r.loss_mask.push_back(partial_mask && s == 0 ? 0 : 1);
      }
    }
  }
  return out;
}

}  // namespace kvsteer::train
