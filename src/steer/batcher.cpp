// Continuous batching (kvsteer/batcher.h): the per-request steps of generate() (prefill, one edit
// of the last prefilled cell, tail token, sampling) with requests joining and leaving between
// decode calls.
#include "kvsteer/batcher.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <utility>

#include "kvsteer/error.h"
#include "llama/sampler.h"
#include "steer/protocol.h"
#include "steer/stop_strings.h"

namespace kvsteer {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// Bytes at the end of text that belong to a UTF-8 sequence not yet complete: a token may end in
// the middle of a character, and a streamed piece must not.
std::size_t incomplete_utf8_tail(const std::string& text) {
  const std::size_t n = text.size();
  for (std::size_t back = 1; back <= std::min<std::size_t>(3, n); ++back) {
    const auto c = static_cast<unsigned char>(text[n - back]);
    if ((c & 0xC0) == 0x80) {
      continue;  // continuation byte: look further back
    }
    std::size_t len = 1;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
    }
    return len > back ? back : 0;
  }
  return 0;
}

// Length of the longest proper prefix of a stop string that text ends with: text that may still
// become a stop string.
std::size_t stop_prefix_tail(const std::string& text, const std::vector<std::string>& stops) {
  std::size_t held = 0;
  for (const auto& s : stops) {
    for (std::size_t k = std::min(s.size() - (s.empty() ? 0 : 1), text.size()); k > held; --k) {
      if (text.compare(text.size() - k, k, s, 0, k) == 0) {
        held = k;
        break;
      }
    }
  }
  return held;
}

// OpenAI serves at most 20 alternatives per position; more would only cost a sort of the
// vocabulary.
constexpr std::int32_t kMaxLogprobs = 20;

// The sampled token's log-probability under softmax(logits) and the n most likely tokens (ties by
// token id, so that the list does not depend on the sort).
GeneratedLogprob logprobs_of(std::span<const float> logits, Token sampled, std::int32_t n) {
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float l : logits) {
    sum += std::exp(static_cast<double>(l) - max);
  }
  const double log_z = max + std::log(sum);
  const auto lp = [&](Token t) {
    return static_cast<float>(logits[static_cast<std::size_t>(t)] - log_z);
  };
  GeneratedLogprob out;
  out.sampled = {sampled, lp(sampled)};
  std::vector<Token> ids(logits.size());
  std::iota(ids.begin(), ids.end(), Token{0});
  const auto k = std::min<std::size_t>(static_cast<std::size_t>(n), ids.size());
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(),
                    [&](Token a, Token b) {
                      const float la = logits[static_cast<std::size_t>(a)];
                      const float lb = logits[static_cast<std::size_t>(b)];
                      return la != lb ? la > lb : a < b;
                    });
  for (std::size_t i = 0; i < k; ++i) {
    out.top.push_back({ids[i], lp(ids[i])});
  }
  return out;
}

// How many tokens two sequences share from their start.
std::size_t common_prefix(const std::vector<Token>& a, const std::vector<Token>& b) {
  const auto n = static_cast<std::ptrdiff_t>(std::min(a.size(), b.size()));
  return static_cast<std::size_t>(std::mismatch(a.begin(), a.begin() + n, b.begin()).first -
                                  a.begin());
}

}  // namespace

struct Batcher::Run {
  RequestId id = 0;
  BatchRequest request;
  CellDelta delta;             // the edit, computed (and checked) at submit
  std::vector<Token> prefill;  // decoded before the edit
  Token tail = 0;              // decoded after it
  detail::Sampler sampler;
  std::size_t cells = 0;  // cache cells the request can come to hold
  std::string text;
  std::size_t emitted = 0;  // bytes of text already given out in events
  // Log-probabilities not given out yet, each with the end of its token's text.
  std::deque<std::pair<GeneratedLogprob, std::size_t>> pending_logprobs;
  std::int32_t n_generated = 0;
  Clock::time_point submitted;
  double queue_ms = 0.0;
  double ttft_ms = 0.0;
  SeqId seq = -1;
  bool fresh = false;  // admitted in this step: its tail token is decoded, nothing sampled yet
  Token next = 0;
  std::size_t reused = 0;  // prefill tokens whose cells the prompt cache gave
  // Tokens whose cells in the sequence no edit has touched, position 0 on: what the prompt cache
  // may keep when the request finishes.
  std::vector<Token> clean;

  explicit Run(const SamplingParams& sampling) : sampler(sampling) {}
};

Batcher::Batcher(Session& session, BatcherOptions options)
    : session_(session),
      options_(options),
      slots_(session.params().n_seq),
      kept_(session.params().n_seq) {}

Batcher::~Batcher() = default;

std::size_t Batcher::running() const {
  return static_cast<std::size_t>(
      std::count_if(slots_.begin(), slots_.end(), [](const auto& r) { return r != nullptr; }));
}

std::size_t Batcher::queued() const { return queue_.size(); }

RequestId Batcher::submit(BatchRequest request) {
  const Model& model = session_.model();
  if (request.prompt.empty()) {
    throw Error(ErrorCode::InvalidArgument, "the prompt is empty");
  }
  if (request.n_predict < 1) {
    throw Error(ErrorCode::InvalidArgument,
                "n_predict must be >= 1, got " + std::to_string(request.n_predict));
  }
  for (Token t : request.prompt) {
    model.check_token(t);
  }
  detail::check_stop_strings(request.stop_strings);
  const auto& offset = request.steering_params.offset_token;
  if (offset) {
    model.check_token(*offset);
  }
  const std::size_t cells =
      request.prompt.size() + (offset ? 1 : 0) + static_cast<std::size_t>(request.n_predict);
  if (cells > session_.n_ctx_seq()) {
    throw Error(ErrorCode::InvalidArgument,
                "prompt (" + std::to_string(request.prompt.size()) + " tokens) plus n_predict (" +
                    std::to_string(request.n_predict) + ") exceeds the context (" +
                    std::to_string(session_.n_ctx_seq()) + " cells per sequence)");
  }
  if (request.n_logprobs < -1 || request.n_logprobs > kMaxLogprobs) {
    throw Error(ErrorCode::InvalidArgument, "n_logprobs must be -1 (none) or 0.." +
                                                std::to_string(kMaxLogprobs) + ", got " +
                                                std::to_string(request.n_logprobs));
  }
  auto run = std::make_unique<Run>(request.sampling);
  if (request.steering) {
    check_applicable(*request.steering, session_);
    run->delta = steering_delta(*request.steering, request.steering_params);
  }
  const detail::ProtocolSplit split =
      detail::split_prompt(request.prompt, offset, request.steering != nullptr);
  run->prefill.assign(split.prefill.begin(), split.prefill.end());
  run->tail = split.tail;
  if (offset) {
    run->text = model.token_to_piece(*offset);
  }
  run->id = next_id_++;
  run->cells = cells;
  run->submitted = Clock::now();
  run->request = std::move(request);
  queue_.push_back(std::move(run));
  return queue_.back()->id;
}

void Batcher::cancel(RequestId id) {
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if ((*it)->id == id) {
      queue_.erase(it);
      return;
    }
  }
  for (auto& slot : slots_) {
    if (slot && slot->id == id) {
      release(*slot);
      slot.reset();
      return;
    }
  }
}

// Shorter matches (a BOS token, a chat header) are not worth another prompt's kept cells: the
// request then goes to a sequence that keeps nothing, or the least recently used one.
constexpr std::size_t kMinReuse = 8;

std::pair<std::size_t, std::size_t> Batcher::choose_slot(const Run& run) const {
  std::size_t best = slots_.size(), best_score = 0;
  // 0 for a sequence that keeps nothing, so that it is chosen first when nothing is reused.
  const auto age_rank = [this](std::size_t s) {
    return kept_[s].tokens.empty() ? 0 : kept_[s].used_at + 1;
  };
  for (std::size_t s = 0; s < slots_.size(); ++s) {
    if (slots_[s]) {
      continue;
    }
    const std::size_t score = common_prefix(kept_[s].tokens, run.prefill);
    const std::size_t counted = score >= kMinReuse ? score : 0;
    if (best == slots_.size() || counted > best_score ||
        (counted == best_score && counted == 0 && age_rank(s) < age_rank(best))) {
      best = s;
      best_score = counted;
    }
  }
  if (best == slots_.size()) {
    return {best, 0};
  }
  return {best, common_prefix(kept_[best].tokens, run.prefill)};
}

// A run leaves its sequence: emptied, or with its untouched cells kept for the prompt cache.
void Batcher::release(Run& run) {
  Kept& kept = kept_[static_cast<std::size_t>(run.seq)];
  if (options_.reuse_prompt_cache && !run.clean.empty()) {
    session_.keep_prefix(run.seq, static_cast<Pos>(run.clean.size()));
    kept.tokens = std::move(run.clean);
    kept.used_at = stats_.admitted;
  } else {
    session_.clear_sequence(run.seq);
    kept.tokens.clear();
  }
}

bool Batcher::make_room(std::size_t keep, std::size_t needed, std::size_t& used) {
  while (needed > session_.n_ctx()) {
    std::size_t oldest = slots_.size();
    for (std::size_t o = 0; o < slots_.size(); ++o) {
      if (o != keep && !slots_[o] && !kept_[o].tokens.empty() &&
          (oldest == slots_.size() || kept_[o].used_at < kept_[oldest].used_at)) {
        oldest = o;
      }
    }
    if (oldest == slots_.size()) {
      return false;  // only running requests' cells are left
    }
    const std::size_t freed = kept_[oldest].tokens.size();
    used -= freed;
    needed -= freed;
    kept_[oldest].tokens.clear();
    session_.clear_sequence(static_cast<SeqId>(oldest));
  }
  return true;
}

void Batcher::admit() {
  std::size_t used = 0;  // cells of running requests and of kept prompts
  for (std::size_t s = 0; s < slots_.size(); ++s) {
    used += slots_[s] ? slots_[s]->cells : kept_[s].tokens.size();
  }
  std::vector<Run*> admitted;
  while (!queue_.empty()) {
    const auto [s, reuse] = choose_slot(*queue_.front());
    if (s == slots_.size()) {
      break;  // no free sequence
    }
    // First come, first served: a large request at the head waits for room rather than being
    // overtaken forever by small ones.
    const std::size_t cells = queue_.front()->cells;
    used -= kept_[s].tokens.size();  // the chosen sequence's kept cells become the request's
    if (!make_room(s, used + cells, used)) {
      used += kept_[s].tokens.size();
      break;
    }
    used += cells;
    slots_[s] = std::move(queue_.front());
    queue_.pop_front();
    Run& run = *slots_[s];
    run.seq = static_cast<SeqId>(s);
    run.fresh = true;
    run.queue_ms = ms_since(run.submitted);
    run.reused = reuse;
    if (reuse > 0) {
      session_.keep_prefix(run.seq, static_cast<Pos>(reuse));
    } else {
      session_.clear_sequence(run.seq);
    }
    kept_[s].tokens.clear();
    admitted.push_back(&run);
  }
  // One decode call per prompt: prompts decoded together share matmul batches, whose rounding
  // depends on the batch (a few % of a row on a Q4 model), and a request's answer must not depend
  // on which others arrived with it. Prefill is compute-bound, so little is lost.
  for (Run* run : admitted) {
    if (run->prefill.size() > run->reused) {
      const auto t = Clock::now();
      session_.decode(run->seq, std::span<const Token>(run->prefill).subspan(run->reused), false);
      stats_.decode_ms += ms_since(t);
    }
  }
  for (Run* run : admitted) {
    ++stats_.admitted;
    stats_.prompt_tokens += run->prefill.size() - run->reused + 1;
    stats_.reused_tokens += run->reused;
    run->clean = run->prefill;
    if (run->request.steering) {
      const auto t = Clock::now();
      session_.add_to_cell(run->seq, static_cast<Pos>(run->prefill.size()) - 1, run->delta);
      stats_.edit_ms += ms_since(t);
      ++stats_.edits;
      run->clean.pop_back();  // the edited cell; every later cell has attended to it
    }
  }
}

void Batcher::finish(Run& run, StopReason reason, std::vector<BatchEvent>& events) {
  BatchEvent e;
  e.id = run.id;
  e.piece = run.text.substr(std::min(run.emitted, run.text.size()));
  for (auto& [lp, end] : run.pending_logprobs) {
    if (lp.text_offset < run.text.size() || end <= run.text.size()) {
      e.logprobs.push_back(std::move(lp));
    }
  }
  run.pending_logprobs.clear();
  e.finished = true;
  e.stop_reason = reason;
  e.n_prompt = static_cast<std::int32_t>(run.request.prompt.size());
  e.n_generated = run.n_generated;
  e.queue_ms = run.queue_ms;
  e.ttft_ms = run.ttft_ms;
  events.push_back(std::move(e));
  release(run);
  slots_[static_cast<std::size_t>(run.seq)].reset();
}

std::vector<BatchEvent> Batcher::step() {
  std::vector<BatchEvent> events;
  admit();
  const Model& model = session_.model();
  std::vector<DecodeItem> items;
  for (auto& slot : slots_) {
    if (!slot) {
      continue;
    }
    Run& run = *slot;
    if (run.fresh) {
      items.push_back({run.seq, {&run.tail, 1}, true});
      continue;
    }
    const std::span<const float> logits = session_.logits(run.seq);
    const Token token = run.sampler.sample(logits);
    const detail::AcceptedToken accepted = detail::accept_token(
        model, token, run.text, run.n_generated,
        {run.request.n_predict, &run.request.stop_strings, run.request.stop_at_eog}, run.emitted);
    if (accepted.counted) {
      ++run.n_generated;
      ++stats_.generated_tokens;
      if (run.request.n_logprobs >= 0) {
        GeneratedLogprob lp = logprobs_of(logits, token, run.request.n_logprobs);
        lp.text_offset = accepted.text_begin;
        run.pending_logprobs.emplace_back(std::move(lp), accepted.text_end);
      }
    }
    if (accepted.stop) {
      finish(run, *accepted.stop, events);
      continue;
    }
    const std::size_t held = std::max(stop_prefix_tail(run.text, run.request.stop_strings),
                                      incomplete_utf8_tail(run.text));
    const std::size_t ready = run.text.size() - std::min(held, run.text.size());
    if (ready > run.emitted) {
      BatchEvent e;
      e.id = run.id;
      e.piece = run.text.substr(run.emitted, ready - run.emitted);
      while (!run.pending_logprobs.empty() && run.pending_logprobs.front().second <= ready) {
        e.logprobs.push_back(std::move(run.pending_logprobs.front().first));
        run.pending_logprobs.pop_front();
      }
      e.n_prompt = static_cast<std::int32_t>(run.request.prompt.size());
      e.n_generated = run.n_generated;
      e.queue_ms = run.queue_ms;
      e.ttft_ms = run.ttft_ms;
      events.push_back(std::move(e));
      run.emitted = ready;
    }
    run.next = token;
    items.push_back({run.seq, {&run.next, 1}, true});
  }
  if (!items.empty()) {
    const auto t = Clock::now();
    session_.decode(items);
    stats_.decode_ms += ms_since(t);
    ++stats_.steps;
    // An unsteered request's decoded tokens stay clean; a steered one's attended to the edit.
    for (const DecodeItem& item : items) {
      Run& run = *slots_[static_cast<std::size_t>(item.seq)];
      if (options_.reuse_prompt_cache && !run.request.steering &&
          run.clean.size() == static_cast<std::size_t>(session_.next_pos(item.seq)) - 1) {
        run.clean.push_back(item.tokens.front());
      }
    }
  }
  for (auto& slot : slots_) {
    if (slot && slot->fresh) {
      slot->fresh = false;
      slot->ttft_ms = ms_since(slot->submitted);
    }
  }
  return events;
}

}  // namespace kvsteer
