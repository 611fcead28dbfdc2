// Why a cache edit does (or does not) change generation: how large the edit is against the
// cache, how much attention the following tokens pay to the steered cell, per layer and per head,
// what share of each head's output the edit contributes, and how far the next-token distribution
// moves. Everything is measured on the real decode: attention is recomputed from llama.cpp's own
// post-RoPE queries and cached K/V, and checked against llama.cpp's attention output.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kvsteer/session.h"
#include "kvsteer/steering.h"

namespace kvsteer {

struct DiagnosisParams {
  SteeringParams steering;    // what is applied, as in generation (coefficients, layers, offset)
  std::int32_t n_follow = 8;  // decoded tokens measured: the tail token, then greedy tokens
};

// Figures of one prompt. [step] indexes the decoded tokens after the edit (step 0 is the tail
// token: the offset token, or the last prompt token without one); each run follows its own greedy
// path, so the two runs may hold different tokens after they diverge.
struct PromptDiagnosis {
  std::int32_t n_prompt = 0;
  Pos steered_pos = -1;
  // [n_layer]: norm of the edit's K (V) row over the mean K (V) row norm of the prompt's cells.
  std::vector<double> k_edit_ratio, v_edit_ratio;
  // [step][layer][query head]: attention weight on the steered cell, without and with the edit.
  std::vector<std::vector<std::vector<double>>> attention_plain, attention_steered;
  // [step][layer][query head]: |a * (v' - v)| / |head output| in the steered run: the share of
  // the head's output that the V edit contributes through the steered cell.
  std::vector<std::vector<std::vector<double>>> v_contribution;
  // Largest |recomputed - llama.cpp| / |llama.cpp| over heads and steps of the attention output
  // ("kqv_out"): how far the attention figures can be trusted for this model.
  double recompute_error = 0.0;
  double kl_first = 0.0;  // KL(steered || plain) of the next-token distribution after step 0
  std::int32_t first_divergence = -1;  // first step whose greedy token differs; -1: none
  std::vector<Token> tokens_plain, tokens_steered;  // greedy tokens after each step
};

// The capture a diagnosis session needs: pass these in SessionParams::capture_tensors.
std::vector<std::string> diagnosis_capture_tensors();

// Decodes `prompt` in sequences 0 and 1 of `session` (cleared first; the session needs n_seq >= 2,
// the capture above and a K cache that is not Hadamard-rotated), edits sequence 1 once as
// generation would, then decodes n_follow tokens in each. Throws Error(InvalidArgument) for a
// session that cannot be used, a prompt too short for the protocol or n_follow < 1; Error(Format)
// for a vector of another model.
PromptDiagnosis diagnose_prompt(Session& session, std::span<const Token> prompt,
                                const SteeringVector& vector, const DiagnosisParams& params);

}  // namespace kvsteer
