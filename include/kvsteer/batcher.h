// Continuous batching with one-time cache steering per sequence: requests join and leave between
// decode steps, and each request's edit lands on its own sequence's last prompt cell after its
// prefill, so requests with different vectors (or none) share every decode call. Cache steering
// has no per-token work, which is what makes per-request steering free here; activation steering
// (a control vector) is global to the context and has no place in a shared batch.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kvsteer/generation.h"
#include "kvsteer/session.h"
#include "kvsteer/steering.h"

namespace kvsteer {

using RequestId = std::uint64_t;

struct BatchRequest {
  std::vector<Token> prompt;
  // The vector to apply once, or null. Shared so that a request keeps its vector alive however
  // long it waits in the queue.
  std::shared_ptr<const SteeringVector> steering;
  // The offset token is decoded even without a vector, as in generate(), so that steered and
  // unsteered requests see the same tokens.
  SteeringParams steering_params;
  std::int32_t n_predict = 256;
  std::vector<std::string> stop_strings;
  bool stop_at_eog = true;
  SamplingParams sampling;
  // -1: no log-probabilities. 0..20: each sampled token's log-probability under the model (the
  // softmax of the raw logits, before temperature or top-p) and the n most likely tokens with
  // theirs, as OpenAI's logprobs/top_logprobs report them.
  std::int32_t n_logprobs = -1;
};

// Log-probability of one token at one generated position.
struct TokenLogprob {
  Token token = 0;
  float logprob = 0.0f;
};

// One sampled token with its log-probability and the most likely alternatives there.
struct GeneratedLogprob {
  TokenLogprob sampled;
  std::vector<TokenLogprob> top;  // most likely first; BatchRequest::n_logprobs of them
  std::size_t text_offset = 0;    // where the token's text starts in the request's text
};

// What one step produced for one request.
struct BatchEvent {
  RequestId id = 0;
  // Text that became final in this step. Text that could still turn out to be the start of a stop
  // string, or an incomplete UTF-8 sequence, is held back until it is decided, so streamed pieces
  // concatenate to exactly the final text (generate()'s Generation::text).
  std::string piece;
  // Requested log-probabilities (BatchRequest::n_logprobs >= 0) of the sampled tokens whose text
  // is in piece, in order. The offset token was not sampled and has none; a token cut by a stop
  // string is reported when part of its text is kept.
  std::vector<GeneratedLogprob> logprobs;
  bool finished = false;
  StopReason stop_reason = StopReason::Length;  // when finished
  std::int32_t n_prompt = 0;
  std::int32_t n_generated = 0;  // sampled tokens so far (offset token excluded)
  double queue_ms = 0.0;         // from submit() to admission
  double ttft_ms = 0.0;          // from submit() to the first token's logits (0 before them)
};

// Work done so far, for monitoring (a server's /metrics).
struct BatcherStats {
  std::uint64_t admitted = 0;          // requests prefilled
  std::uint64_t edits = 0;             // one-cell edits applied
  double edit_ms = 0.0;                // time spent in them
  std::uint64_t steps = 0;             // decode calls of step()
  double decode_ms = 0.0;              // time spent in the decode calls (prefills included)
  std::uint64_t prompt_tokens = 0;     // prefilled and tail tokens
  std::uint64_t reused_tokens = 0;     // prompt tokens whose cells a finished request left
  std::uint64_t generated_tokens = 0;  // sampled tokens
};

struct BatcherOptions {
  // A prompt cache (llama-server's cache_prompt): a finished request's sequence keeps the cells
  // that the edit did not touch (an unsteered request's prompt and answer; a steered request's
  // prompt before the edited cell), and a later request whose prompt starts with the same tokens
  // is admitted to that sequence and prefills only the rest. Those cells were computed in
  // another decode call, so an answer can differ from a fresh prefill's in the last bits of the
  // logits (a greedy near-tie can flip on a quantized model). Kept cells give way to new
  // requests when the cache is full, the least recently used first.
  bool reuse_prompt_cache = false;
};

// Owns no session: schedules requests onto the sequences of one (the session's n_seq slots).
// Not thread-safe: one thread calls submit/cancel/step (a server's scheduler loop).
class Batcher {
 public:
  explicit Batcher(Session& session, BatcherOptions options = {});
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Checks the request (tokens in the vocabulary, the vector applicable to the session, the
  // prompt plus n_predict within the context) and queues it. Throws Error(InvalidArgument) or
  // Error(Format); nothing is queued then.
  RequestId submit(BatchRequest request);

  // Drops a queued or running request; its sequence is freed now. No event follows. Unknown or
  // finished ids are ignored (a client may go away after its request finished).
  void cancel(RequestId id);

  // Admits queued requests to free sequences while their cells fit the cache (first come, first
  // served), prefills each on its own, applies each one's edit, then samples one token for every
  // running request and decodes all of them, with the new requests' first tokens, in one call.
  // Returns one event per request that produced text or finished in this step.
  std::vector<BatchEvent> step();

  std::size_t running() const;
  std::size_t queued() const;
  bool idle() const { return running() == 0 && queued() == 0; }
  const BatcherStats& stats() const { return stats_; }

 private:
  struct Run;
  // A free sequence's cells kept for the prompt cache.
  struct Kept {
    std::vector<Token> tokens;  // their tokens, position 0 on
    std::uint64_t used_at = 0;  // admission count when they were last used (least recent first)
  };
  void admit();
  // Drops kept prompts, least recently used first and never sequence `keep`'s, until `needed`
  // cells fit the cache; `used` (cells held) and `needed` shrink by what is dropped. False when
  // dropping every other kept prompt is not enough.
  bool make_room(std::size_t keep, std::size_t needed, std::size_t& used);
  // The free sequence for the next request, and how many of its kept tokens the request reuses.
  std::pair<std::size_t, std::size_t> choose_slot(const Run& run) const;
  void finish(Run& run, StopReason reason, std::vector<BatchEvent>& events);
  void release(Run& run);

  Session& session_;
  BatcherOptions options_;
  BatcherStats stats_;
  RequestId next_id_ = 1;
  std::deque<std::unique_ptr<Run>> queue_;
  std::vector<std::unique_ptr<Run>> slots_;  // index = sequence id; null = free
  std::vector<Kept> kept_;                   // index = sequence id; empty tokens: none kept
};

}  // namespace kvsteer
