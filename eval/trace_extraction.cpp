#include "eval/trace_extraction.h"

#include <algorithm>

#include "eval/contrastive.h"
#include "eval/prompts.h"
#include "eval/traces.h"
#include "kvsteer/error.h"

namespace kvsteer::eval {

ContrastiveSet contrastive_set(const Model& model, const TraceExtraction& x) {
  if (x.n_pairs == 0) throw Error(ErrorCode::InvalidArgument, "n_pairs must be >= 1");
  Traces traces = load_traces(x.traces, parse_task_format(x.task));
  if (traces.rows.size() < x.n_pairs) {
    throw Error(ErrorCode::InvalidArgument,
                "traces file '" + x.traces + "' has " + std::to_string(traces.rows.size()) +
                    " rows, fewer than n_pairs " + std::to_string(x.n_pairs));
  }
  traces.rows.resize(x.n_pairs);
  const NeighbourMap neighbours =
      x.fewshot_map.empty() ? lexical_neighbours(traces.rows, x.shots)
                            : neighbours_from_map_file(x.fewshot_map, traces.rows, x.shots);
  ContrastiveOptions copts;
  copts.cot_prefix = x.cot_prefix;
  copts.chat_template = x.chat_template;
  copts.family = resolve_prompt_family(x.prompt_family, x.chat_template, model);
  ContrastiveSet set;
  set.pairs = build_contrastive_pairs(model, traces.rows, neighbours, copts);
  set.traces_sha256 = traces.sha256;
  set.rendered_with = copts.family
                          ? std::string("prompt family ") + prompt_family_name(*copts.family)
                      : x.chat_template.empty() ? model.chat_template()
                                                : x.chat_template;
  return set;
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

}  // namespace kvsteer::eval
