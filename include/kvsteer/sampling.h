// How the next token is drawn from a logits row. Its own header so that the sampler (src/llama)
// depends on this struct alone, not on the generation and steering API above it.
#pragma once

#include <cstdint>

namespace kvsteer {

struct SamplingParams {
  float temperature = 0.0f;   // 0 = greedy (argmax)
  std::int32_t top_k = 0;     // 0 = off
  float top_p = 1.0f;         // 1 = off
  float min_p = 0.0f;         // 0 = off
  std::uint32_t seed = 1234;  // paper: 1234 (method.md §2.4)
};

}  // namespace kvsteer
