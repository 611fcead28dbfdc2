#include "eval/run_support.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "base/fnv1a64.h"
#include "eval/git_commit.h"  // generated: KVSTEER_GIT_COMMIT (eval/CMakeLists.txt)
#include "eval/run_support.h"
#include "kvsteer/backend.h"
#include "kvsteer/file_io.h"
#include "kvsteer/vector_file.h"

namespace kvsteer::eval {

using nlohmann::ordered_json;
namespace fs = std::filesystem;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool is_organism(Task task) {
  return task == Task::OrganismNumeric || task == Task::OrganismChoice;
}

std::string fingerprint_text(const ModelFingerprint& f) {
  return f.arch + " L" + std::to_string(f.n_layer) + " H" + std::to_string(f.n_head) + "/" +
         std::to_string(f.n_head_kv) + " d" + std::to_string(f.n_embd) + " V" +
         std::to_string(f.n_vocab) + " vocab " + f.vocab_hash;
}

std::uint32_t longest_pair(const std::vector<ContrastivePair>& pairs) {
  std::size_t longest = 0;
  for (const auto& p : pairs) {
    longest = std::max({longest, p.positive.size(), p.negative.size()});
  }
  return static_cast<std::uint32_t>(longest + 4);
}

// Mean residual difference (positive - negative) per layer at the last prompt token.
namespace {

// What the residual directions depend on: the model (fingerprint and file), the engine (the cache
// type and attention path change what a layer reads) and every pair's tokens.
std::string caa_cache_key(const Model& model, const EvalOptions& o,
                          const std::vector<ContrastivePair>& pairs) {
  std::uint64_t h = base::fnv1a64(fingerprint_text(model.fingerprint()));
  if (!o.model_path.empty()) {
    h = base::fnv1a64(file_identity(o.model_path, "model file").dump(), h);
  }
  for (int x : {static_cast<int>(o.engine.type_k), static_cast<int>(o.engine.type_v),
                static_cast<int>(o.engine.flash_attn), static_cast<int>(o.engine.kv_streams)}) {
    h = base::fnv1a64(&x, sizeof x, h);
  }
  h = pair_tokens_hash(pairs, h);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

// Directions kept under key, or nothing when the file is missing, damaged or not of this shape
// (it is then extracted again and replaced: a cache is never a reason to fail).
std::optional<std::vector<std::vector<float>>> load_caa_directions(const std::string& path,
                                                                   const std::string& key,
                                                                   const Model& model) {
  if (!fs::exists(path)) {
    return std::nullopt;
  }
  try {
    const auto j = ordered_json::parse(read_text_file(path, "activation directions"));
    if (j.value("kind", "") != "kvsteer-caa-directions" || j.value("version", 0) != 1 ||
        j.value("key", "") != key) {
      return std::nullopt;
    }
    auto rows = j.at("directions").get<std::vector<std::vector<float>>>();
    if (rows.size() != static_cast<std::size_t>(model.n_layer())) {
      return std::nullopt;
    }
    for (const auto& row : rows) {
      if (row.size() != static_cast<std::size_t>(model.fingerprint().n_embd) ||
          !std::all_of(row.begin(), row.end(), [](float x) { return std::isfinite(x); })) {
        return std::nullopt;
      }
    }
    return rows;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace

std::vector<std::vector<float>> extract_residual_vector(const Evaluator& ev,
                                                        const std::vector<ContrastivePair>& pairs,
                                                        const EvalOptions& o) {
  ResidualExtractionParams params;
  params.progress = o.extraction_progress;
  if (o.caa_cache_dir.empty()) {
    Session session = ev.make_session(1, true, longest_pair(pairs));
    return extract_residual_directions(session, pairs, params);
  }
  const std::string key = caa_cache_key(ev.model(), o, pairs);
  const std::string path = o.caa_cache_dir + "/caa-" + key + ".json";
  if (auto rows = load_caa_directions(path, key, ev.model())) {
    if (o.extraction_progress) {
      o.extraction_progress(pairs.size(), pairs.size());
    }
    return std::move(*rows);
  }
  Session session = ev.make_session(1, true, longest_pair(pairs));
  create_folder(o.caa_cache_dir, "--caa-cache folder");
  const auto say = [&](const std::string& text) {
    if (o.notice) {
      o.notice(text);
    }
  };
  ResidualCheckpointFile checkpoint(path + ".partial", o.caa_checkpoint_every_s,
                                    residual_extraction_identity(session, pairs), say);
  if (const ResidualCheckpoint* cp = checkpoint.resume()) {
    say("resuming the activation directions from " + checkpoint.path() + ": " +
        std::to_string(cp->pairs_done) + " of " + std::to_string(cp->n_pairs) + " pairs done");
  }
  checkpoint.attach(params);
  auto rows = extract_residual_directions(session, pairs, params);
  // Floats are written as the doubles they convert to exactly, and read back to the same floats.
  const ordered_json j = {{"kind", "kvsteer-caa-directions"},
                          {"version", 1},
                          {"key", key},
                          {"n_pairs", pairs.size()},
                          {"directions", rows}};
  write_file_atomic(path, j.dump() + "\n");
  checkpoint.remove();
  return rows;
}

// A session that extracts from these pairs, n_seq prompts at a time.
Session extraction_session(const Evaluator& ev, const std::vector<ContrastivePair>& pairs) {
  const auto n_seq = std::min<std::uint32_t>(8, static_cast<std::uint32_t>(pairs.size() * 2));
  return ev.make_session(n_seq, false, longest_pair(pairs));
}

// The cache-steering vector of a run: the --vector file, or extracted from the traces (with the
// CoT prefix for cache+cot). `info` receives its provenance.
SteeringVector cache_vector(const Evaluator& ev, const EvalOptions& o, ordered_json& info) {
  if (!o.vector_path.empty()) {
    SteeringVector v = load_steering_vector(o.vector_path);
    info = {{"path", o.vector_path},
            {"traces_sha256", v.info.traces_sha256},
            {"n_pairs", v.info.n_pairs},
            {"source", v.info.source}};
    return v;
  }
  const auto pairs = ev.contrastive_pairs(o.method == Method::CacheCot);
  Session s = extraction_session(ev, pairs);
  ExtractionParams ep;
  ep.position = o.extract_position;
  ep.progress = o.extraction_progress;
  SteeringVector v = extract_steering_vector(s, pairs, ep);
  info = {{"extracted_from", o.traces},
          {"traces_sha256", ev.traces_sha()},
          {"n_pairs", pairs.size()},
          {"shots", o.shots}};
  return v;
}

// The provenance run_eval records for its vector, from the options and files alone: a resumed run
// whose items are all done (killed between its last batch and summary.json) extracts nothing and
// must still write the summary an uninterrupted run writes.
ordered_json vector_provenance(const EvalOptions& o) {
  if (o.method == Method::Caa || o.vector_path.empty()) {
    if (o.traces.empty()) {
      throw Error(ErrorCode::InvalidArgument, "--traces is required to extract a steering vector");
    }
    ordered_json info = {{"extracted_from", o.traces},
                         {"traces_sha256", load_traces(o.traces, trace_format_of(o.task)).sha256},
                         {"n_pairs", o.n_pairs},
                         {"shots", o.shots}};
    if (o.method == Method::Caa) {
      info["kind"] = "residual (l_out)";
    }
    return info;
  }
  const SteeringVector v = load_steering_vector(o.vector_path);
  return {{"path", o.vector_path},
          {"traces_sha256", v.info.traces_sha256},
          {"n_pairs", v.info.n_pairs},
          {"source", v.info.source}};
}

std::vector<std::vector<float>> scaled(const std::vector<std::vector<float>>& v, float c) {
  auto out = v;
  for (auto& row : out) {
    for (float& x : row) {
      x *= c;
    }
  }
  return out;
}

ordered_json steering_json(const SteeringParams& p) {
  return ordered_json{
      {"c_k", p.coef_k},
      {"c_v", p.coef_v},
      {"layers_k", p.layers_k.to_string()},
      {"layers_v", p.layers_v.to_string()},
      {"offset_token", p.offset_token ? ordered_json(*p.offset_token) : ordered_json(nullptr)}};
}

// The model file's size and an FNV-1a 64 of its first and last 4 MiB (the whole file when
// smaller): a retrained or requantised model keeps its fingerprint (architecture, vocabulary),
// and a resumed run must not mix its answers with another model's.
ordered_json file_identity(const std::string& path, const std::string& what) {
  constexpr std::uintmax_t kSpan = 4u << 20;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(ErrorCode::Io, "cannot read " + what + " '" + path + "'");
  }
  const std::uintmax_t size = std::filesystem::file_size(path);
  std::uint64_t h = base::kFnv1a64Basis;
  std::vector<char> buffer;
  auto hash_span = [&](std::uintmax_t from, std::uintmax_t n) {
    buffer.resize(static_cast<std::size_t>(n));
    in.seekg(static_cast<std::streamoff>(from));
    in.read(buffer.data(), static_cast<std::streamsize>(n));
    if (!in) {
      throw Error(ErrorCode::Io, "cannot read " + what + " '" + path + "'");
    }
    h = base::fnv1a64(buffer.data(), buffer.size(), h);
  };
  if (size <= 2 * kSpan) {
    hash_span(0, size);
  } else {
    hash_span(0, kSpan);
    hash_span(size - kSpan, kSpan);
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return {{"bytes", size}, {"head_tail_fnv1a", hex}};
}

ordered_json config_json(const EvalOptions& o, const Model& model) {
  ordered_json c{
      {"task", task_name(o.task)},
      {"data", o.data},
      {"limit", o.limit},
      {"method", method_name(o.method)},
      {"prompt_family", o.prompt.family ? prompt_family_name(*o.prompt.family) : "model"},
      {"chat_template", o.prompt.chat_template},
      {"n_predict", o.generation.n_predict},
      {"stop_strings", o.generation.stop_strings},
      {"decoding", o.generation.sampling.temperature > 0 ? "sampling" : "greedy"},
      {"seed", o.generation.sampling.seed},
      {"parallel", o.n_parallel},
      {"model", o.model_path},
      {"model_fingerprint", fingerprint_text(model.fingerprint())}};
  if (!o.model_path.empty()) {
    c["model_file"] = file_identity(o.model_path, "model file");
  }
  if (o.task == Task::OrganismChoice) {
    c["choice_scoring"] = "organism_answer_first";
  }
  if (o.method == Method::FewShot || o.method == Method::Cache || o.method == Method::CacheCot ||
      o.method == Method::Caa) {
    c["traces"] = o.traces;
    c["fewshot_map"] = o.fewshot_map;
    c["pairs"] = o.n_pairs;
    c["shots"] = o.shots;
  }
  if (o.method == Method::Cache || o.method == Method::CacheCot) {
    c["vector"] = o.vector_path;
    if (!o.vector_path.empty()) {
      c["vector_file"] = file_identity(o.vector_path, "vector file");
    }
    c["steering"] = steering_json(o.steering);
  }
  if (o.method == Method::Caa) {
    c["caa"] = {
        {"layer_first", o.caa.layer_first}, {"layer_last", o.caa.layer_last}, {"c", o.caa.coef}};
  }
  if (o.extract_position != -1 && o.vector_path.empty() &&
      (o.method == Method::Cache || o.method == Method::CacheCot)) {
    c["extract_position"] = o.extract_position;
  }
  if (!o.selection.is_null()) {
    c["selection"] = o.selection;
  }
  if (!(o.engine == EvalEngine{})) {
    c["engine"] = {{"cache_type_k", kv_type_name(o.engine.type_k)},
                   {"cache_type_v", kv_type_name(o.engine.type_v)},
                   {"flash_attn", flash_attn_name(o.engine.flash_attn)},
                   {"kv_streams", kv_streams_name(o.engine.kv_streams)}};
  }
  return c;
}

namespace {

bool is_path_key(const std::string& key) {
  return key == "data" || key == "traces" || key == "fewshot_map" || key == "vector" ||
         key == "model";
}

std::string canonical_path(const std::string& path) {
  if (path.empty()) {
    return path;
  }
  std::error_code ec;
  const fs::path p = fs::weakly_canonical(fs::absolute(path, ec), ec);
  return ec ? path : p.string();
}

}  // namespace

std::vector<std::string> config_differences(const ordered_json& recorded, const ordered_json& now) {
  std::vector<std::string> keys;
  const auto differs = [&](const std::string& key) {
    if (!recorded.contains(key) || !now.contains(key)) {
      return true;
    }
    const ordered_json& a = recorded.at(key);
    const ordered_json& b = now.at(key);
    if (is_path_key(key) && a.is_string() && b.is_string()) {
      return canonical_path(a.get<std::string>()) != canonical_path(b.get<std::string>());
    }
    return a != b;
  };
  for (const auto& [key, value] : recorded.items()) {
    if (differs(key)) {
      keys.push_back(key);
    }
  }
  for (const auto& [key, value] : now.items()) {
    if (!recorded.contains(key) && !config_key_added_later(key)) {
      keys.push_back(key);
    }
  }
  return keys;
}

bool config_key_added_later(const std::string& key) { return key == "vector_file"; }

bool limit_extends(std::size_t recorded_limit, std::size_t limit) {
  if (recorded_limit == 0) {
    return limit == 0;
  }
  return limit == 0 || limit >= recorded_limit;
}

std::string join_keys(const std::vector<std::string>& keys) {
  std::string out;
  for (const std::string& k : keys) {
    out += (out.empty() ? "" : ", ") + k;
  }
  return out;
}

std::vector<std::vector<std::size_t>> pending_batches(
    std::size_t total, std::size_t size, const std::function<bool(std::size_t)>& done) {
  if (size == 0) {
    throw Error(ErrorCode::InvalidArgument, "batch size must be >= 1");
  }
  std::vector<std::vector<std::size_t>> batches;
  for (std::size_t begin = 0; begin < total; begin += size) {
    std::vector<std::size_t> batch;
    for (std::size_t i = begin; i < std::min(total, begin + size); ++i) {
      if (!done(i)) {
        batch.push_back(i);
      }
    }
    if (!batch.empty()) {
      batches.push_back(std::move(batch));
    }
  }
  return batches;
}

ordered_json result_head(const std::string& kind, const EvalOptions& o) {
  return {{"kind", kind},
          {"version", 1},
          {"task", task_name(o.task)},
          {"method", method_name(o.method)}};
}

ordered_json model_json(const EvalOptions& o, const Model& model) {
  return {{"path", o.model_path}, {"fingerprint", fingerprint_text(model.fingerprint())}};
}

void stamp_result(ordered_json& out, std::chrono::steady_clock::time_point start) {
  out["elapsed_s"] = std::round(seconds_since(start) * 10) / 10;
  out["commit"] = KVSTEER_GIT_COMMIT;
  // Greedy answers depend on the instruction sets libllama was built for (scripts/llama_isa.sh).
  out["engine_cpu_features"] = Backend::cpu_features();
}

// A result JSON (sweep, diagnosis), its folder created when missing.
void write_json_file(const std::string& path, const ordered_json& j) {
  if (const auto parent = fs::path(path).parent_path(); !parent.empty()) {
    create_folder(parent.string(), "output folder");
  }
  write_file_atomic(path, j.dump(2) + "\n");
}

// Results already in items.jsonl; a torn last line (a kill mid-write) is cut off.
std::map<std::size_t, ItemResult> load_done(const std::string& path) {
  std::map<std::size_t, ItemResult> done;
  if (!fs::exists(path)) {
    return done;
  }
  const std::string text = read_text_file(path, "run answers");
  std::size_t good_end = 0, start = 0, line_no = 0;
  while (start < text.size()) {
    const std::size_t nl = text.find('\n', start);
    if (nl == std::string::npos) {
      break;  // torn line
    }
    ++line_no;
    try {
      ItemResult r = ItemResult::from_json(ordered_json::parse(text.substr(start, nl - start)));
      done[r.index] = std::move(r);
    } catch (const std::exception& e) {
      throw Error(ErrorCode::Format, path + ": line " + std::to_string(line_no) + ": " + e.what());
    }
    good_end = nl + 1;
    start = nl + 1;
  }
  if (good_end != text.size()) {
    fs::resize_file(path, good_end);
  }
  return done;
}

// One line of items.jsonl or a sweep journal. Byte-fallback tokens can leave invalid UTF-8 in a
// response: it is replaced (U+FFFD) rather than failing the run.
std::string journal_line(const ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

// The result as a resumed run reads it back from its line (ttft_ms rounded, invalid UTF-8
// replaced): summaries are computed from these, so a run's summary does not depend on which of
// its items were computed in this process and which were read back.
ItemResult as_journalled(const ItemResult& r) {
  return ItemResult::from_json(ordered_json::parse(journal_line(r.to_json())));
}

std::int32_t resolve_caa_layer(std::int32_t layer, const Model& model) {
  return layer >= 0 ? layer : std::max(1, model.fingerprint().n_layer / 2);
}

void check_caa_blocks(const CaaParams& caa, const Model& model) {
  const std::int32_t n_layer = model.fingerprint().n_layer;
  const std::int32_t first = resolve_caa_layer(caa.layer_first, model);
  const std::int32_t last = caa.layer_last >= 0 ? caa.layer_last : first;
  if (first < 1 || last < first || last >= n_layer) {
    throw Error(ErrorCode::InvalidArgument,
                "--caa-layer " + std::to_string(first) +
                    (last != first ? ".." + std::to_string(last) : "") +
                    ": activation steering needs blocks 1 <= first <= last < " +
                    std::to_string(n_layer) + " (the model has " + std::to_string(n_layer) +
                    "; llama.cpp cannot steer block 0)");
  }
}

void check_run_options(const EvalOptions& o, const Model& model) {
  if (o.n_parallel < 1) {
    throw Error(ErrorCode::InvalidArgument, "--parallel must be >= 1");
  }
  if (o.generation.n_predict < 1) {
    throw Error(ErrorCode::InvalidArgument,
                "--n-predict must be >= 1, got " + std::to_string(o.generation.n_predict));
  }
  const std::int32_t n_layer = model.fingerprint().n_layer;
  const bool cache = o.method == Method::Cache || o.method == Method::CacheCot;
  if (cache) {
    check_layers(o.steering, n_layer);
  }
  if (o.method == Method::Caa) {
    check_caa_blocks(o.caa, model);
  }
  if (cache && !o.vector_path.empty()) {
    require_regular_file(o.vector_path, "steering vector file");
  }
  if ((cache && o.vector_path.empty()) || o.method == Method::Caa) {
    if (o.traces.empty()) {
      throw Error(ErrorCode::InvalidArgument, "--traces is required to extract a steering vector");
    }
    check_pairs_from_traces(o.traces, trace_format_of(o.task), o.n_pairs, o.shots);
  }
}

}  // namespace kvsteer::eval
