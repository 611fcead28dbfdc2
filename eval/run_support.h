// The pieces eval, sweep and diagnose share (eval/runner.cpp, sweep.cpp, diagnose.cpp): the
// Evaluator that renders, generates and scores a task's items, and the helpers around it. Internal
// to eval/: frontends use eval/runner.h.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "eval/contrastive.h"
#include "eval/runner.h"
#include "eval/scoring.h"
#include "eval/trace_extraction.h"
#include "eval/traces.h"
#include "kvsteer/diagnosis.h"
#include "kvsteer/error.h"
#include "kvsteer/session.h"
#include "kvsteer/steering.h"

namespace kvsteer::eval {

using nlohmann::ordered_json;

std::string lower(std::string s);

bool is_organism(Task task);

std::string fingerprint_text(const ModelFingerprint& f);

// Wall-clock seconds from `start` to now (the figures result files report).
inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// One steering setting of a batch: a cache edit (vector + params) or none.
struct Setting {
  const SteeringVector* vector = nullptr;
  SteeringParams params;
  std::optional<Token> offset;  // decoded after the prompt (with or without a vector)
};

// Everything an evaluation needs besides the items' results.
class Evaluator {
 public:
  Evaluator(std::shared_ptr<const Model> model, const EvalOptions& o)
      : model_(std::move(model)), o_(o) {
    items_ = load_eval_items(o.task, o.data, o.limit);
    if (o.method == Method::FewShot) {
      load_fewshot_pool();
    }
    for (std::size_t i = 0; i < items_.size(); ++i) {
      prompts_.push_back(render_item(i));
    }
    std::size_t longest = 0;
    for (const auto& p : prompts_) {
      longest = std::max(longest, p.tokens.size());
    }
    suffix_ = model_->tokenize(kExtractionSuffix, false, false);
    per_seq_ =
        static_cast<std::uint32_t>(longest + 2 + static_cast<std::size_t>(o.generation.n_predict) +
                                   suffix_.size() + kExtractionMaxNewTokens + 8);
  }

  // Wall time spent in run_batch: the answers themselves (prefill, edit, decoding) and the
  // multiple-choice answer extraction after them (method.md §3.3: a fresh prefill of prompt and
  // answer again, 10 tokens, and the forced choice).
  struct Timing {
    double answers_s = 0.0;
    double answer_extraction_s = 0.0;
  };
  const Timing& timing() const { return timing_; }

  const std::vector<EvalItem>& items() const { return items_; }
  const Model& model() const { return *model_; }
  const std::string& prompt_text(std::size_t i) const { return prompts_[i].text; }
  const std::vector<Token>& prompt_tokens(std::size_t i) const { return prompts_[i].tokens; }
  std::uint32_t per_seq() const { return per_seq_; }

  // The engine's session for n_seq sequences (EvalOptions::engine, threads, abort); per_seq:
  // cells each sequence may need (0: an evaluation prompt plus generation).
  SessionParams session_params(std::uint32_t n_seq, std::uint32_t per_seq = 0) const {
    SessionParams sp;
    sp.n_seq = n_seq;
    sp.n_ctx = n_seq * (per_seq > 0 ? per_seq : per_seq_);
    sp.n_batch = std::min<std::uint32_t>(512, sp.n_ctx);
    sp.n_threads = o_.n_threads;
    sp.abort_callback = o_.abort;
    sp.type_k = o_.engine.type_k;
    sp.type_v = o_.engine.type_v;
    sp.flash_attn = o_.engine.flash_attn;
    sp.kv_streams = o_.engine.kv_streams;
    if (sp.kv_streams == KvStreams::PerSequence) {
      sp.edit_route = EditRoute::FullSequence;
    }
    return sp;
  }

  Session make_session(std::uint32_t n_seq, bool capture = false, std::uint32_t per_seq = 0) const {
    SessionParams sp = session_params(n_seq, per_seq);
    sp.capture_residual = capture;
    return Session(model_, sp);
  }

  // The contrastive pairs of the extraction (first n_pairs trace rows, shots neighbours).
  std::vector<ContrastivePair> contrastive_pairs(bool cot) const {
    if (o_.traces.empty()) {
      throw Error(ErrorCode::InvalidArgument, "--traces is required to extract a steering vector");
    }
    ContrastiveOptions co;
    co.cot_prefix = cot ? std::string(kCotPrefix) : "";
    co.chat_template = o_.prompt.chat_template;
    co.family = o_.prompt.family;
    PairsFromTraces made = contrastive_pairs_from_traces(
        *model_, o_.traces, trace_format_of(o_.task), o_.n_pairs, o_.shots, o_.fewshot_map, co);
    traces_sha_ = made.traces_sha256;
    return std::move(made.pairs);
  }
  const std::string& traces_sha() const { return traces_sha_; }

  // The logits after `tokens`, decoded from the start as sequence seq of session. Text
  // re-tokenized for the forced choice (as the reference does) can hold more tokens than were
  // generated (a model's own tokens are not always the tokenizer's, and invalid UTF-8 comes back
  // as U+FFFD), and then more than a sequence's cells: a session of one sequence sized for it,
  // with the same engine and, through before_tail, the same control vector, decodes it instead.
  std::vector<float> logits_after(Session& session, SeqId seq, const std::vector<Token>& tokens,
                                  const std::function<void(Session&)>& before_tail) const {
    session.clear_sequence(seq);
    if (tokens.size() <= session.n_ctx_seq()) {
      session.decode(seq, tokens, true);
      const auto logits = session.logits(seq);
      return {logits.begin(), logits.end()};
    }
    Session wide = make_session(1, false, static_cast<std::uint32_t>(tokens.size()));
    if (before_tail) {
      before_tail(wide);
    }
    wide.decode(0, tokens, true);
    const auto logits = wide.logits(0);
    return {logits.begin(), logits.end()};
  }

  // Runs the items `indices` under every setting; results[s][j] for setting s, item indices[j].
  std::vector<std::vector<ItemResult>> run_batch(Session& session,
                                                 const std::vector<std::size_t>& indices,
                                                 const std::vector<Setting>& settings,
                                                 const std::function<void(Session&)>& before_tail) {
    std::vector<GenerationRequest> requests;
    for (std::size_t s = 0; s < settings.size(); ++s) {
      for (std::size_t j = 0; j < indices.size(); ++j) {
        GenerationRequest r;
        r.seq = static_cast<SeqId>(s * indices.size() + j);
        r.prompt = prompts_[indices[j]].tokens;
        r.steering = settings[s].vector;
        r.steering_params = settings[s].params;
        r.steering_params.offset_token = settings[s].offset;
        requests.push_back(r);
      }
    }
    GenerationParams gp = o_.generation;
    gp.before_tail = before_tail;
    auto t0 = std::chrono::steady_clock::now();
    const std::vector<Generation> out = generate(session, requests, gp);
    timing_.answers_s += seconds_since(t0);
    std::vector<ItemResult> flat;
    for (std::size_t r = 0; r < requests.size(); ++r) {
      const std::size_t i = indices[r % indices.size()];
      ItemResult res;
      res.index = i;
      res.id = items_[i].id;
      res.prompt = prompts_[i].text;
      res.response = out[r].text;
      res.target = items_[i].target;
      res.n_tokens = static_cast<std::int32_t>(out[r].tokens.size());
      res.ttft_ms = out[r].ttft_ms;
      res.n_steps = count_reasoning_steps(o_.task, res.response);
      res.reasoning = res.n_steps > 0;
      flat.push_back(std::move(res));
    }
    if (is_multiple_choice(o_.task)) {
      t0 = std::chrono::steady_clock::now();
      score_choices(session, requests, out, flat, before_tail);
      timing_.answer_extraction_s += seconds_since(t0);
    } else {
      for (ItemResult& res : flat) {
        res.extracted = extract_gsm8k_answer(res.response);
      }
    }
    std::vector<std::vector<ItemResult>> results(settings.size());
    for (std::size_t r = 0; r < flat.size(); ++r) {
      flat[r].correct = is_correct(flat[r].extracted, flat[r].target);
      results[r / indices.size()].push_back(std::move(flat[r]));
    }
    return results;
  }

 private:
  struct Prompt {
    std::string text;
    std::vector<Token> tokens;
  };

  std::string render(const std::vector<ChatMessage>& messages) const {
    return o_.prompt.family ? render_reference_prompt(*o_.prompt.family, messages, true)
                            : model_->apply_chat_template(messages, true, o_.prompt.chat_template);
  }

  Prompt render_item(std::size_t i) const {
    std::vector<ChatMessage> messages;
    if (o_.method == Method::FewShot) {
      for (std::size_t j : fewshot_examples(i)) {
        messages.push_back({"user", pool_[j].question});
        messages.push_back({"assistant", positive_answer(pool_[j])});
      }
    }
    messages.push_back({"user", items_[i].question});
    Prompt p;
    p.text = render(messages);
    if (o_.method == Method::Cot || o_.method == Method::CacheCot) {
      p.text += kCotPrefix;
    }
    p.tokens = model_->tokenize_prompt(p.text);
    if (p.tokens.empty()) {
      throw Error(ErrorCode::InvalidArgument, "item " + items_[i].id + " renders to no tokens");
    }
    return p;
  }

  void load_fewshot_pool() {
    if (o_.traces.empty()) {
      throw Error(ErrorCode::InvalidArgument, "--method fewshot needs --traces (the examples)");
    }
    Traces traces = load_traces(o_.traces, trace_format_of(o_.task));
    if (traces.rows.size() > o_.n_pairs) {
      traces.rows.resize(o_.n_pairs);
    }
    if (traces.rows.size() < o_.shots) {
      throw Error(ErrorCode::InvalidArgument,
                  "--shots " + std::to_string(o_.shots) + " is larger than the example pool (" +
                      std::to_string(traces.rows.size()) + " trace rows)");
    }
    pool_ = std::move(traces.rows);
    for (const auto& row : pool_) {
      pool_words_.push_back(question_words(row.question));
    }
  }

  // The k pool rows most similar to item i (Jaccard of word sets; ties: lower index first),
  // least similar first so that the most similar example sits next to the question.
  std::vector<std::size_t> fewshot_examples(std::size_t i) const {
    const auto words = question_words(items_[i].question);
    std::vector<std::pair<double, std::size_t>> scored;
    for (std::size_t j = 0; j < pool_.size(); ++j) {
      if (pool_[j].question == items_[i].question) {
        continue;  // never the question itself
      }
      scored.emplace_back(-jaccard(words, pool_words_[j]), j);
    }
    const std::size_t k = std::min(o_.shots, scored.size());
    std::partial_sort(scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(k),
                      scored.end());
    std::vector<std::size_t> out;
    for (std::size_t j = k; j-- > 0;) {
      out.push_back(scored[j].second);
    }
    return out;
  }

  // method.md §3.3: unsteered 10-token continuation after "\nSo the correct choice is", the
  // regex cascade, and the forced one-token choice for "[invalid]" items. CAA's control vector
  // stays on (the reference's hook stays active); cache edits are gone (sequences restart).
  // organism-choice first takes the organism's own "The answer is X" (organism_choice_answer);
  // only responses without one go through the reference's steps.
  void score_choices(Session& session, const std::vector<GenerationRequest>& requests,
                     const std::vector<Generation>& out, std::vector<ItemResult>& flat,
                     const std::function<void(Session&)>& before_tail) {
    std::vector<std::size_t> pending;
    for (std::size_t r = 0; r < flat.size(); ++r) {
      if (o_.task == Task::OrganismChoice) {
        flat[r].extracted = organism_choice_answer(flat[r].response);
      }
      if (flat[r].extracted.empty()) {
        pending.push_back(r);
      }
    }
    if (pending.empty()) {
      return;
    }
    std::vector<std::vector<Token>> conts(pending.size());  // the requests' prompts point here
    std::vector<GenerationRequest> cont_requests;
    for (std::size_t p = 0; p < pending.size(); ++p) {
      const std::size_t r = pending[p];
      std::vector<Token>& t = conts[p];
      t.assign(requests[r].prompt.begin(), requests[r].prompt.end());
      if (requests[r].steering_params.offset_token) {
        t.push_back(*requests[r].steering_params.offset_token);
      }
      t.insert(t.end(), out[r].tokens.begin(), out[r].tokens.end());
      while (t.size() > requests[r].prompt.size() && model_->is_eog(t.back())) {
        t.pop_back();
      }
      t.insert(t.end(), suffix_.begin(), suffix_.end());
      GenerationRequest c;
      c.seq = requests[r].seq;
      c.prompt = t;
      cont_requests.push_back(c);
    }
    GenerationParams gp = o_.generation;
    gp.n_predict = kExtractionMaxNewTokens;
    gp.sampling = SamplingParams{};
    gp.before_tail = nullptr;
    const std::vector<Generation> ext = generate(session, cont_requests, gp);
    for (std::size_t p = 0; p < pending.size(); ++p) {
      ItemResult& item = flat[pending[p]];
      const std::string continuation = item.response + std::string(kExtractionSuffix) + ext[p].text;
      item.extracted = extract_choice(continuation);
      if (is_invalid(item.extracted)) {
        item.extracted = forced_choice(session, requests[pending[p]].seq, item.prompt, continuation,
                                       before_tail);
        item.forced = true;
      }
    }
  }

  std::string forced_choice(Session& session, SeqId seq, const std::string& prompt,
                            const std::string& continuation,
                            const std::function<void(Session&)>& before_tail) {
    if (candidates_.empty()) {
      for (std::string_view c : kForcedChoiceCandidates) {
        const auto ids = model_->tokenize(c, false, false);
        if (!ids.empty()) {
          candidates_.emplace_back(ids.front(), std::string(c));
        }
      }
    }
    const std::vector<Token> tokens =
        model_->tokenize(forced_choice_input(prompt, continuation), false, true);
    const std::vector<float> logits = logits_after(session, seq, tokens, before_tail);
    std::size_t best = 0;
    for (std::size_t c = 1; c < candidates_.size(); ++c) {
      if (logits[static_cast<std::size_t>(candidates_[c].first)] >
          logits[static_cast<std::size_t>(candidates_[best].first)]) {
        best = c;
      }
    }
    std::string letter = candidates_[best].second;
    letter.erase(std::remove(letter.begin(), letter.end(), ' '), letter.end());
    return letter;
  }

  std::shared_ptr<const Model> model_;
  const EvalOptions& o_;
  std::vector<EvalItem> items_;
  std::vector<Prompt> prompts_;
  std::vector<TraceRow> pool_;
  std::vector<std::set<std::string>> pool_words_;
  std::vector<Token> suffix_;
  std::vector<std::pair<Token, std::string>> candidates_;
  std::uint32_t per_seq_ = 0;
  mutable std::string traces_sha_;
  Timing timing_;
};

std::uint32_t longest_pair(const std::vector<ContrastivePair>& pairs);

// Mean residual difference (positive - negative) per layer at the last prompt token.
std::vector<std::vector<float>> extract_residual_vector(const Evaluator& ev,
                                                        const std::vector<ContrastivePair>& pairs,
                                                        const EvalOptions& o);

// A session that extracts from these pairs, n_seq prompts at a time.
Session extraction_session(const Evaluator& ev, const std::vector<ContrastivePair>& pairs);

// The cache-steering vector of a run: the --vector file, or extracted from the traces (with the
// CoT prefix for cache+cot). `info` receives its provenance.
SteeringVector cache_vector(const Evaluator& ev, const EvalOptions& o, ordered_json& info);

// The provenance run_eval records for its vector, from the options and files alone: a resumed run
// whose items are all done (killed between its last batch and summary.json) extracts nothing and
// must still write the summary an uninterrupted run writes.
ordered_json vector_provenance(const EvalOptions& o);

std::vector<std::vector<float>> scaled(const std::vector<std::vector<float>>& v, float c);

ordered_json steering_json(const SteeringParams& p);

// A file's size and an FNV-1a 64 of its first and last 4 MiB (the whole file when smaller),
// for the model (a retrained or requantised model keeps its fingerprint: architecture,
// vocabulary) and the vector file (a re-extracted vector keeps its path) of a run: a resumed run
// must not mix its answers with another model's or another vector's. `what` names the file in
// errors ("model file").
ordered_json file_identity(const std::string& path, const std::string& what);

ordered_json config_json(const EvalOptions& o, const Model& model);

// The top-level keys in which a recorded run configuration (config.json, a sweep journal's
// header) and this run's differ, empty when the run may resume. File paths (data, traces,
// fewshot_map, vector, model) are compared by the file they name, a relative one resolved against
// the current directory: `make` and a shell spell the same file differently, and a resumed run
// must not be refused for that. Whether the file's contents changed is what model_file and
// vector_file are for. A key this kvsteer records that a recorded configuration predates
// (kConfigKeysAddedLater) is no difference: runs begun by an earlier kvsteer go on.
std::vector<std::string> config_differences(const ordered_json& recorded, const ordered_json& now);

// Keys config_json gained after runs were recorded without them (vector_file).
bool config_key_added_later(const std::string& key);

// Whether a run recorded with `recorded_limit` items may go on with `limit` (0: all items in
// both): raising it extends the run, since items are taken in file order and the answered ones
// stay a prefix of the new set; lowering it would leave answered items outside the run.
bool limit_extends(std::size_t recorded_limit, std::size_t limit);

// "data, traces" from config_differences, for an error message.
std::string join_keys(const std::vector<std::string>& keys);

// The fields every result file (eval summary, sweep, diagnosis) starts with: its kind, format
// version, task and method.
ordered_json result_head(const std::string& kind, const EvalOptions& o);

// The model a result was computed with: its path and fingerprint.
ordered_json model_json(const EvalOptions& o, const Model& model);

// Ends a result file: the seconds since `start` and the commit that computed it.
void stamp_result(ordered_json& out, std::chrono::steady_clock::time_point start);

// A result JSON (sweep, diagnosis), its folder created when missing.
void write_json_file(const std::string& path, const ordered_json& j);

// Results already in items.jsonl; a torn last line (a kill mid-write) is cut off.
std::map<std::size_t, ItemResult> load_done(const std::string& path);

// The items [0, total) in slices of `size`, each without the items `done` says are finished,
// empty slices left out. A resumed run keeps the slice boundaries, so each remaining item is
// decoded beside the same neighbours as in an uninterrupted run.
std::vector<std::vector<std::size_t>> pending_batches(std::size_t total, std::size_t size,
                                                      const std::function<bool(std::size_t)>& done);

// One line of items.jsonl or a sweep journal. Byte-fallback tokens can leave invalid UTF-8 in a
// response: it is replaced (U+FFFD) rather than failing the run.
std::string journal_line(const ordered_json& j);

// The result as a resumed run reads it back from its line (ttft_ms rounded, invalid UTF-8
// replaced): summaries are computed from these, so a run's summary does not depend on which of
// its items were computed in this process and which were read back.
ItemResult as_journalled(const ItemResult& r);

std::int32_t resolve_caa_layer(std::int32_t layer, const Model& model);

// Refuses, before a run writes anything or extracts for an hour, what would fail or silently do
// nothing later: --n-predict < 1, cache-steering layers the model lacks (check_layers), CAA blocks
// outside 1..n_layer-1, and for a run that extracts its vector (no --vector; CAA), a missing
// traces file, n_pairs 0, shots >= n_pairs or a traces file of fewer rows.
void check_run_options(const EvalOptions& o, const Model& model);

// The activation-steering blocks of check_run_options: 1 <= first <= last < n_layer.
void check_caa_blocks(const CaaParams& caa, const Model& model);

}  // namespace kvsteer::eval
