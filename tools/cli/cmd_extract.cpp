// kvsteer extract: contrastive pairs from a traces file or a pairs file -> steering vector file.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "common.h"
#include "eval/pairs_file.h"
#include "eval/trace_extraction.h"
#include "kvsteer/file_io.h"
#include "progress.h"

namespace kvsteer::cli {
namespace {

struct ExtractOptions {
  ModelOptions model;
  eval::TraceExtraction x;
  std::string pairs_file;  // given: the pairs come from it, not from x.traces
  bool raw = false;
  bool n_pairs_given = false;
  std::vector<std::int32_t> positions;  // default {-1}
  std::vector<std::string> outs;
  std::uint32_t parallel = 4;
  std::string checkpoint;  // empty: the first output + ".partial"
  bool no_checkpoint = false;
  double checkpoint_every = 30;  // seconds between checkpoint saves
};

// A test hook: KVSTEER_TEST_EXIT_AFTER_CHECKPOINTS=n ends the process abruptly (as a kill would:
// no destructors, no outputs) right after the n-th checkpoint is saved, so that tests can resume
// from a known point.
std::size_t exit_after_checkpoints() {
  const char* v = std::getenv("KVSTEER_TEST_EXIT_AFTER_CHECKPOINTS");
  return v == nullptr ? 0 : std::strtoul(v, nullptr, 10);
}

void run(ExtractOptions o) {
  if (o.pairs_file.empty() && o.x.traces.empty()) {
    throw Error(
        ErrorCode::InvalidArgument,
        "no pairs: pass --traces FILE (the paper's traces) or --pairs-file FILE (your own)");
  }
  if (!o.pairs_file.empty() && o.n_pairs_given && o.x.n_pairs == 0) {
    throw Error(ErrorCode::InvalidArgument,
                "--n-pairs must be at least 1 (without it: every pair)");
  }
  if (o.positions.empty()) {
    o.positions = {-1};
  }
  if (o.positions.size() != o.outs.size()) {
    throw Error(ErrorCode::InvalidArgument,
                std::to_string(o.positions.size()) + " --position values need as many -o files, " +
                    "one each (got " + std::to_string(o.outs.size()) + ")");
  }
  for (std::size_t i = 0; i < o.outs.size(); ++i) {
    require_output_file(o.outs[i], "output vector file");
    if (std::find(o.outs.begin(), o.outs.begin() + static_cast<std::ptrdiff_t>(i), o.outs[i]) !=
        o.outs.begin() + static_cast<std::ptrdiff_t>(i)) {
      throw Error(ErrorCode::InvalidArgument,
                  "-o " + o.outs[i] + " is given twice: each --position needs its own file");
    }
  }
  if (!o.no_checkpoint && !o.checkpoint.empty()) {
    require_output_file(o.checkpoint, "--checkpoint");
  }
  auto model = o.model.load();
  eval::PairsFileExtraction pf{
      o.pairs_file,  o.n_pairs_given ? o.x.n_pairs : 0, o.raw, o.x.prompt_family, o.x.chat_template,
      o.x.cot_prefix};
  std::vector<std::size_t> lines;  // of the pairs file, for the warning below
  eval::ContrastiveSet set;
  if (o.pairs_file.empty()) {
    set = eval::contrastive_set(*model, o.x);
  } else {
    eval::PairsFromFile made = eval::contrastive_set_from_pairs_file(*model, pf);
    set = std::move(made.set);
    lines = std::move(made.lines);
  }
  for (const std::int32_t p : o.positions) {
    const auto differ = eval::pairs_differing_at(set.pairs, p);
    if (!differ.empty()) {
      const std::size_t first = differ.front();
      std::fprintf(stderr,
                   "kvsteer: warning: %zu of %zu pairs hold different tokens at position %d in "
                   "their positive and negative prompts (first: pair %zu%s); the vector then "
                   "carries the two tokens' own rows too: end both prompts alike\n",
                   differ.size(), set.pairs.size(), p, first + 1,
                   lines.empty() ? "" : (", line " + std::to_string(lines[first])).c_str());
    }
  }
  const SessionParams sparams =
      eval::extraction_session(*model, o.model.session, o.parallel, set.pairs);
  std::size_t max_tokens = 0;
  for (const auto& p : set.pairs) {
    max_tokens = std::max({max_tokens, p.positive.size(), p.negative.size()});
  }
  Session session(model, sparams);
  const std::vector<Pos> positions(o.positions.begin(), o.positions.end());
  const std::string checkpoint =
      o.no_checkpoint ? "" : (o.checkpoint.empty() ? o.outs.front() + ".partial" : o.checkpoint);
  std::optional<eval::ExtractionCheckpointFile> file;
  if (!checkpoint.empty()) {
    file.emplace(checkpoint, o.checkpoint_every, extraction_identity(session, set.pairs, positions),
                 [](const std::string& why) {
                   std::fprintf(stderr, "kvsteer: warning: %s\n", why.c_str());
                 });
  }
  Progress bar("extract", set.pairs.size());
  ExtractionParams params;
  params.progress = [&bar](std::size_t done, std::size_t) { bar.update(done); };
  if (file) {
    if (const ExtractionCheckpoint* cp = file->resume()) {
      std::fprintf(stderr, "kvsteer: resuming from %s: %zu of %zu pairs done\n", checkpoint.c_str(),
                   cp->pairs_done, cp->n_pairs);
    }
    const std::size_t exit_after = exit_after_checkpoints();
    file->attach(params, [exit_after](std::size_t saves) {
      if (saves == exit_after) {
        std::_Exit(137);
      }
    });
  }
  std::vector<SteeringVector> vectors =
      extract_steering_vectors(session, set.pairs, positions, params);
  bar.finish();
  for (std::size_t i = 0; i < vectors.size(); ++i) {
    if (o.pairs_file.empty()) {
      eval::record_provenance(vectors[i], o.x, set, positions[i], o.parallel, sparams.n_batch);
    } else {
      eval::record_pairs_file_provenance(vectors[i], pf, set, positions[i], o.parallel,
                                         sparams.n_batch);
    }
    save_steering_vector(o.outs[i], vectors[i]);
  }
  const nlohmann::json summary = {{"out", o.outs},
                                  {"n_pairs", set.pairs.size()},
                                  {"shots", o.pairs_file.empty() ? o.x.shots : 0},
                                  {"max_prompt_tokens", max_tokens},
                                  {"traces_sha256", set.traces_sha256},
                                  {"model", fingerprint_json(model->fingerprint())}};
  // Only once every output is saved: a kill before this leaves the checkpoint to resume from.
  if (file) {
    file->remove();
  }
  std::printf("%s\n", summary.dump().c_str());
}

}  // namespace

void add_extract(CLI::App& app) {
  auto opts = std::make_shared<ExtractOptions>();
  auto* sub = app.add_subcommand("extract", "extract a steering vector from contrastive pairs");
  opts->model.add_to(*sub);
  auto* traces =
      sub->add_option("--traces", opts->x.traces, "traces JSONL (query|question, steps, solution)");
  auto* pairs_file = sub->add_option(
      "--pairs-file", opts->pairs_file,
      "your own pairs instead of traces: JSONL of {\"positive\": P, \"negative\": N}, each a user "
      "turn (string) or a list of {\"role\", \"content\"} messages (README)");
  pairs_file->excludes(traces);
  auto* task =
      sub->add_option("--task", opts->x.task, "question format: generic, arc, csqa, piqa, gsm8k");
  auto* n_pairs = sub->add_option("-N,--n-pairs", opts->x.n_pairs,
                                  "contrastive pairs: the first N rows (traces: default 100; "
                                  "pairs file: default all)");
  auto* shots = sub->add_option("-k,--shots", opts->x.shots, "in-context examples per prompt");
  auto* map = sub->add_option("--fewshot-map", opts->x.fewshot_map,
                              "neighbour lists (fewshot_maps_from_results.json format); default: "
                              "lexical similarity");
  for (CLI::Option* traces_only : {task, shots, map}) {
    pairs_file->excludes(traces_only);
  }
  auto* raw = sub->add_flag("--raw", opts->raw,
                            "pairs file: tokenize string sides as they are, without the chat "
                            "template");
  raw->needs(pairs_file);
  raw->excludes(sub->add_option(
      "--prompt-family", opts->x.prompt_family,
      "render with the reference template of a family: llama32, llama31, qwen2, smollm2, "
      "phi4mini, chatml (default: detected from the model's template)"));
  raw->excludes(
      sub->add_option("--chat-template", opts->x.chat_template, "chat template override"));
  sub->add_option("--cot-prefix", opts->x.cot_prefix,
                  "text appended after the generation prompt (cache steering + CoT variant)");
  sub->add_option("--position", opts->positions,
                  "cell to read: negative counts from the prompt's end (-1 = last token, the "
                  "default), 0 or more is a position from its start; repeat it to write one "
                  "vector per position from the same prompts, each to its own -o file");
  sub->add_option("--parallel,--np", opts->parallel, "prompts decoded together")
      ->check(CLI::Range(1u, 64u));
  sub->add_option("-o,--out", opts->outs, "output vector file (GGUF); one per --position")
      ->required();
  sub->add_option("--checkpoint", opts->checkpoint,
                  "where the extraction saves its progress, to go on from there when it is run "
                  "again with the same settings after an interruption (default: the first -o file "
                  "+ \".partial\"; removed when the outputs are written)");
  sub->add_flag("--no-checkpoint", opts->no_checkpoint, "save no progress");
  sub->add_option("--checkpoint-every", opts->checkpoint_every,
                  "seconds between progress saves (0: after every batch that ends on a pair)")
      ->check(CLI::NonNegativeNumber);
  sub->callback([opts, n_pairs] {
    opts->n_pairs_given = n_pairs->count() > 0;
    run(*opts);
  });
}

}  // namespace kvsteer::cli
