// A repetitive toy language for tests, demos and benchmarks of the trainer.
#pragma once

#include <cstdint>
#include <vector>

#include "organism/trainer/dataset.h"

namespace kvsteer::train {

// Records of BOS (id 1) then 2-5 sentences "the <noun> <verb> the <adj> <noun> ." over ids
// 260..271 (4 nouns, 3 verbs, 3 adjectives): 15-36 tokens, about 0.7 nats/token of entropy once
// learnt. With `partial_mask`, the first sentence of every record is left out of the loss.
// Deterministic for a seed (std::mt19937 with the libstdc++ distributions).
std::vector<Record> toy_language(int n_records, uint64_t seed, bool partial_mask);

}  // namespace kvsteer::train
