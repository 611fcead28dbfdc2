#include "llama/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kvsteer/error.h"
#include "llama.h"

namespace kvsteer::detail {

void Sampler::Deleter::operator()(llama_sampler* s) const { llama_sampler_free(s); }

Sampler::Sampler(const SamplingParams& p) {
  if (!std::isfinite(p.temperature) || p.temperature < 0 || !(p.top_p > 0 && p.top_p <= 1) ||
      !(p.min_p >= 0 && p.min_p < 1) || p.top_k < 0) {
    throw Error(ErrorCode::InvalidArgument, "sampling parameters out of range: temperature " +
                                                std::to_string(p.temperature) + " (>= 0), top-k " +
                                                std::to_string(p.top_k) + " (>= 0), top-p " +
                                                std::to_string(p.top_p) + " (0, 1], min-p " +
                                                std::to_string(p.min_p) + " [0, 1)");
  }
  if (p.temperature == 0.0f) {
    return;
  }
  auto params = llama_sampler_chain_default_params();
  params.no_perf = true;
  chain_.reset(llama_sampler_chain_init(params));
  // Order as Hugging Face applies them for the paper's sampling runs (method.md §6.15):
  // temperature, then top-k, then top-p.
  llama_sampler_chain_add(chain_.get(), llama_sampler_init_temp(p.temperature));
  if (p.top_k > 0) {
    llama_sampler_chain_add(chain_.get(), llama_sampler_init_top_k(p.top_k));
  }
  if (p.top_p < 1.0f) {
    llama_sampler_chain_add(chain_.get(), llama_sampler_init_top_p(p.top_p, 1));
  }
  if (p.min_p > 0.0f) {
    llama_sampler_chain_add(chain_.get(), llama_sampler_init_min_p(p.min_p, 1));
  }
  llama_sampler_chain_add(chain_.get(), llama_sampler_init_dist(p.seed));
}

Sampler::~Sampler() = default;
Sampler::Sampler(Sampler&&) noexcept = default;
Sampler& Sampler::operator=(Sampler&&) noexcept = default;

Token Sampler::sample(std::span<const float> logits) {
  if (!chain_) {
    // First maximum, like llama_sampler_init_greedy.
    return static_cast<Token>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  std::vector<llama_token_data> cand(logits.size());
  for (std::size_t i = 0; i < logits.size(); ++i) {
    cand[i] = {static_cast<llama_token>(i), logits[i], 0.0f};
  }
  llama_token_data_array arr{cand.data(), cand.size(), -1, false};
  llama_sampler_apply(chain_.get(), &arr);
  if (arr.selected < 0 || static_cast<std::size_t>(arr.selected) >= arr.size) {
    throw Error(ErrorCode::Backend, "sampler selected no token");
  }
  const Token token = arr.data[arr.selected].id;
  llama_sampler_accept(chain_.get(), token);
  return token;
}

}  // namespace kvsteer::detail
