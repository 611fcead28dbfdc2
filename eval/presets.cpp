// The paper's presets and the mapping of a frontend's request onto EvalOptions.
#include "eval/runner.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "eval/run_support.h"
#include "kvsteer/file_io.h"

namespace kvsteer::eval {

using nlohmann::ordered_json;
namespace fs = std::filesystem;

Method parse_method(const std::string& name) {
  static const std::map<std::string, Method> names = {
      {"baseline", Method::Baseline}, {"cot", Method::Cot},     {"fewshot", Method::FewShot},
      {"caa", Method::Caa},           {"cache", Method::Cache}, {"cache+cot", Method::CacheCot}};
  const auto it = names.find(name);
  if (it == names.end()) {
    throw Error(ErrorCode::InvalidArgument,
                "unknown method '" + name + "' (baseline, cot, fewshot, caa, cache, cache+cot)");
  }
  return it->second;
}

const char* method_name(Method method) noexcept {
  switch (method) {
    case Method::Baseline:
      return "baseline";
    case Method::Cot:
      return "cot";
    case Method::FewShot:
      return "fewshot";
    case Method::Caa:
      return "caa";
    case Method::Cache:
      return "cache";
    case Method::CacheCot:
      return "cache+cot";
  }
  return "?";
}

std::vector<std::string> reference_stop_strings(const Model& model) {
  std::vector<std::string> stops = {"Q:", "Question:", "</s>", "<|im_end|>"};
  (void)model;  // EOS tokens stop generation by id (stop_at_eog)
  return stops;
}

void apply_paper_preset(EvalOptions& o, const Model& model, const std::string& model_name) {
  const std::string name = lower(model_name);
  struct Preset {
    const char* key;
    std::size_t n, k;
    float ck, cv;
  };
  // method.md §2.1 (plain runs); the cache+cot overrides of §2.2 are applied below.
  static const std::map<Task, std::vector<Preset>> presets = {
      {Task::Gsm8k,
       {{"smollm2", 200, 5, 0, 1},
        {"llama-3.2-1b", 100, 5, 0, 1},
        {"llama-3.2-3b", 100, 5, 0, 1},
        {"qwen2", 100, 5, 0, 3},
        {"llama-3.1-8b", 100, 5, 0, 2},
        {"phi-4-mini", 100, 5, 0, 1}}},
      {Task::Csqa,
       {{"llama-3.2-1b", 100, 5, 0, 10},
        {"llama-3.2-3b", 300, 10, 0, 4},
        {"smollm2", 400, 12, 0, 6},
        {"qwen2", 200, 10, 0.2f, 4},
        {"llama-3.1-8b", 100, 5, 0, 10},
        {"phi-4-mini", 100, 5, 0, 10}}},
      {Task::Arc,
       {{"llama-3.2-3b", 400, 10, 0, 6},
        {"llama-3.2-1b", 200, 10, 0, 6},
        {"smollm2", 300, 10, 0, 6},
        {"qwen2", 400, 10, 0, 10},
        {"llama-3.1-8b", 200, 10, 0, 6},
        {"phi-4-mini", 200, 10, 0, 6}}},
      {Task::Piqa,
       {{"llama-3.2-1b", 200, 10, 0, 6},
        {"llama-3.2-3b", 200, 10, 0, 10},
        {"smollm2", 200, 10, 0, 6},
        {"qwen2", 200, 10, 0, 8},
        {"llama-3.1-8b", 200, 10, 0, 6},
        {"phi-4-mini", 200, 10, 0, 6}}},
  };
  o.steering.coef_k = 0.0f;
  o.steering.coef_v = o.task == Task::Gsm8k ? 1.0f : 6.0f;
  o.n_pairs = 100;
  o.shots = 5;
  std::string matched;
  if (const auto it = presets.find(o.task); it != presets.end()) {
    for (const Preset& p : it->second) {
      if (name.find(p.key) != std::string::npos) {
        o.n_pairs = p.n;
        o.shots = p.k;
        o.steering.coef_k = p.ck;
        o.steering.coef_v = p.cv;
        matched = p.key;
        break;
      }
    }
  }
  if (o.method == Method::CacheCot && !matched.empty()) {
    // method.md §2.2
    if (o.task == Task::Gsm8k) {
      o.n_pairs = matched == "smollm2" ? 300 : 200;
      if (matched == "qwen2") {
        o.steering.coef_v = 1.0f;
      }
    } else if (o.task == Task::Csqa) {
      if (matched == "llama-3.2-3b") {
        o.n_pairs = 400;
        o.shots = 10;
        o.steering.coef_v = 6;
      }
      if (matched == "smollm2") {
        o.n_pairs = 300;
        o.shots = 10;
      }
    } else if (o.task == Task::Arc) {
      if (matched == "llama-3.2-3b") {
        o.n_pairs = 200;
      }
      if (matched == "llama-3.2-1b" || matched == "llama-3.1-8b" || matched == "phi-4-mini") {
        o.steering.coef_v = 8;
      }
      if (matched == "smollm2") {
        o.steering.coef_v = 4;
      }
      if (matched == "qwen2") {
        o.steering.coef_v = 8;
        o.n_pairs = 200;
      }
    } else if (o.task == Task::Piqa) {
      if (matched == "llama-3.2-1b" || matched == "llama-3.1-8b" || matched == "phi-4-mini") {
        o.steering.coef_v = 8;
      }
      if (matched == "llama-3.2-3b") {
        o.n_pairs = 300;
        o.steering.coef_v = 6;
      }
      if (matched == "smollm2" || matched == "qwen2") {
        o.steering.coef_v = 10;
      }
    }
  }
  o.steering.layers_k = LayerSelection::parse("1-");
  o.steering.layers_v = LayerSelection::parse("1-");
  // Offset "\n" for the MC tasks; none for GSM8K (" " for SmolLM2's GSM8K+CoT run).
  if (is_multiple_choice(o.task)) {
    o.steering.offset_token = model.tokenize("\n", false, false).front();
  } else if (o.method == Method::CacheCot && matched == "smollm2") {
    o.steering.offset_token = model.tokenize(" ", false, false).front();
  } else {
    o.steering.offset_token.reset();
  }
}

EvalOptions make_eval_options(const EvalRequest& c, const Model& model) {
  if (c.extract_position > -1) {
    throw Error(ErrorCode::InvalidArgument,
                "extract_position must be <= -1, got " + std::to_string(c.extract_position));
  }
  if (c.parallel < 1 || c.parallel > 512) {
    throw Error(ErrorCode::InvalidArgument,
                "parallel must be in [1, 512], got " + std::to_string(c.parallel));
  }
  if ((c.c_k && !std::isfinite(*c.c_k)) || (c.c_v && !std::isfinite(*c.c_v)) ||
      !std::isfinite(c.caa.coef) || !(c.temperature >= 0.0f)) {
    throw Error(ErrorCode::InvalidArgument,
                "c_k, c_v and caa_c (the CAA coefficient) must be finite and temperature >= 0");
  }
  EvalOptions o;
  o.task = parse_task(c.task);
  o.data = c.data;
  o.limit = c.limit;
  o.method = parse_method(c.method);
  if (o.method != Method::Cache && o.method != Method::CacheCot) {
    // Ignored, the run would be labelled by its method but look steered to whoever asked.
    const char* given = c.c_k                     ? "c_k (--ck)"
                        : c.c_v                   ? "c_v (--cv)"
                        : c.layers                ? "layers (--layers)"
                        : c.offset || c.offset_id ? "the offset token (--offset)"
                        : !c.vector.empty()       ? "a steering vector (--vector)"
                                                  : nullptr;
    if (given != nullptr) {
      throw Error(ErrorCode::InvalidArgument, std::string(given) +
                                                  " applies to cache steering (method cache or "
                                                  "cache+cot), not to method " +
                                                  c.method);
    }
  }
  o.prompt.family = resolve_prompt_family(c.prompt_family, c.chat_template, model);
  o.prompt.chat_template = c.chat_template;
  o.traces = c.traces;
  o.fewshot_map = c.fewshot_map;
  o.vector_path = c.vector;
  o.caa_cache_dir = c.caa_cache_dir;
  o.extract_position = c.extract_position;
  o.selection = c.selection;
  o.model_path = model.path();
  const std::string name =
      c.model_name.empty() ? fs::path(model.path()).filename().string() : c.model_name;
  if (c.preset) {
    apply_paper_preset(o, model, name);
  } else {
    o.steering.layers_k = o.steering.layers_v = LayerSelection::parse("1-");
  }
  if (c.n_pairs) {
    o.n_pairs = *c.n_pairs;
  }
  if (c.shots) {
    o.shots = *c.shots;
  }
  if (c.c_k) {
    o.steering.coef_k = *c.c_k;
  }
  if (c.c_v) {
    o.steering.coef_v = *c.c_v;
  }
  if (c.layers) {
    o.steering.layers_k = o.steering.layers_v = LayerSelection::parse(*c.layers);
  }
  if (c.offset && c.offset_id) {
    throw Error(ErrorCode::InvalidArgument, "give the offset token as text or by id, not both");
  }
  if (c.offset_id) {
    model.check_token(*c.offset_id);
    o.steering.offset_token = *c.offset_id;
  } else if (c.offset) {
    if (*c.offset == "none") {
      o.steering.offset_token.reset();
    } else {
      const auto ids = model.tokenize(*c.offset, false, false);
      if (ids.empty()) {
        throw Error(ErrorCode::InvalidArgument, "the offset text has no tokens");
      }
      o.steering.offset_token = ids.front();
    }
  }
  o.caa = c.caa;
  o.generation.n_predict = c.n_predict;
  o.generation.stop_strings = reference_stop_strings(model);
  o.generation.sampling.temperature = c.temperature;
  o.generation.sampling.seed = c.seed;
  if (c.temperature > 0) {  // the reference's sampling (method.md §2.4)
    o.generation.sampling.top_k = 50;
    o.generation.sampling.top_p = 0.9f;
  }
  o.n_parallel = c.parallel;
  o.n_threads = c.n_threads;
  o.engine.type_k = parse_kv_type(c.cache_type_k);
  o.engine.type_v = parse_kv_type(c.cache_type_v);
  o.engine.flash_attn = parse_flash_attn(c.flash_attn);
  o.engine.kv_streams = parse_kv_streams(c.kv_streams);
  // Refused here, before a run writes anything, rather than by the first session.
  if ((o.engine.type_v == KvType::Q8_0 || o.engine.type_v == KvType::Q4_0) &&
      o.engine.flash_attn == FlashAttn::Off) {
    throw Error(ErrorCode::InvalidArgument, std::string("a quantized V cache (") +
                                                kv_type_name(o.engine.type_v) +
                                                ") needs flash attention on or auto");
  }
  return o;
}

EvalRequest request_from_config(const nlohmann::ordered_json& config, std::string& model) {
  EvalRequest r;
  r.preset = false;
  try {
    model = config.at("model").get<std::string>();
    r.task = config.at("task").get<std::string>();
    r.data = config.at("data").get<std::string>();
    r.method = config.at("method").get<std::string>();
    r.limit = config.at("limit").get<std::size_t>();
    const auto family = config.value("prompt_family", std::string("model"));
    if (family != "model") {
      r.prompt_family = family;
    }
    r.chat_template = config.value("chat_template", std::string());
    if (config.at("decoding").get<std::string>() != "greedy") {
      throw Error(ErrorCode::InvalidArgument,
                  "the run was sampled and its configuration does not record the temperature, "
                  "so it cannot be made again");
    }
    r.n_predict = config.at("n_predict").get<std::int32_t>();
    r.seed = config.at("seed").get<std::uint32_t>();
    r.parallel = config.at("parallel").get<std::uint32_t>();
    r.traces = config.value("traces", std::string());
    r.fewshot_map = config.value("fewshot_map", std::string());
    if (config.contains("pairs")) {
      r.n_pairs = config.at("pairs").get<std::size_t>();
    }
    if (config.contains("shots")) {
      r.shots = config.at("shots").get<std::size_t>();
    }
    r.vector = config.value("vector", std::string());
    r.extract_position = config.value("extract_position", -1);
    if (config.contains("selection")) {
      r.selection = config.at("selection");
    }
    if (config.contains("steering")) {
      const auto& s = config.at("steering");
      const auto layers = s.at("layers_k").get<std::string>();
      if (layers != s.at("layers_v").get<std::string>()) {
        throw Error(ErrorCode::InvalidArgument,
                    "the run steered K and V in different layers, which eval cannot be asked for");
      }
      r.c_k = s.at("c_k").get<float>();
      r.c_v = s.at("c_v").get<float>();
      r.layers = layers;
      if (s.at("offset_token").is_null()) {
        r.offset = "none";
      } else {
        r.offset_id = s.at("offset_token").get<std::int32_t>();
      }
    }
    if (config.contains("caa")) {
      const auto& c = config.at("caa");
      r.caa.layer_first = c.at("layer_first").get<std::int32_t>();
      r.caa.layer_last = c.at("layer_last").get<std::int32_t>();
      r.caa.coef = c.at("c").get<float>();
    }
    if (config.contains("engine")) {
      const auto& e = config.at("engine");
      r.cache_type_k = e.at("cache_type_k").get<std::string>();
      r.cache_type_v = e.at("cache_type_v").get<std::string>();
      r.flash_attn = e.at("flash_attn").get<std::string>();
      r.kv_streams = e.at("kv_streams").get<std::string>();
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::Format, std::string("not a run configuration: ") + e.what());
  }
  return r;
}

void check_same_computation(const nlohmann::ordered_json& recorded, const EvalOptions& options,
                            const Model& model) {
  nlohmann::ordered_json before = recorded;
  nlohmann::ordered_json now = config_json(options, model);
  before.erase("limit");
  now.erase("limit");
  const auto keys = config_differences(before, now);
  if (!keys.empty()) {
    throw Error(ErrorCode::InvalidArgument,
                "the run cannot be made again as recorded: " + join_keys(keys) +
                    " would differ (a model, vector or data file changed since, or a setting "
                    "eval's flags cannot express)");
  }
}

RecordedRun read_recorded_run(const std::string& run_dir) {
  const std::string path = (fs::path(run_dir) / "config.json").string();
  RecordedRun run;
  run.dir = run_dir;
  try {
    run.config = nlohmann::ordered_json::parse(read_text_file(path, "run configuration"));
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::Format, path + ": not a run configuration: " + e.what());
  }
  try {
    run.request = request_from_config(run.config, run.model);
  } catch (const Error& e) {
    throw Error(e.code(), run_dir + ": " + e.what());
  }
  return run;
}

EvalOptions options_like_run(const RecordedRun& run, const Model& model, const LikeRun& like) {
  EvalRequest r = run.request;
  if (like.limit) {
    r.limit = *like.limit;
  }
  r.n_threads = like.n_threads;
  r.caa_cache_dir = like.caa_cache_dir;
  try {
    EvalOptions o = make_eval_options(r, model);
    check_same_computation(run.config, o, model);
    return o;
  } catch (const Error& e) {
    throw Error(e.code(), run.dir + ": " + e.what());
  }
}

}  // namespace kvsteer::eval
