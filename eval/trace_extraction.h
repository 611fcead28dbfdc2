// A cache-steering vector from a traces file, as `kvsteer extract` and kvsteer.extract() make it:
// the same pairs, the same session and the same provenance through both, so that the same
// settings give the same vector bytes.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "eval/contrastive.h"
#include "eval/traces.h"
#include "kvsteer/model.h"
#include "kvsteer/session.h"
#include "kvsteer/steering.h"

namespace kvsteer::eval {

struct TraceExtraction {
  std::string traces;  // JSONL path
  std::string task = "generic";
  std::size_t n_pairs = 100;  // the first N rows of the file (method.md §1.2)
  std::size_t shots = 5;
  std::string fewshot_map;    // neighbour map file; empty: lexical neighbours
  std::string prompt_family;  // empty: detected from the model's template (or none when
                              // chat_template is given)
  std::string chat_template;
  std::string cot_prefix;
};

struct PairsFromTraces {
  std::vector<ContrastivePair> pairs;
  std::string traces_sha256;
};

// The contrastive pairs of the first n_pairs rows of a traces file, each row's `shots` neighbours
// (from the map file, else lexical) as its in-context examples. Throws Error(InvalidArgument)
// naming the value for n_pairs 0, fewer rows than n_pairs or shots that leave no row to pair with;
// and what load_traces and the neighbour map throw.
PairsFromTraces contrastive_pairs_from_traces(const Model& model, const std::string& path,
                                              TaskFormat format, std::size_t n_pairs,
                                              std::size_t shots, const std::string& fewshot_map,
                                              const ContrastiveOptions& options);

// What contrastive_pairs_from_traces refuses about the counts (n_pairs 0, fewer rows than n_pairs,
// shots that leave no row to pair with) and the traces file itself, without rendering a prompt:
// a run checks it before it writes anything or decodes for an hour.
void check_pairs_from_traces(const std::string& path, TaskFormat format, std::size_t n_pairs,
                             std::size_t shots);

struct ContrastiveSet {
  std::vector<ContrastivePair> pairs;
  std::string traces_sha256;
  std::string rendered_with;  // "prompt family <name>", or the chat template used
};

// What a contrastive set's prompts were rendered with (its vectors record it): "prompt family
// <name>" when the prompt family resolves to one, else the chat template used.
std::string rendered_with(const Model& model, const std::string& prompt_family,
                          const std::string& chat_template);

// contrastive_pairs_from_traces with x's settings, the prompt family resolved as the CLI's
// --prompt-family and --chat-template say.
ContrastiveSet contrastive_set(const Model& model, const TraceExtraction& x);

// The session an extraction decodes in, `parallel` prompts at a time: with settings.n_ctx 0, room
// for `parallel` of the longest prompts (the cache is shared by the sequences).
SessionParams extraction_session(const Model& model, const SessionSettings& settings,
                                 std::uint32_t parallel, std::span<const ContrastivePair> pairs);

// Records how a vector read at `position` was made: shots, traces hash, the prompts' template and
// the command line that makes it again (`kvsteer extract ...`; the batch shape is part of it, as
// prompts decoded together round differently, up to ~3 % of a row on SmolLM2-135M).
void record_provenance(SteeringVector& vector, const TraceExtraction& x, const ContrastiveSet& set,
                       Pos position, std::uint32_t parallel, std::uint32_t n_batch);

// An extraction's checkpoint file, as `kvsteer extract --checkpoint`,
// kvsteer.extract(checkpoint=...) and eval's --caa-cache keep it: resumed from when it belongs to
// this extraction, saved at most every `every_s` seconds, removed by the caller once its outputs
// are written. Checkpoint is ExtractionCheckpoint (cached K and V) or ResidualCheckpoint (block
// outputs).
template <typename Checkpoint>
class CheckpointFile {
 public:
  using Params = std::conditional_t<std::is_same_v<Checkpoint, ExtractionCheckpoint>,
                                    ExtractionParams, ResidualExtractionParams>;
  // Reads path when it exists. A damaged file, or another extraction's, is reported through
  // `warn` (one sentence) and ignored: the extraction starts over and replaces it, as a stale
  // file must not stop the extraction the user asked for.
  CheckpointFile(std::string path, double every_s, std::uint64_t identity,
                 const std::function<void(const std::string&)>& warn);
  // attach() hands out `this`.
  CheckpointFile(const CheckpointFile&) = delete;
  CheckpointFile& operator=(const CheckpointFile&) = delete;

  // The checkpoint to go on from, or nullptr.
  const Checkpoint* resume() const { return resume_ ? &*resume_ : nullptr; }
  // Sets params.resume and params.on_checkpoint. after_save (may be empty) is called with the
  // number of saves so far after each save.
  void attach(Params& params, std::function<void(std::size_t)> after_save = {});
  // Removes the file (none there is fine).
  void remove() const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  double every_s_;
  std::optional<Checkpoint> resume_;
  std::chrono::steady_clock::time_point last_save_ = std::chrono::steady_clock::now();
  std::size_t saves_ = 0;
};

using ExtractionCheckpointFile = CheckpointFile<ExtractionCheckpoint>;
using ResidualCheckpointFile = CheckpointFile<ResidualCheckpoint>;

}  // namespace kvsteer::eval
