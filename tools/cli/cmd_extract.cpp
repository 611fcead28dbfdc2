// kvsteer extract: contrastive pairs from a traces file -> steering vector file.
#include <cstdio>

#include "common.h"
#include "eval/contrastive.h"
#include "eval/traces.h"
#include "progress.h"

namespace kvsteer::cli {
namespace {

struct ExtractOptions {
  ModelOptions model;
  std::string traces;
  std::string task = "generic";
  std::size_t n_pairs = 100;
  std::size_t shots = 5;
  std::string fewshot_map;
  std::string prompt_family;
  std::string chat_template;
  std::string cot_prefix;
  std::vector<std::int32_t> positions;  // default {-1}
  std::vector<std::string> outs;
  std::uint32_t parallel = 4;
};

void run(ExtractOptions o) {
  if (o.positions.empty()) o.positions = {-1};
  if (o.positions.size() != o.outs.size()) {
    throw Error(ErrorCode::InvalidArgument,
                std::to_string(o.positions.size()) + " --position values need as many -o files, " +
                    "one each (got " + std::to_string(o.outs.size()) + ")");
  }
  const auto format = eval::parse_task_format(o.task);
  auto traces = eval::load_traces(o.traces, format);
  if (o.n_pairs == 0) throw Error(ErrorCode::InvalidArgument, "--n-pairs must be >= 1");
  if (traces.rows.size() < o.n_pairs) {
    throw Error(ErrorCode::InvalidArgument,
                "traces file '" + o.traces + "' has " + std::to_string(traces.rows.size()) +
                    " rows, fewer than --n-pairs " + std::to_string(o.n_pairs));
  }
  traces.rows.resize(o.n_pairs);  // the first N rows in file order (method.md §1.2)
  const auto neighbours = o.fewshot_map.empty()
                              ? eval::lexical_neighbours(traces.rows, o.shots)
                              : eval::neighbours_from_map_file(o.fewshot_map, traces.rows, o.shots);
  auto model = o.model.load();
  eval::ContrastiveOptions copts;
  copts.cot_prefix = o.cot_prefix;
  copts.chat_template = o.chat_template;
  copts.family = eval::resolve_prompt_family(o.prompt_family, o.chat_template, *model);
  const auto pairs = eval::build_contrastive_pairs(*model, traces.rows, neighbours, copts);
  std::size_t max_tokens = 0;
  for (const auto& p : pairs)
    max_tokens = std::max({max_tokens, p.positive.size(), p.negative.size()});
  auto sparams = o.model.session_params(*model, o.parallel);
  if (o.model.session.n_ctx == 0) {
    // Room for `parallel` of the longest prompts (the cache is shared by the sequences).
    sparams.n_ctx = static_cast<std::uint32_t>((max_tokens * o.parallel + 255) / 256 * 256);
    sparams.n_batch = std::min<std::uint32_t>(o.model.session.n_batch, sparams.n_ctx);
  }
  Session session(model, sparams);
  Progress bar("extract", pairs.size());
  ExtractionParams params;
  params.progress = [&bar](std::size_t done, std::size_t) { bar.update(done); };
  const std::vector<Pos> positions(o.positions.begin(), o.positions.end());
  std::vector<SteeringVector> vectors = extract_steering_vectors(session, pairs, positions, params);
  bar.finish();
  for (std::size_t i = 0; i < vectors.size(); ++i) {
    SteeringVector& vec = vectors[i];
    vec.info.n_shots = static_cast<std::uint32_t>(o.shots);
    vec.info.traces_sha256 = traces.sha256;
    vec.info.chat_template =
        copts.family ? std::string("prompt family ") + eval::prompt_family_name(*copts.family)
        : o.chat_template.empty() ? model->chat_template()
                                  : o.chat_template;
    vec.info.source = "kvsteer extract --task " + o.task + " --n-pairs " +
                      std::to_string(o.n_pairs) + " --shots " + std::to_string(o.shots) +
                      (o.fewshot_map.empty() ? " (lexical neighbours)" : " --fewshot-map") +
                      (o.cot_prefix.empty() ? "" : " --cot-prefix") +
                      (positions[i] == -1 ? "" : " --position " + std::to_string(positions[i])) +
                      // Prompts decoded together round differently (up to ~3 % of a row on
                      // SmolLM2-135M): the batch shape is part of how the vector was made.
                      " --parallel " + std::to_string(o.parallel) + " --batch-size " +
                      std::to_string(sparams.n_batch);
    save_steering_vector(o.outs[i], vec);
  }
  const nlohmann::json summary = {{"out", o.outs},
                                  {"n_pairs", pairs.size()},
                                  {"shots", o.shots},
                                  {"max_prompt_tokens", max_tokens},
                                  {"traces_sha256", traces.sha256},
                                  {"model", fingerprint_json(model->fingerprint())}};
  std::printf("%s\n", summary.dump().c_str());
}

}  // namespace

void add_extract(CLI::App& app) {
  auto opts = std::make_shared<ExtractOptions>();
  auto* sub = app.add_subcommand("extract", "extract a steering vector from contrastive pairs");
  opts->model.add_to(*sub);
  sub->add_option("--traces", opts->traces, "traces JSONL (query|question, steps, solution)")
      ->required();
  sub->add_option("--task", opts->task, "question format: generic, arc, csqa, piqa, gsm8k");
  sub->add_option("-N,--n-pairs", opts->n_pairs, "contrastive pairs: the first N rows");
  sub->add_option("-k,--shots", opts->shots, "in-context examples per prompt");
  sub->add_option("--fewshot-map", opts->fewshot_map,
                  "neighbour lists (fewshot_maps_from_results.json format); default: lexical "
                  "similarity");
  sub->add_option("--prompt-family", opts->prompt_family,
                  "render with the reference template of a family: llama32, llama31, qwen2, "
                  "smollm2, phi4mini, chatml (default: detected from the model's template)");
  sub->add_option("--chat-template", opts->chat_template, "chat template override");
  sub->add_option("--cot-prefix", opts->cot_prefix,
                  "text appended after the generation prompt (cache steering + CoT variant)");
  sub->add_option("--position", opts->positions,
                  "cell to read, from the end (-1 = last token, the default); repeat it to write "
                  "one vector per position from the same prompts, each to its own -o file");
  sub->add_option("--parallel,--np", opts->parallel, "prompts decoded together")
      ->check(CLI::Range(1u, 64u));
  sub->add_option("-o,--out", opts->outs, "output vector file (GGUF); one per --position")
      ->required();
  sub->callback([opts] { run(*opts); });
}

}  // namespace kvsteer::cli
