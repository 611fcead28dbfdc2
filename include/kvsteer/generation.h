// Text generation with optional one-time KV cache steering.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "kvsteer/sampling.h"
#include "kvsteer/session.h"
#include "kvsteer/steering.h"

namespace kvsteer {

struct GenerationParams {
  std::int32_t n_predict = 768;           // new tokens at most (paper: 768)
  std::vector<std::string> stop_strings;  // generation stops when the text ends with one;
                                          // the stop string is removed from the text; an
                                          // empty one is refused (InvalidArgument)
  bool stop_at_eog = true;                // stop at the model's end-of-generation tokens
  SamplingParams sampling;
  // Called once after the prompts are prefilled and edited, right before the tail tokens (the
  // offset token, or the last prompt token) are decoded: activation steering switches its
  // control vector on here, so the prompt is read unsteered and every position from the tail
  // on is steered. May be empty.
  std::function<void(Session&)> before_tail;
};

enum class StopReason { Eog, StopString, Length };
const char* stop_reason_name(StopReason reason) noexcept;

struct Generation {
  std::string text;           // generated text (offset token included when one was decoded)
  std::vector<Token> tokens;  // generated tokens (offset token excluded)
  StopReason stop_reason = StopReason::Length;
  std::int32_t n_prompt = 0;  // prompt tokens (offset token excluded)
  double ttft_ms = 0.0;       // time to first token: from the call to the first sampled token's
                              // logits (prefill, edit, tail decode; shared by the whole batch)
};

// One sequence to generate. `steering` may be null (no edit); the offset token in
// `steering_params` is decoded even when steering is null, so steered and unsteered runs see the
// same tokens.
struct GenerationRequest {
  SeqId seq = 0;
  std::span<const Token> prompt;
  const SteeringVector* steering = nullptr;
  SteeringParams steering_params;
};

// Thread-compatible, like Session: calls on distinct Sessions may run on distinct threads (their
// Model and steering vectors may be shared); one Session is used by one call at a time.
// Generates for every request at once: all prompts are prefilled, each sequence is edited once,
// and the sequences are decoded together, one token each per llama_decode. The requests' seqs
// must be distinct; each is cleared first. Results are in request order.
std::vector<Generation> generate(Session& session, std::span<const GenerationRequest> requests,
                                 const GenerationParams& params);
// One sequence.
Generation generate(Session& session, const GenerationRequest& request,
                    const GenerationParams& params);

}  // namespace kvsteer
