// `kvsteer eval` and `kvsteer sweep`: the paper's study (method.md §1.5, §2, §3) on one task with
// one method, or a grid of steering settings, for any GGUF model.
//
// Outputs of an eval run, in its output folder:
//   config.json   what the run is (task, data, method, steering, prompts, model, vector); a folder
//                 whose config.json differs refuses to resume
//   items.jsonl   one line per finished item, appended and flushed as items finish; an
//                 interrupted run resumes from it and never recomputes a finished item
//   summary.json  written atomically at the end (accuracy with a 95 % Wilson interval, lengths,
//                 reasoning rate, config, fingerprints, commit)
//
// Determinism: greedy decoding of many items in parallel sequences of one context. llama.cpp's
// CPU results depend on the batch composition (llama-internals.md §6: F32 weights differ by
// ~1e-5 in the logits, F16 more), so a near-tie can flip a greedy token when --parallel or the
// set of items decoded together changes. Runs with the same options are bit-identical, and a
// resumed run fills the same batches as an uninterrupted one (batches are cut from the item
// list, not from what is left).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "eval/datasets.h"
#include "eval/prompts.h"
#include "kvsteer/generation.h"
#include "kvsteer/model.h"
#include "kvsteer/session.h"
#include "kvsteer/steering.h"

namespace kvsteer::eval {

enum class Method {
  Baseline,  // zero-shot chat prompt
  Cot,       // zero-shot + "Let's think step by step." after the generation prompt
  FewShot,   // k examples answered with steps, then the question
  Caa,       // activation steering: residual vector at one layer (or a range), generated tokens
  Cache,     // KV cache steering
  CacheCot,  // KV cache steering + the CoT prompt (vector extracted with the CoT prefix)
};
Method parse_method(const std::string& name);  // baseline cot fewshot caa cache cache+cot
const char* method_name(Method method) noexcept;

// How chat messages become tokens.
struct PromptStyle {
  std::optional<PromptFamily> family;  // reference render (add_special=false), else the model's
  std::string chat_template;           // override of the model's template ("" = the model's)
};

// Activation steering (CAA) settings.
struct CaaParams {
  std::int32_t layer_first = -1;  // block whose output is steered; -1: the middle layer
  std::int32_t layer_last = -1;   // -1: same as layer_first
  float coef = 1.0f;
};

// How eval's sessions hold the cache (kvsteer/session.h; docs/DESIGN.md, "Cache layout"). The
// defaults are the library's; config.json records the engine when it differs from them. With
// per-sequence streams the sessions edit through the full-sequence route, and a sequence's
// answer no longer depends on where its batch-mates' cells lie.
struct EvalEngine {
  KvType type_k = KvType::F16;
  KvType type_v = KvType::F16;
  FlashAttn flash_attn = FlashAttn::Auto;
  KvStreams kv_streams = KvStreams::Unified;
  bool operator==(const EvalEngine&) const = default;
};

// clang-tidy 14 flags the implicit default constructor of a struct with a nlohmann::json member
// when std::make_shared value-initializes it (reproduced with a struct holding only the json);
// that constructor is not noexcept, so nothing can escape where no exception is allowed.
struct EvalOptions {  // NOLINT(bugprone-exception-escape)
  Task task = Task::Gsm8k;
  std::string data;       // the task's test file
  std::size_t limit = 0;  // first N items (0: all)
  Method method = Method::Baseline;
  PromptStyle prompt;

  // Few-shot examples and steering-vector extraction.
  std::string traces;         // teacher traces (JSONL: query/question, steps, solution)
  std::string fewshot_map;    // neighbour map file (fewshot_maps_from_results.json); "" = lexical
  std::size_t n_pairs = 100;  // contrastive pairs: the first N trace rows
  std::size_t shots = 5;      // in-context examples per contrastive prompt / few-shot prompt
  std::string vector_path;    // cache steering: a vector file instead of extracting one
  // Cell the vector is read from when it is extracted here, counted from the end of the prompt
  // (-1: its last token, as the paper; -2 aligns extraction with the edit of --offset none).
  std::int32_t extract_position = -1;
  // How the steering settings of this run were chosen (the selection split, the candidates and
  // their scores, the rule), recorded in config.json and summary.json; null when not given.
  nlohmann::ordered_json selection;

  SteeringParams steering;  // c_k, c_v, layers, offset token (cache methods)
  CaaParams caa;
  GenerationParams generation;  // greedy, 768 tokens, reference stop strings by default

  std::uint32_t n_parallel = 16;  // sequences decoded together
  std::int32_t n_threads = 0;
  EvalEngine engine;
  std::string out_dir;
  std::string model_path;  // recorded in config/summary; its size and head/tail hash guard resumes
  // Activation steering: a folder where the extracted directions are kept, one file per model,
  // engine and pair set, so that a sweep and the run after it extract them once (a residual
  // extraction decodes every prompt alone: 20+ minutes for 200 long pairs on 2 cores). Loaded
  // directions equal extracted ones bit for bit (the extraction is deterministic). Empty: none.
  std::string caa_cache_dir;
  // While the directions are extracted, their running sums are saved beside the file they go to
  // ("<file>.partial") at most this often, and the next run of the same pairs goes on from there.
  double caa_checkpoint_every_s = 60;
  // One sentence for the user when an extraction resumes from a checkpoint or ignores one; may
  // be empty.
  std::function<void(const std::string&)> notice;
  // (done, total) after every batch; may be empty.
  std::function<void(std::size_t, std::size_t)> progress;
  // (pairs done, pairs total) while a steering vector is extracted; may be empty.
  std::function<void(std::size_t, std::size_t)> extraction_progress;
  // Asked during every decode (SessionParams::abort_callback); true stops the batch in flight
  // with Error(Cancelled). Finished batches stay journalled, so the same call resumes. May be
  // empty. Called on a compute thread: it must be cheap and must not throw.
  std::function<bool()> abort;
};

// The reference's stop strings (method.md §1.5) plus the model's EOS text.
std::vector<std::string> reference_stop_strings(const Model& model);

// The paper's per-task cache-steering preset for a model name (method.md §2.1, §2.2), matched
// case-insensitively on "smollm2", "qwen2", "llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b",
// "phi-4-mini"; unknown models get c_v from the task default (GSM8K 1, else 6). Sets n_pairs,
// shots, coef_k, coef_v, layers (1-) and the offset token ("\n" for MC tasks, none for GSM8K).
void apply_paper_preset(EvalOptions& options, const Model& model, const std::string& model_name);

// What a frontend (the CLI's eval and sweep, the Python package's runners) takes from its user, as
// given: an unset optional keeps the paper preset's value (or the library default with
// preset = false).
struct EvalRequest {
  std::string task, data, method = "baseline";
  std::size_t limit = 0;
  std::string prompt_family, chat_template;  // names; empty: detected / the model's template
  std::string model_name;                    // matched against the presets; empty: the file name
  bool preset = true;
  std::string traces, fewshot_map, vector;
  std::int32_t extract_position = -1;
  nlohmann::ordered_json selection;  // null: not given
  std::optional<std::size_t> n_pairs, shots;
  std::optional<float> c_k, c_v;
  std::optional<std::string> layers, offset;  // offset: text of one token, or "none"
  // The offset token by id, as a run's config.json records it (steering.offset_token): a run can
  // then be made again from its configuration alone. Excludes `offset`.
  std::optional<std::int32_t> offset_id;
  CaaParams caa;
  std::int32_t n_predict = 768;
  float temperature = 0.0f;  // > 0: sampled with the reference's top-k 50, top-p 0.9
  std::uint32_t seed = 1234;
  std::uint32_t parallel = 16;
  std::int32_t n_threads = 0;
  // The engine by name: f32/f16/bf16/q8_0/q4_0; on/off/auto; unified/per-sequence.
  std::string cache_type_k = "f16", cache_type_v = "f16", flash_attn = "auto",
              kv_streams = "unified";
  std::string caa_cache_dir;  // EvalOptions::caa_cache_dir
};

// EvalOptions for a request on a model: preset first, then the request's explicit values. Throws
// Error(InvalidArgument) naming the value at fault.
EvalOptions make_eval_options(const EvalRequest& request, const Model& model);

// The request that computes a recorded run again (kvsteer eval --like): every setting of its
// config.json as recorded, no preset; `model` receives the recorded model file. Threads, the
// activation-direction cache and the limit are not part of a run's computation and are left to
// the caller. Throws Error(Format) for a configuration that lacks a key or holds one of the
// wrong type, and Error(InvalidArgument) for a run it does not record well enough to make
// again: sampled decoding (the temperature is not recorded), K and V steered in different
// layers.
EvalRequest request_from_config(const nlohmann::ordered_json& config, std::string& model);

// Throws Error(InvalidArgument), naming the keys, when `options` on `model` would compute
// otherwise than the run whose config.json is `recorded`; the number of items aside.
void check_same_computation(const nlohmann::ordered_json& recorded, const EvalOptions& options,
                            const Model& model);

// What may differ from a recorded run when it is made again: none of it changes an answer.
struct LikeRun {
  std::optional<std::size_t> limit;  // unset: the run's own
  std::int32_t n_threads = 0;
  std::string caa_cache_dir;
};

// A run folder's config.json, read once: what it records, the request that computes it again
// (request_from_config) and the model file it names, which the caller loads before
// options_like_run. Error(Io) when it cannot be read, Error(Format) when it is not a run
// configuration, Error(InvalidArgument) for a run that cannot be made again; errors name the
// run folder.
struct RecordedRun {
  std::string dir;
  nlohmann::ordered_json config;
  EvalRequest request;
  std::string model;
};
RecordedRun read_recorded_run(const std::string& run_dir);

// The options that compute `run` again on `model` (kvsteer eval --like, kvsteer.eval_like): its
// request with `like` applied, then check_same_computation; out_dir is left to the caller.
// Errors name the run folder.
EvalOptions options_like_run(const RecordedRun& run, const Model& model, const LikeRun& like);

// Result of one item (one line of items.jsonl).
struct ItemResult {
  std::size_t index = 0;
  std::string id;
  std::string prompt;    // rendered prompt text
  std::string response;  // generated text (offset token included when one was decoded)
  // False for a record read from a journal line that carries no prompt or response: a run's
  // results kept where the texts may not go (a repository: prompts hold the paper's traces),
  // from which a run resumes on another machine. Every number of the record is still there.
  bool has_text = true;
  std::string extracted;
  std::string target;
  bool correct = false;
  std::int32_t n_tokens = 0;  // generated tokens
  int n_steps = 0;            // reasoning steps in the response
  bool reasoning = false;     // the answer comes after at least one reasoning step
  bool forced = false;        // MC: decided by the forced one-token choice
  double ttft_ms = 0.0;       // time to first token of the batch the item was decoded in
  nlohmann::ordered_json to_json() const;
  static ItemResult from_json(const nlohmann::ordered_json& j);
};

// Reasoning steps of a response: for organism tasks the sentences with " = " before "The answer
// is"; otherwise the non-empty sentences (split at ". ", "! ", "? " and newlines) before the
// last "answer is" (or in the whole text when there is none, minus the last sentence).
int count_reasoning_steps(Task task, const std::string& response);

// Wilson score interval (95 %) of correct/n, in percent.
std::pair<double, double> wilson_interval(std::size_t correct, std::size_t n);

// Summary of a set of results (the numbers of summary.json).
nlohmann::ordered_json summarize(const std::vector<ItemResult>& results);

// Runs (or resumes) an evaluation; returns the summary JSON also written to out_dir.
nlohmann::ordered_json run_eval(const std::shared_ptr<const Model>& model,
                                const EvalOptions& options);

// A grid of steering settings evaluated together: each question is prefilled once, copied to
// one sequence per setting, each copy edited with its setting, and all copies decoded together
// (cache steering). Activation-steering settings run one after another (llama.cpp applies a
// control vector to the whole context).
struct SweepOptions {
  EvalOptions base;  // task, data, prompts, extraction, generation; method Cache or Caa
  std::vector<float> coef_k = {0.0f};
  std::vector<float> coef_v = {1.0f};
  std::vector<std::string> layers = {"1-"};
  std::vector<std::int32_t> caa_layers;  // CAA: single layers
  std::vector<float> caa_coefs;          // CAA: coefficients
  std::string out;                       // sweep JSON
};
nlohmann::ordered_json run_sweep(const std::shared_ptr<const Model>& model,
                                 const SweepOptions& options);

// Why cache steering does or does not act (kvsteer diagnose): on the task's prompts, the edit's
// size against the cache per layer, the attention the following tokens pay to the steered cell per
// layer and head (without and with the edit), the share of each head's output the V edit makes,
// and the next-token KL and greedy divergence; optionally for scaled coefficients and for each
// steered layer alone. Method must be cache or cache+cot.
struct DiagnoseOptions {      // NOLINT(bugprone-exception-escape): see EvalOptions
  EvalOptions base;           // task, data, limit, prompts, extraction or vector, steering
  std::int32_t n_follow = 8;  // decoded tokens measured after the edit
  std::vector<float> scales;  // multipliers of c_k and c_v for the scale sweep (empty: none)
  bool per_layer = false;     // also steer each selected layer alone
  std::string out;            // JSON ("" = not written)
};
nlohmann::ordered_json run_diagnosis(const std::shared_ptr<const Model>& model,
                                     const DiagnoseOptions& options);

}  // namespace kvsteer::eval
