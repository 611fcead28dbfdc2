#include "eval/trace_extraction.h"

#include <algorithm>
#include <filesystem>
#include <utility>

#include "eval/prompts.h"
#include "kvsteer/checkpoint_file.h"
#include "kvsteer/error.h"

namespace kvsteer::eval {

namespace {

void check_counts(const std::string& path, std::size_t n_rows, std::size_t n_pairs,
                  std::size_t shots) {
  if (n_rows < n_pairs) {
    throw Error(ErrorCode::InvalidArgument,
                "traces file '" + path + "' has " + std::to_string(n_rows) +
                    " rows, fewer than n_pairs " + std::to_string(n_pairs));
  }
  if (shots >= n_pairs) {
    throw Error(ErrorCode::InvalidArgument,
                "shots " + std::to_string(shots) + " needs more than that many pairs (n_pairs " +
                    std::to_string(n_pairs) + "): the examples are other rows");
  }
}

}  // namespace

void check_pairs_from_traces(const std::string& path, TaskFormat format, std::size_t n_pairs,
                             std::size_t shots) {
  if (n_pairs == 0) {
    throw Error(ErrorCode::InvalidArgument, "n_pairs must be >= 1");
  }
  check_counts(path, load_traces(path, format).rows.size(), n_pairs, shots);
}

PairsFromTraces contrastive_pairs_from_traces(const Model& model, const std::string& path,
                                              TaskFormat format, std::size_t n_pairs,
                                              std::size_t shots, const std::string& fewshot_map,
                                              const ContrastiveOptions& options) {
  if (n_pairs == 0) {
    throw Error(ErrorCode::InvalidArgument, "n_pairs must be >= 1");
  }
  Traces traces = load_traces(path, format);
  check_counts(path, traces.rows.size(), n_pairs, shots);
  traces.rows.resize(n_pairs);  // the first N rows in file order (method.md §1.2)
  const NeighbourMap neighbours = fewshot_map.empty()
                                      ? lexical_neighbours(traces.rows, shots)
                                      : neighbours_from_map_file(fewshot_map, traces.rows, shots);
  return {build_contrastive_pairs(model, traces.rows, neighbours, options), traces.sha256};
}

ContrastiveSet contrastive_set(const Model& model, const TraceExtraction& x) {
  ContrastiveOptions copts;
  copts.cot_prefix = x.cot_prefix;
  copts.chat_template = x.chat_template;
  copts.family = resolve_prompt_family(x.prompt_family, x.chat_template, model);
  PairsFromTraces made = contrastive_pairs_from_traces(model, x.traces, parse_task_format(x.task),
                                                       x.n_pairs, x.shots, x.fewshot_map, copts);
  ContrastiveSet set;
  set.pairs = std::move(made.pairs);
  set.traces_sha256 = std::move(made.traces_sha256);
  set.rendered_with = rendered_with(model, x.prompt_family, x.chat_template);
  return set;
}

std::string rendered_with(const Model& model, const std::string& prompt_family,
                          const std::string& chat_template) {
  if (const auto family = resolve_prompt_family(prompt_family, chat_template, model)) {
    return std::string("prompt family ") + prompt_family_name(*family);
  }
  return chat_template.empty() ? model.chat_template() : chat_template;
}

SessionParams extraction_session(const Model& model, const SessionSettings& settings,
                                 std::uint32_t parallel, std::span<const ContrastivePair> pairs) {
  SessionParams p = session_params(model, settings, parallel);
  if (settings.n_ctx == 0) {
    std::size_t longest = 0;
    for (const auto& pair : pairs) {
      longest = std::max({longest, pair.positive.size(), pair.negative.size()});
    }
    p.n_ctx = static_cast<std::uint32_t>((longest * parallel + 255) / 256 * 256);
    p.n_batch = std::min<std::uint32_t>(settings.n_batch, p.n_ctx);
  }
  return p;
}

void record_provenance(SteeringVector& vector, const TraceExtraction& x, const ContrastiveSet& set,
                       Pos position, std::uint32_t parallel, std::uint32_t n_batch) {
  vector.info.n_shots = static_cast<std::uint32_t>(x.shots);
  vector.info.traces_sha256 = set.traces_sha256;
  vector.info.chat_template = set.rendered_with;
  vector.info.source = "kvsteer extract --task " + x.task + " --n-pairs " +
                       std::to_string(x.n_pairs) + " --shots " + std::to_string(x.shots) +
                       (x.fewshot_map.empty() ? " (lexical neighbours)" : " --fewshot-map") +
                       (x.cot_prefix.empty() ? "" : " --cot-prefix") +
                       (position == -1 ? "" : " --position " + std::to_string(position)) +
                       " --parallel " + std::to_string(parallel) + " --batch-size " +
                       std::to_string(n_batch);
}

namespace {

ExtractionCheckpoint load_checkpoint(const std::string& path, const ExtractionCheckpoint*) {
  return load_extraction_checkpoint(path);
}
ResidualCheckpoint load_checkpoint(const std::string& path, const ResidualCheckpoint*) {
  return load_residual_checkpoint(path);
}
void save_checkpoint(const std::string& path, const ExtractionCheckpoint& cp) {
  save_extraction_checkpoint(path, cp);
}
void save_checkpoint(const std::string& path, const ResidualCheckpoint& cp) {
  save_residual_checkpoint(path, cp);
}

}  // namespace

template <typename Checkpoint>
CheckpointFile<Checkpoint>::CheckpointFile(std::string path, double every_s, std::uint64_t identity,
                                           const std::function<void(const std::string&)>& warn)
    : path_(std::move(path)), every_s_(every_s) {
  if (!std::filesystem::exists(path_)) {
    return;
  }
  try {
    Checkpoint cp = load_checkpoint(path_, static_cast<const Checkpoint*>(nullptr));
    if (cp.identity == identity) {
      resume_ = std::move(cp);
      return;
    }
    warn(path_ +
         " is the checkpoint of another extraction (model, pairs, positions or batch "
         "shape differ); starting over");
  } catch (const Error& e) {
    warn(std::string(e.what()) + "; starting over");
  }
}

template <typename Checkpoint>
void CheckpointFile<Checkpoint>::attach(Params& params,
                                        std::function<void(std::size_t)> after_save) {
  params.resume = resume();
  params.on_checkpoint = [this, after = std::move(after_save)](const Checkpoint& cp) {
    using Seconds = std::chrono::duration<double>;
    // The last checkpoint is the finished extraction, which the outputs hold.
    if (cp.pairs_done == cp.n_pairs ||
        Seconds(std::chrono::steady_clock::now() - last_save_).count() < every_s_) {
      return;
    }
    save_checkpoint(path_, cp);
    last_save_ = std::chrono::steady_clock::now();
    ++saves_;
    if (after) {
      after(saves_);
    }
  };
}

template <typename Checkpoint>
void CheckpointFile<Checkpoint>::remove() const {
  std::error_code ignored;
  std::filesystem::remove(path_, ignored);
}

template class CheckpointFile<ExtractionCheckpoint>;
template class CheckpointFile<ResidualCheckpoint>;

}  // namespace kvsteer::eval
