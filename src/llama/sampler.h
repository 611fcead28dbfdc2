// Token sampling over a logits row: greedy argmax, or a seeded llama_sampler chain.
#pragma once

#include <memory>
#include <span>

#include "kvsteer/sampling.h"
#include "kvsteer/types.h"

struct llama_sampler;

namespace kvsteer::detail {

// Move-only. One per generated sequence, so a sequence's draws do not depend on its neighbours.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  ~Sampler();
  Sampler(Sampler&&) noexcept;
  Sampler& operator=(Sampler&&) noexcept;

  Token sample(std::span<const float> logits);

 private:
  struct Deleter {
    void operator()(llama_sampler* s) const;
  };
  std::unique_ptr<llama_sampler, Deleter> chain_;  // null: greedy
};

}  // namespace kvsteer::detail
