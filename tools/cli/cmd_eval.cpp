// kvsteer eval / sweep / diagnose: the paper's study for one task and method, a steering grid, or
// why a cache edit acts (or not).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <tuple>
#include <utility>

#include "common.h"
#include "eval/runner.h"
#include "number_list.h"
#include "progress.h"

namespace kvsteer::cli {
namespace {

// The flags bind straight into an eval::EvalRequest, the one description of a run that the
// Python runners fill too; the options left unset (n_pairs, shots, c_k, c_v, layers, offset) take
// the paper's preset.
struct EvalCliOptions {
  std::string model, out;
  std::string like;       // eval --like: a run folder whose config.json gives every setting
  std::string selection;  // a JSON file, read into request.selection
  bool no_preset = false;
  eval::EvalRequest request;
};

// `required`: whether the model, task and data flags must be given (eval checks them itself: with
// --like they come from a run's configuration).
void add_eval_flags(CLI::App& cmd, EvalCliOptions& o, bool required = true) {
  eval::EvalRequest& r = o.request;
  cmd.add_option("-m,--model", o.model, "GGUF model")->required(required)->check(CLI::ExistingFile);
  cmd.add_option("--task", r.task, "gsm8k, arc, csqa, piqa, organism-numeric, organism-choice")
      ->required(required);
  cmd.add_option("--data", r.data, "The task's test file (see README)")->required(required);
  cmd.add_option("--limit", r.limit,
                 "First N items only (0: all); a finished or interrupted run resumed with a "
                 "larger limit is extended");
  cmd.add_option("--prompt-family", r.prompt_family,
                 "Render prompts with the reference template: llama32, llama31, qwen2, smollm2, "
                 "phi4mini, chatml (default: the model's template)");
  cmd.add_option("--chat-template", r.chat_template, "Override of the model's chat template");
  cmd.add_option("--model-name", r.model_name,
                 "Name matched against the paper's presets (default: the model file name)");
  cmd.add_flag("--no-preset", o.no_preset, "Do not apply the paper's per-task preset");
  cmd.add_option("--traces", r.traces, "Teacher traces JSONL (few-shot examples, extraction)");
  cmd.add_option("--fewshot-map", r.fewshot_map,
                 "Neighbour map (fewshot_maps_from_results.json); default: lexical neighbours");
  cmd.add_option("--pairs", r.n_pairs, "Contrastive pairs (first N trace rows)");
  cmd.add_option("--shots", r.shots, "In-context examples per prompt");
  cmd.add_option("--vector", r.vector, "Cache steering: a vector file instead of extracting");
  cmd.add_option("--extract-position", r.extract_position,
                 "Cell the vector is extracted from, from the end of the prompt (-1: last token; "
                 "-2 lines it up with the edit of --offset none)")
      ->capture_default_str()
      ->check(CLI::Range(-1000000, -1));
  cmd.add_option("--selection", o.selection,
                 "JSON file saying how the steering settings were chosen (selection split, "
                 "candidates, scores); recorded in config.json and summary.json")
      ->check(CLI::ExistingFile);
  cmd.add_option("--ck", r.c_k, "c_k");
  cmd.add_option("--cv", r.c_v, "c_v");
  cmd.add_option("--layers", r.layers, "Steered layers, e.g. 1- (default) or 2,5");
  cmd.add_option("--offset", r.offset,
                 "Offset text whose first token is decoded after the edit (escapes \\n \\t "
                 "\\r \\\\ read); 'none'")
      ->transform(escaped_text());
  cmd.add_option("--offset-id", r.offset_id,
                 "The offset token by id (config.json's steering.offset_token); excludes --offset");
  cmd.add_option("--caa-layer", r.caa.layer_first, "CAA: steered block (default: the middle one)");
  cmd.add_option("--caa-layer-last", r.caa.layer_last, "CAA: last block of a range");
  cmd.add_option("--caa-c", r.caa.coef, "CAA: coefficient")->capture_default_str();
  cmd.add_option("--caa-cache", r.caa_cache_dir,
                 "CAA: folder where extracted directions are kept and found again (one file per "
                 "model, engine and pair set), so that a sweep and the run after it extract "
                 "once; an extraction stopped midway goes on from its checkpoint there");
  cmd.add_option("-n,--n-predict", r.n_predict, "New tokens at most")
      ->capture_default_str()
      ->check(CLI::Range(1, 1048576));
  cmd.add_option("--temp", r.temperature, "Sampling temperature (0: greedy)")
      ->capture_default_str();
  cmd.add_option("-s,--seed", r.seed, "Sampling seed")->capture_default_str();
  cmd.add_option("--parallel,--np", r.parallel, "Sequences decoded together")
      ->capture_default_str()
      ->check(CLI::Range(1u, 512u));
  cmd.add_option("-t,--threads", r.n_threads, "CPU threads (0: all)");
  add_engine_flags(cmd, r.cache_type_k, r.cache_type_v, r.flash_attn, r.kv_streams);
}

// A progress callback that draws its own bar, created on first use (when the total is known) and
// finished when done reaches the total.
std::function<void(std::size_t, std::size_t)> progress_bar(const std::string& label) {
  auto bar = std::make_shared<std::optional<Progress>>();
  return [bar, label](std::size_t done, std::size_t total) {
    if (!*bar) {
      bar->emplace(label, total);
    }
    (*bar)->update(done);
    if (done >= total) {
      (*bar)->finish();
    }
  };
}

eval::EvalOptions build_options(const EvalCliOptions& c,
                                const std::shared_ptr<const Model>& model) {
  eval::EvalRequest r = c.request;
  r.preset = !c.no_preset;
  if (!c.selection.empty()) {
    try {
      r.selection = nlohmann::ordered_json::parse(read_text_file(c.selection, "--selection file"));
    } catch (const nlohmann::json::exception& e) {
      throw Error(ErrorCode::Format,
                  "--selection " + c.selection + " is not valid JSON: " + std::string(e.what()));
    }
  }
  eval::EvalOptions o = eval::make_eval_options(r, *model);
  o.extraction_progress = progress_bar("extract " + r.task + " (pairs)");
  o.notice = [](const std::string& text) { std::fprintf(stderr, "kvsteer: %s\n", text.c_str()); };
  return o;
}

// The flags that may stand beside --like: where the answers go, how many, on how many threads,
// and where activation directions are kept; none of them changes an answer.
constexpr std::array kBesideLike = {"--like",    "--out",       "--limit",
                                    "--threads", "--caa-cache", "--help"};

// eval --like RUN: the run's own configuration made into options, checked to compute what the
// run computed (eval::check_same_computation), with the flags given beside it.
std::pair<std::shared_ptr<const Model>, eval::EvalOptions> options_like(const CLI::App& cmd,
                                                                        const EvalCliOptions& c) {
  std::vector<std::string> refused;
  for (const CLI::Option* opt : cmd.get_options()) {
    const std::string name = opt->get_name();
    if (opt->count() > 0 &&
        std::find(kBesideLike.begin(), kBesideLike.end(), name) == kBesideLike.end()) {
      refused.push_back(name);
    }
  }
  if (!refused.empty()) {
    std::string names;
    for (const auto& n : refused) {
      names += (names.empty() ? "" : ", ") + n;
    }
    throw Error(ErrorCode::InvalidArgument,
                "--like takes every setting from the run's config.json; " + names +
                    " cannot be given beside it (only -o, --limit, -t and --caa-cache can)");
  }
  // The model first, from the configuration: what the run computed with.
  const eval::RecordedRun run = eval::read_recorded_run(c.like);
  std::shared_ptr<const Model> model;
  try {
    model = load_model(run.model);
  } catch (const Error& e) {
    throw Error(e.code(), c.like + ": the run's model: " + e.what());
  }
  eval::LikeRun like;
  if (cmd.count("--limit") > 0) {
    like.limit = c.request.limit;
  }
  like.n_threads = c.request.n_threads;
  like.caa_cache_dir = c.request.caa_cache_dir;
  eval::EvalOptions o = eval::options_like_run(run, *model, like);
  o.out_dir = c.out.empty() ? c.like : c.out;
  return {model, o};
}

void print_summary(const nlohmann::ordered_json& s) {
  std::printf(
      "%-18s %-12s n=%-5d accuracy %6.2f %% [%.2f, %.2f]  reasoning %6.2f %%  mean len %.1f\n",
      s.value("task", "").c_str(), s.value("label", s.value("method", "")).c_str(),
      s.at("n").get<int>(), s.at("accuracy").get<double>(), s.at("ci95")[0].get<double>(),
      s.at("ci95")[1].get<double>(), s.at("reasoning_rate").get<double>(),
      s.at("mean_tokens").get<double>());
}

}  // namespace

void add_eval(CLI::App& app) {
  auto c = std::make_shared<EvalCliOptions>();
  CLI::App* cmd = app.add_subcommand("eval", "Evaluate one method on one task (resumable)");
  add_eval_flags(*cmd, *c, false);
  cmd->add_option("--method", c->request.method, "baseline, cot, fewshot, caa, cache, cache+cot")
      ->capture_default_str();
  cmd->add_option("-o,--out", c->out,
                  "Output folder (config.json, items.jsonl, summary.json); with --like, default: "
                  "the run itself (resumed, or extended by a larger --limit)");
  cmd->add_option("--like", c->like,
                  "A run folder whose config.json gives every setting (model, data, method, "
                  "vector, steering, engine): the run made again elsewhere (-o) or continued; "
                  "only -o, --limit, -t and --caa-cache may stand beside it. Refused when its "
                  "files or this kvsteer would compute otherwise")
      ->check(CLI::ExistingDirectory);
  cmd->callback([c, cmd] {
    std::shared_ptr<const Model> model;
    eval::EvalOptions o;
    if (!c->like.empty()) {
      std::tie(model, o) = options_like(*cmd, *c);
      o.extraction_progress =
          progress_bar(std::string("extract ") + eval::task_name(o.task) + " (pairs)");
      o.notice = [](const std::string& text) {
        std::fprintf(stderr, "kvsteer: %s\n", text.c_str());
      };
    } else {
      for (const char* flag : {"--model", "--task", "--data", "--out"}) {
        if (cmd->count(flag) == 0) {
          throw Error(ErrorCode::InvalidArgument,
                      std::string(flag) + " is required (or --like RUN_DIR)");
        }
      }
      model = load_model(c->model);
      o = build_options(*c, model);
      o.out_dir = c->out;
    }
    const std::string label =
        std::string(eval::task_name(o.task)) + " " + eval::method_name(o.method);
    std::optional<Progress> progress;  // the total is known once the items are loaded
    o.progress = [&](std::size_t done, std::size_t total) {
      if (!progress) {
        progress.emplace("eval " + label, total);
      }
      progress->update(done);
    };
    const auto summary = eval::run_eval(model, o);
    if (progress) {
      progress->finish();
    }
    print_summary(summary);
  });
}

void add_sweep(CLI::App& app) {
  auto c = std::make_shared<EvalCliOptions>();
  auto ck = std::make_shared<std::string>("0"), cv = std::make_shared<std::string>("1,2,4,8");
  auto layers = std::make_shared<std::string>("1-"), caa_layers = std::make_shared<std::string>();
  auto caa_coefs = std::make_shared<std::string>("0.5,1,3");
  CLI::App* cmd = app.add_subcommand(
      "sweep", "Evaluate a grid of steering settings, prefilling each question once");
  add_eval_flags(*cmd, *c);
  c->request.method = "cache";
  cmd->add_option("--method", c->request.method, "cache, cache+cot or caa")->capture_default_str();
  cmd->add_option("--ck-grid", *ck, "c_k values, comma-separated")->capture_default_str();
  cmd->add_option("--cv-grid", *cv, "c_v values, comma-separated")->capture_default_str();
  cmd->add_option("--layers-grid", *layers, "layer selections, ';'-separated")
      ->capture_default_str();
  cmd->add_option("--caa-layers", *caa_layers, "CAA: blocks, comma-separated");
  cmd->add_option("--caa-coefs", *caa_coefs, "CAA: coefficients, comma-separated")
      ->capture_default_str();
  cmd->add_option("-o,--out", c->out, "Sweep JSON")->required();
  cmd->callback([c, ck, cv, layers, caa_layers, caa_coefs] {
    auto model = load_model(c->model);
    eval::SweepOptions so;
    so.base = build_options(*c, model);
    so.coef_k = parse_float_list(*ck, "--ck-grid");
    so.coef_v = parse_float_list(*cv, "--cv-grid");
    so.layers = parse_layer_grid(*layers, "--layers-grid");
    if (so.base.method == eval::Method::Caa) {
      so.caa_layers =
          caa_layers->empty()
              ? std::vector<std::int32_t>{std::max(1, model->fingerprint().n_layer / 2)}
              : parse_int_list(*caa_layers, "--caa-layers", 0, model->fingerprint().n_layer - 1);
      so.caa_coefs = parse_float_list(*caa_coefs, "--caa-coefs");
    }
    so.out = c->out;
    std::optional<Progress> progress;
    so.base.progress = [&](std::size_t done, std::size_t total) {
      if (!progress) {
        progress.emplace("sweep " + c->request.task + " " + c->request.method, total);
      }
      progress->update(done);
    };
    const auto out = eval::run_sweep(model, so);
    if (progress) {
      progress->finish();
    }
    for (const auto& s : out.at("settings")) {
      if (s.contains("layer")) {
        std::printf("layer %-3d c %-6g", s.at("layer").get<int>(), s.at("c").get<double>());
      } else {
        std::printf("c_k %-5g c_v %-5g layers %-6s", s.at("c_k").get<double>(),
                    s.at("c_v").get<double>(), s.at("layers").get<std::string>().c_str());
      }
      std::printf("  accuracy %6.2f %% [%.2f, %.2f]  reasoning %6.2f %%  mean len %.1f\n",
                  s.at("accuracy").get<double>(), s.at("ci95")[0].get<double>(),
                  s.at("ci95")[1].get<double>(), s.at("reasoning_rate").get<double>(),
                  s.at("mean_tokens").get<double>());
    }
  });
}

void add_diagnose(CLI::App& app) {
  auto c = std::make_shared<EvalCliOptions>();
  auto d = std::make_shared<eval::DiagnoseOptions>();
  auto scales = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "diagnose",
      "Why cache steering acts or not: edit size, attention on the steered cell per layer and "
      "head, V share of head outputs, next-token KL");
  add_eval_flags(*cmd, *c);
  c->request.method = "cache";
  c->request.limit = 50;
  cmd->add_option("--method", c->request.method, "cache or cache+cot")->capture_default_str();
  cmd->add_option("--follow", d->n_follow, "Decoded tokens measured after the edit")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--scales", *scales, "Also multiply c_k and c_v by these, comma-separated");
  cmd->add_flag("--per-layer", d->per_layer, "Also steer each selected layer alone");
  cmd->add_option("-o,--out", d->out, "Diagnosis JSON");
  cmd->callback([c, d, scales] {
    auto model = load_model(c->model);
    d->base = build_options(*c, model);
    if (!scales->empty()) {
      d->scales = parse_float_list(*scales, "--scales");
    }
    std::optional<Progress> progress;
    d->base.progress = [&](std::size_t done, std::size_t total) {
      if (!progress) {
        progress.emplace("diagnose " + c->request.task, total);
      }
      progress->update(done);
    };
    const auto out = eval::run_diagnosis(model, *d);
    if (progress) {
      progress->finish();
    }
    if (out.at("attention_recompute_error").get<double>() > 5e-2) {
      std::fprintf(stderr,
                   "kvsteer: warning: the recomputed attention differs from llama.cpp's by %.2g "
                   "(relative) on this architecture; the attention and V-share columns are not "
                   "reliable, the KL and changed-output figures are\n",
                   out.at("attention_recompute_error").get<double>());
    }
    const auto& e = out.at("effect");
    std::printf("prompts %zu  attention recompute error %.2e  uniform attention at the tail %.4f\n",
                out.at("n_prompts").get<std::size_t>(),
                out.at("attention_recompute_error").get<double>(),
                out.at("uniform_attention_tail").get<double>());
    std::printf("next-token KL %.4g  greedy output changed in %.1f %% of prompts\n",
                e.at("kl_first").get<double>(), 100.0 * e.at("diverged_share").get<double>());
    std::printf("%-5s %9s %9s %11s %11s %11s %11s %9s %9s\n", "layer", "K edit", "V edit",
                "attn tail", "attn tail'", "attn next", "attn next'", "V share", "V share+");
    for (const auto& l : out.at("layers")) {
      std::printf("%-5d %9.4f %9.4f %11.4f %11.4f %11.4f %11.4f %9.4f %9.4f\n",
                  l.at("layer").get<int>(), l.at("k_edit_ratio").get<double>(),
                  l.at("v_edit_ratio").get<double>(), l.at("tail_plain").get<double>(),
                  l.at("tail_steered").get<double>(), l.at("following_plain").get<double>(),
                  l.at("following_steered").get<double>(), l.at("v_share_tail").get<double>(),
                  l.at("v_share_following").get<double>());
    }
    for (const auto& s : out.at("scales")) {
      std::printf(
          "scale %-6g c_k %-6g c_v %-6g KL %.4g  changed %.1f %%  attn tail' %.4f  V share %.4f\n",
          s.at("scale").get<double>(), s.at("c_k").get<double>(), s.at("c_v").get<double>(),
          s.at("kl_first").get<double>(), 100.0 * s.at("diverged_share").get<double>(),
          s.at("tail_steered_attention").get<double>(), s.at("v_share_tail").get<double>());
    }
    for (const auto& s : out.at("per_layer")) {
      std::printf("layer %-3d alone: KL %.4g  changed %.1f %%\n", s.at("layer").get<int>(),
                  s.at("kl_first").get<double>(), 100.0 * s.at("diverged_share").get<double>());
    }
  });
}

}  // namespace kvsteer::cli
