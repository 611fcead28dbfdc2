// kvsteer.eval, kvsteer.sweep and kvsteer.diagnose: the eval harness (eval/runner.h) with the
// options `kvsteer eval|sweep|diagnose` build from their flags (tools/cli/cmd_eval.cpp), returning
// the records the CLI writes (summary.json, the sweep JSON, the diagnosis JSON).
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "bindings.h"
#include "eval/runner.h"

namespace kvsteer::py {
namespace {

using namespace nb::literals;

// The `selection` keyword (a JSON-able Python object or None) as JSON.
nlohmann::ordered_json selection_json(const nb::object& selection) {
  if (selection.is_none()) return nullptr;
  const std::string dump =
      nb::cast<std::string>(nb::module_::import_("json").attr("dumps")(selection));
  return nlohmann::ordered_json::parse(dump);
}

// Binds the shared keyword arguments after the runner's own (filled in by KVSTEER_RUNNER_FILL).
#define KVSTEER_RUNNER_PARAMS                                                                    \
  std::size_t limit, std::optional<std::string> prompt_family, const std::string &chat_template, \
      std::optional<std::string> model_name, bool preset, std::optional<std::string> traces,     \
      std::optional<std::string> fewshot_map, std::optional<std::string> vector,                 \
      std::optional<std::size_t> n_pairs, std::optional<std::size_t> shots,                      \
      std::int32_t extract_position, nb::object selection, std::optional<float> c_k,             \
      std::optional<float> c_v, std::optional<std::string> layers,                               \
      std::optional<std::string> offset, std::optional<std::int32_t> offset_id,                  \
      std::int32_t caa_layer, std::int32_t caa_layer_last, float caa_c, std::int32_t n_predict,  \
      float temperature, std::uint32_t seed, std::uint32_t parallel, std::int32_t n_threads,     \
      const std::string &cache_type_k, const std::string &cache_type_v,                          \
      const std::string &flash_attn, const std::string &kv_streams,                              \
      std::optional<std::string> caa_cache, nb::object progress, nb::object extraction_progress

// Fills an eval::EvalRequest, the description of a run `kvsteer eval|sweep|diagnose` fill from
// their flags. Keywords left None stay unset (the preset decides) or empty (the default).
#define KVSTEER_RUNNER_FILL(r)                  \
  r.limit = limit;                              \
  r.prompt_family = prompt_family.value_or(""); \
  r.chat_template = chat_template;              \
  r.model_name = model_name.value_or("");       \
  r.preset = preset;                            \
  r.traces = traces.value_or("");               \
  r.fewshot_map = fewshot_map.value_or("");     \
  r.vector = vector.value_or("");               \
  r.n_pairs = n_pairs;                          \
  r.shots = shots;                              \
  r.extract_position = extract_position;        \
  r.selection = selection_json(selection);      \
  r.c_k = c_k;                                  \
  r.c_v = c_v;                                  \
  r.layers = std::move(layers);                 \
  r.offset = std::move(offset);                 \
  r.offset_id = offset_id;                      \
  r.caa = {caa_layer, caa_layer_last, caa_c};   \
  r.n_predict = n_predict;                      \
  r.temperature = temperature;                  \
  r.seed = seed;                                \
  r.parallel = parallel;                        \
  r.n_threads = n_threads;                      \
  r.cache_type_k = cache_type_k;                \
  r.cache_type_v = cache_type_v;                \
  r.flash_attn = flash_attn;                    \
  r.kv_streams = kv_streams;                    \
  r.caa_cache_dir = caa_cache.value_or("")

#define KVSTEER_RUNNER_ARGS(default_limit)                                                        \
  "limit"_a = default_limit, "prompt_family"_a = nb::none(), "chat_template"_a = "",              \
  "model_name"_a = nb::none(), "preset"_a = true, "traces"_a = nb::none(),                        \
  "fewshot_map"_a = nb::none(), "vector"_a = nb::none(), "n_pairs"_a = nb::none(),                \
  "shots"_a = nb::none(), "extract_position"_a = -1, "selection"_a = nb::none(),                  \
  "c_k"_a = nb::none(), "c_v"_a = nb::none(), "layers"_a = nb::none(), "offset"_a = nb::none(),   \
  "offset_id"_a = nb::none(), "caa_layer"_a = -1, "caa_layer_last"_a = -1, "caa_c"_a = 1.0f,      \
  "n_predict"_a = 768, "temperature"_a = 0.0f, "seed"_a = 1234, "parallel"_a = 16,                \
  "n_threads"_a = 0, "cache_type_k"_a = "f16", "cache_type_v"_a = "f16", "flash_attn"_a = "auto", \
  "kv_streams"_a = "unified", "caa_cache"_a = nb::none(), "progress"_a = nb::none(),              \
  "extraction_progress"_a = nb::none()

constexpr const char* kSharedDoc = R"doc(
Shared arguments (the flags of `kvsteer eval`, README): task 'gsm8k', 'arc',
'csqa', 'piqa', 'organism-numeric' or 'organism-choice'; data: its test file;
limit: first N items (0: all); prompt_family / chat_template: how prompts are
rendered; preset: apply the paper's per-task settings for model_name (default:
the model file name); traces, fewshot_map, n_pairs, shots, extract_position:
extraction (or vector: a vector file); c_k, c_v, layers, offset ('none' for no
offset token) or offset_id (the token by id, as config.json records it): cache
steering; caa_layer, caa_layer_last, caa_c: activation
steering; n_predict, temperature, seed: decoding; cache_type_k, cache_type_v,
flash_attn ('on', 'off', 'auto'), kv_streams ('unified', 'per-sequence'): how
the cache is held (per-sequence: each sequence attends over its own cells only,
faster with many long answers); parallel: items decoded
together; caa_cache: a folder where activation directions are kept and found
again (one file per model, engine and pair set), with the checkpoint of one
being extracted (a stopped extraction goes on from it; a damaged checkpoint is
replaced with a RuntimeWarning). Arguments left None take the preset; given
ones win.
progress / extraction_progress: callable(done, total) or a tqdm bar, after each
batch. The GIL is released; Ctrl-C stops the batch being decoded with
KeyboardInterrupt (its answers are dropped, finished batches stay in items.jsonl
and the same call resumes; summary files are written atomically, so none is
left half-written).)doc";

template <typename Run>
nb::object run_options(eval::EvalOptions o, nb::object progress, nb::object extraction_progress,
                       Run&& run) {
  const Progress items = progress_adaptor(std::move(progress));
  const Progress pairs = progress_adaptor(std::move(extraction_progress));
  std::vector<std::string> notices;  // raised once the GIL is held again
  o.notice = [&notices](const std::string& text) { notices.push_back(text); };
  const std::string dump = run_long([&](LongCall& call) {
    o.progress = cancellable(items, call);
    o.extraction_progress = cancellable(pairs, call);
    o.abort = call.abort_callback();
    return run(o).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  });
  for (const std::string& text : notices) {
    if (PyErr_WarnEx(PyExc_RuntimeWarning, text.c_str(), 1) != 0) throw nb::python_error();
  }
  return json_to_python(dump);
}

template <typename Run>
nb::object run_runner(const eval::EvalRequest& request, const PyModel& model, nb::object progress,
                      nb::object extraction_progress, Run&& run) {
  return run_options(eval::make_eval_options(request, *model.model), std::move(progress),
                     std::move(extraction_progress), std::forward<Run>(run));
}

std::vector<float> finite_list(const std::vector<float>& values, const char* what) {
  if (values.empty()) throw Error(ErrorCode::InvalidArgument, std::string(what) + " is empty");
  for (float v : values) {
    if (!std::isfinite(v)) {
      throw Error(ErrorCode::InvalidArgument, std::string(what) + " holds a non-finite value");
    }
  }
  return values;
}

}  // namespace

void bind_runners(nb::module_& m) {
  // Static: nanobind keeps the pointer.
  static const std::string kEvalDoc =
      std::string(
          R"doc(Evaluates one method on one task (`kvsteer eval`); returns summary.json as a dict.

method: 'baseline', 'cot', 'fewshot', 'caa', 'cache' or 'cache+cot'. Writes
config.json, items.jsonl and summary.json into out_dir; run again with the same
arguments to resume (another configuration in out_dir raises InvalidArgumentError).)doc") +
      kSharedDoc;
  static const std::string kSweepDoc =
      std::string(
          R"doc(Evaluates a grid of steering settings (`kvsteer sweep`); returns the sweep JSON (also written to out).

Cache steering ('cache', 'cache+cot'): every (c_k, c_v, layers) of ck_grid x
cv_grid x layers_grid, each question prefilled once. 'caa': caa_layers (default:
the middle layer) x caa_coefs, one after another.)doc") +
      kSharedDoc;
  static const std::string kDiagnoseDoc =
      std::string(
          R"doc(Why a cache edit acts or not (`kvsteer diagnose`); returns the diagnosis JSON (also written to out when given).

Per layer and head: the edit's size against the cache, the attention the tail and
following tokens pay to the steered cell without and with the edit, the V edit's
share of the head output; then the next-token KL and the share of changed greedy
continuations, for the given setting, each of scales and (per_layer) each layer
alone. follow: tokens decoded after the edit.)doc") +
      kSharedDoc;
  m.def(
      "eval",
      [](const PyModel& model, const std::string& task, const std::string& data,
         const std::string& out_dir, const std::string& method, KVSTEER_RUNNER_PARAMS) {
        eval::EvalRequest args;
        args.task = task;
        args.data = data;
        args.method = method;
        KVSTEER_RUNNER_FILL(args);
        return run_runner(args, model, std::move(progress), std::move(extraction_progress),
                          [&](eval::EvalOptions& o) {
                            o.out_dir = out_dir;
                            return eval::run_eval(model.model, o);
                          });
      },
      "model"_a, "task"_a, "data"_a, "out_dir"_a, nb::kw_only(), "method"_a = "baseline",
      KVSTEER_RUNNER_ARGS(0), kEvalDoc.c_str());

  m.def(
      "eval_like",
      [](const PyModel& model, const std::string& run, std::optional<std::string> out_dir,
         std::optional<std::size_t> limit, std::int32_t n_threads,
         std::optional<std::string> caa_cache, nb::object progress,
         nb::object extraction_progress) {
        eval::LikeRun like{limit, n_threads, caa_cache.value_or("")};
        eval::EvalOptions o =
            eval::options_like_run(eval::read_recorded_run(run), *model.model, like);
        o.out_dir = out_dir.value_or(run);
        return run_options(
            std::move(o), std::move(progress), std::move(extraction_progress),
            [&](eval::EvalOptions& options) { return eval::run_eval(model.model, options); });
      },
      "model"_a, "run"_a, "out_dir"_a = nb::none(), nb::kw_only(), "limit"_a = nb::none(),
      "n_threads"_a = 0, "caa_cache"_a = nb::none(), "progress"_a = nb::none(),
      "extraction_progress"_a = nb::none(),
      R"doc(Makes a run of `kvsteer eval` again from its own config.json, as
`kvsteer eval --like RUN`: into out_dir (its very answers), or, without out_dir,
continued or extended in place (limit: a larger number of items, 0: all). The
model must be the file the run recorded; every other setting comes from the
configuration. Raises InvalidArgumentError (a ValueError) before anything is
written when the model, a vector or data file changed since, or the run cannot be
made again (sampled: its temperature is not recorded); FormatError for a
config.json that is not a run's. Returns summary.json as a dict.)doc");

  m.def(
      "sweep",
      [](const PyModel& model, const std::string& task, const std::string& data,
         const std::string& out, const std::string& method, const std::vector<float>& ck_grid,
         const std::vector<float>& cv_grid, const std::vector<std::string>& layers_grid,
         std::optional<std::vector<std::int32_t>> caa_layers, const std::vector<float>& caa_coefs,
         KVSTEER_RUNNER_PARAMS) {
        eval::EvalRequest args;
        args.task = task;
        args.data = data;
        args.method = method;
        KVSTEER_RUNNER_FILL(args);
        eval::SweepOptions so;
        so.coef_k = finite_list(ck_grid, "ck_grid");
        so.coef_v = finite_list(cv_grid, "cv_grid");
        if (layers_grid.empty()) throw Error(ErrorCode::InvalidArgument, "layers_grid is empty");
        for (const auto& l : layers_grid) (void)LayerSelection::parse(l);
        so.layers = layers_grid;
        if (eval::parse_method(method) == eval::Method::Caa) {
          so.caa_layers = caa_layers.value_or(
              std::vector<std::int32_t>{std::max(1, model.model->fingerprint().n_layer / 2)});
          so.caa_coefs = finite_list(caa_coefs, "caa_coefs");
        }
        so.out = out;
        return run_runner(args, model, std::move(progress), std::move(extraction_progress),
                          [&](eval::EvalOptions& o) {
                            so.base = o;
                            return eval::run_sweep(model.model, so);
                          });
      },
      "model"_a, "task"_a, "data"_a, "out"_a, nb::kw_only(), "method"_a = "cache",
      "ck_grid"_a = std::vector<float>{0.0f},
      "cv_grid"_a = std::vector<float>{1.0f, 2.0f, 4.0f, 8.0f},
      "layers_grid"_a = std::vector<std::string>{"1-"}, "caa_layers"_a = nb::none(),
      "caa_coefs"_a = std::vector<float>{0.5f, 1.0f, 3.0f}, KVSTEER_RUNNER_ARGS(0),
      kSweepDoc.c_str());

  m.def(
      "diagnose",
      [](const PyModel& model, const std::string& task, const std::string& data,
         std::optional<std::string> out, const std::string& method, std::int32_t follow,
         const std::vector<float>& scales, bool per_layer, KVSTEER_RUNNER_PARAMS) {
        eval::EvalRequest args;
        args.task = task;
        args.data = data;
        args.method = method;
        KVSTEER_RUNNER_FILL(args);
        if (follow < 1 || follow > 4096) {
          throw Error(ErrorCode::InvalidArgument,
                      "follow must be in [1, 4096], got " + std::to_string(follow));
        }
        eval::DiagnoseOptions d;
        d.n_follow = follow;
        if (!scales.empty()) d.scales = finite_list(scales, "scales");
        d.per_layer = per_layer;
        d.out = out.value_or("");
        return run_runner(args, model, std::move(progress), std::move(extraction_progress),
                          [&](eval::EvalOptions& o) {
                            d.base = o;
                            return eval::run_diagnosis(model.model, d);
                          });
      },
      "model"_a, "task"_a, "data"_a, "out"_a = nb::none(), nb::kw_only(), "method"_a = "cache",
      "follow"_a = 8, "scales"_a = std::vector<float>{}, "per_layer"_a = false,
      KVSTEER_RUNNER_ARGS(50), kDiagnoseDoc.c_str());
}

}  // namespace kvsteer::py
