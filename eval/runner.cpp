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

#include "eval/append_file.h"
#include "eval/contrastive.h"
#include "eval/git_commit.h"  // generated: KVSTEER_GIT_COMMIT (eval/CMakeLists.txt)
#include "eval/scoring.h"
#include "eval/traces.h"
#include "kvsteer/diagnosis.h"
#include "kvsteer/error.h"
#include "kvsteer/file_io.h"
#include "kvsteer/session.h"
#include "kvsteer/vector_file.h"

namespace kvsteer::eval {
namespace {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

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

// Word sets for the lexical neighbour choice of few-shot examples.
std::set<std::string> word_set(const std::string& text) {
  std::set<std::string> words;
  std::string word;
  for (char c : text) {
    if (std::isalnum(static_cast<unsigned char>(c)) != 0) {
      word += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else if (!word.empty()) {
      words.insert(word);
      word.clear();
    }
  }
  if (!word.empty()) words.insert(word);
  return words;
}

double jaccard(const std::set<std::string>& a, const std::set<std::string>& b) {
  std::size_t common = 0;
  for (const auto& w : a) common += b.count(w);
  const std::size_t all = a.size() + b.size() - common;
  return all == 0 ? 0.0 : double(common) / double(all);
}

// One steering setting of a batch: a cache edit (vector + params) or none.
struct Setting {
  const SteeringVector* vector = nullptr;
  SteeringParams params;
  std::optional<Token> offset;  // decoded after the prompt (with or without a vector)
};

// Everything an evaluation needs besides the items' results.
class Evaluator {
 public:
  Evaluator(std::shared_ptr<const Model> model, const EvalOptions& o)
      : model_(std::move(model)), o_(o) {
    items_ = load_eval_items(o.task, o.data, o.limit);
    if (o.method == Method::FewShot) load_fewshot_pool();
    for (std::size_t i = 0; i < items_.size(); ++i) prompts_.push_back(render_item(i));
    std::size_t longest = 0;
    for (const auto& p : prompts_) longest = std::max(longest, p.tokens.size());
    suffix_ = model_->tokenize(kExtractionSuffix, false, false);
    per_seq_ =
        static_cast<std::uint32_t>(longest + 2 + static_cast<std::size_t>(o.generation.n_predict) +
                                   suffix_.size() + kExtractionMaxNewTokens + 8);
  }

  const std::vector<EvalItem>& items() const { return items_; }
  const Model& model() const { return *model_; }
  const std::string& prompt_text(std::size_t i) const { return prompts_[i].text; }
  const std::vector<Token>& prompt_tokens(std::size_t i) const { return prompts_[i].tokens; }
  std::uint32_t per_seq() const { return per_seq_; }

  // per_seq: cells each sequence may need (0: an evaluation prompt plus generation).
  Session make_session(std::uint32_t n_seq, bool capture = false, std::uint32_t per_seq = 0) const {
    SessionParams sp;
    sp.n_seq = n_seq;
    sp.n_ctx = n_seq * (per_seq > 0 ? per_seq : per_seq_);
    sp.n_batch = std::min<std::uint32_t>(512, sp.n_ctx);
    sp.n_threads = o_.n_threads;
    sp.capture_residual = capture;
    return Session(model_, sp);
  }

  // The contrastive pairs of the extraction (first n_pairs trace rows, shots neighbours).
  std::vector<ContrastivePair> contrastive_pairs(bool cot) const {
    if (o_.traces.empty()) {
      throw Error(ErrorCode::InvalidArgument, "--traces is required to extract a steering vector");
    }
    Traces traces = load_traces(o_.traces, trace_format_of(o_.task));
    if (traces.rows.empty()) {
      throw Error(ErrorCode::InvalidArgument, "traces file " + o_.traces + " holds no rows");
    }
    if (traces.rows.size() < o_.n_pairs) {
      throw Error(ErrorCode::InvalidArgument,
                  "traces file " + o_.traces + " holds " + std::to_string(traces.rows.size()) +
                      " rows, fewer than --pairs " + std::to_string(o_.n_pairs));
    }
    traces.rows.resize(o_.n_pairs);
    if (o_.shots >= traces.rows.size()) {
      throw Error(ErrorCode::InvalidArgument, "--shots " + std::to_string(o_.shots) +
                                                  " needs more than that many pairs (--pairs " +
                                                  std::to_string(o_.n_pairs) + ")");
    }
    const NeighbourMap neighbours =
        o_.fewshot_map.empty() ? lexical_neighbours(traces.rows, o_.shots)
                               : neighbours_from_map_file(o_.fewshot_map, traces.rows, o_.shots);
    ContrastiveOptions co;
    co.cot_prefix = cot ? std::string(kCotPrefix) : "";
    co.chat_template = o_.prompt.chat_template;
    co.family = o_.prompt.family;
    traces_sha_ = traces.sha256;
    return build_contrastive_pairs(*model_, traces.rows, neighbours, co);
  }
  const std::string& traces_sha() const { return traces_sha_; }

  // Runs the items `indices` under every setting; results[s][j] for setting s, item indices[j].
  std::vector<std::vector<ItemResult>> run_batch(Session& session,
                                                 const std::vector<std::size_t>& indices,
                                                 const std::vector<Setting>& settings,
                                                 const std::function<void(Session&)>& before_tail) {
    std::vector<GenerationRequest> requests;
    for (std::size_t s = 0; s < settings.size(); ++s) {
      for (std::size_t j = 0; j < indices.size(); ++j) {
        GenerationRequest r;
        r.seq = static_cast<SeqId>(s * indices.size() + j);
        r.prompt = prompts_[indices[j]].tokens;
        r.steering = settings[s].vector;
        r.steering_params = settings[s].params;
        r.steering_params.offset_token = settings[s].offset;
        requests.push_back(r);
      }
    }
    GenerationParams gp = o_.generation;
    gp.before_tail = before_tail;
    const std::vector<Generation> out = generate(session, requests, gp);
    std::vector<ItemResult> flat;
    for (std::size_t r = 0; r < requests.size(); ++r) {
      const std::size_t i = indices[r % indices.size()];
      ItemResult res;
      res.index = i;
      res.id = items_[i].id;
      res.prompt = prompts_[i].text;
      res.response = out[r].text;
      res.target = items_[i].target;
      res.n_tokens = static_cast<std::int32_t>(out[r].tokens.size());
      res.ttft_ms = out[r].ttft_ms;
      res.n_steps = count_reasoning_steps(o_.task, res.response);
      res.reasoning = res.n_steps > 0;
      flat.push_back(std::move(res));
    }
    if (is_multiple_choice(o_.task)) {
      score_choices(session, requests, out, flat);
    } else {
      for (ItemResult& res : flat) res.extracted = extract_gsm8k_answer(res.response);
    }
    std::vector<std::vector<ItemResult>> results(settings.size());
    for (std::size_t r = 0; r < flat.size(); ++r) {
      flat[r].correct = is_correct(flat[r].extracted, flat[r].target);
      results[r / indices.size()].push_back(std::move(flat[r]));
    }
    return results;
  }

 private:
  struct Prompt {
    std::string text;
    std::vector<Token> tokens;
  };

  std::string render(const std::vector<ChatMessage>& messages) const {
    return o_.prompt.family ? render_reference_prompt(*o_.prompt.family, messages, true)
                            : model_->apply_chat_template(messages, true, o_.prompt.chat_template);
  }

  Prompt render_item(std::size_t i) const {
    std::vector<ChatMessage> messages;
    if (o_.method == Method::FewShot) {
      for (std::size_t j : fewshot_examples(i)) {
        messages.push_back({"user", pool_[j].question});
        messages.push_back({"assistant", positive_answer(pool_[j])});
      }
    }
    messages.push_back({"user", items_[i].question});
    Prompt p;
    p.text = render(messages);
    if (o_.method == Method::Cot || o_.method == Method::CacheCot) p.text += kCotPrefix;
    p.tokens = model_->tokenize_prompt(p.text);
    if (p.tokens.empty()) {
      throw Error(ErrorCode::InvalidArgument, "item " + items_[i].id + " renders to no tokens");
    }
    return p;
  }

  void load_fewshot_pool() {
    if (o_.traces.empty()) {
      throw Error(ErrorCode::InvalidArgument, "--method fewshot needs --traces (the examples)");
    }
    Traces traces = load_traces(o_.traces, trace_format_of(o_.task));
    if (traces.rows.size() > o_.n_pairs) traces.rows.resize(o_.n_pairs);
    if (traces.rows.size() < o_.shots) {
      throw Error(ErrorCode::InvalidArgument,
                  "--shots " + std::to_string(o_.shots) + " is larger than the example pool (" +
                      std::to_string(traces.rows.size()) + " trace rows)");
    }
    pool_ = std::move(traces.rows);
    for (const auto& row : pool_) pool_words_.push_back(word_set(row.question));
  }

  // The k pool rows most similar to item i (Jaccard of word sets; ties: lower index first),
  // least similar first so that the most similar example sits next to the question.
  std::vector<std::size_t> fewshot_examples(std::size_t i) const {
    const auto words = word_set(items_[i].question);
    std::vector<std::pair<double, std::size_t>> scored;
    for (std::size_t j = 0; j < pool_.size(); ++j) {
      if (pool_[j].question == items_[i].question) continue;  // never the question itself
      scored.emplace_back(-jaccard(words, pool_words_[j]), j);
    }
    const std::size_t k = std::min(o_.shots, scored.size());
    std::partial_sort(scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(k),
                      scored.end());
    std::vector<std::size_t> out;
    for (std::size_t j = k; j-- > 0;) out.push_back(scored[j].second);
    return out;
  }

  // method.md §3.3: unsteered 10-token continuation after "\nSo the correct choice is", the
  // regex cascade, and the forced one-token choice for "[invalid]" items. CAA's control vector
  // stays on (the reference's hook stays active); cache edits are gone (sequences restart).
  // organism-choice first takes the organism's own "The answer is X" (organism_choice_answer);
  // only responses without one go through the reference's steps.
  void score_choices(Session& session, const std::vector<GenerationRequest>& requests,
                     const std::vector<Generation>& out, std::vector<ItemResult>& flat) {
    std::vector<std::size_t> pending;
    for (std::size_t r = 0; r < flat.size(); ++r) {
      if (o_.task == Task::OrganismChoice)
        flat[r].extracted = organism_choice_answer(flat[r].response);
      if (flat[r].extracted.empty()) pending.push_back(r);
    }
    if (pending.empty()) return;
    std::vector<std::vector<Token>> conts(pending.size());  // the requests' prompts point here
    std::vector<GenerationRequest> cont_requests;
    for (std::size_t p = 0; p < pending.size(); ++p) {
      const std::size_t r = pending[p];
      std::vector<Token>& t = conts[p];
      t.assign(requests[r].prompt.begin(), requests[r].prompt.end());
      if (requests[r].steering_params.offset_token)
        t.push_back(*requests[r].steering_params.offset_token);
      t.insert(t.end(), out[r].tokens.begin(), out[r].tokens.end());
      while (t.size() > requests[r].prompt.size() && model_->is_eog(t.back())) t.pop_back();
      t.insert(t.end(), suffix_.begin(), suffix_.end());
      GenerationRequest c;
      c.seq = requests[r].seq;
      c.prompt = t;
      cont_requests.push_back(c);
    }
    GenerationParams gp = o_.generation;
    gp.n_predict = kExtractionMaxNewTokens;
    gp.sampling = SamplingParams{};
    gp.before_tail = nullptr;
    const std::vector<Generation> ext = generate(session, cont_requests, gp);
    for (std::size_t p = 0; p < pending.size(); ++p) {
      ItemResult& item = flat[pending[p]];
      const std::string continuation = item.response + std::string(kExtractionSuffix) + ext[p].text;
      item.extracted = extract_choice(continuation);
      if (is_invalid(item.extracted)) {
        item.extracted =
            forced_choice(session, requests[pending[p]].seq, item.prompt, continuation);
        item.forced = true;
      }
    }
  }

  std::string forced_choice(Session& session, SeqId seq, const std::string& prompt,
                            const std::string& continuation) {
    if (candidates_.empty()) {
      for (std::string_view c : kForcedChoiceCandidates) {
        const auto ids = model_->tokenize(c, false, false);
        if (!ids.empty()) candidates_.emplace_back(ids.front(), std::string(c));
      }
    }
    const std::vector<Token> tokens =
        model_->tokenize(forced_choice_input(prompt, continuation), false, true);
    session.clear_sequence(seq);
    session.decode(seq, tokens, true);
    const auto logits = session.logits(seq);
    std::size_t best = 0;
    for (std::size_t c = 1; c < candidates_.size(); ++c) {
      if (logits[static_cast<std::size_t>(candidates_[c].first)] >
          logits[static_cast<std::size_t>(candidates_[best].first)]) {
        best = c;
      }
    }
    std::string letter = candidates_[best].second;
    letter.erase(std::remove(letter.begin(), letter.end(), ' '), letter.end());
    return letter;
  }

  std::shared_ptr<const Model> model_;
  const EvalOptions& o_;
  std::vector<EvalItem> items_;
  std::vector<Prompt> prompts_;
  std::vector<TraceRow> pool_;
  std::vector<std::set<std::string>> pool_words_;
  std::vector<Token> suffix_;
  std::vector<std::pair<Token, std::string>> candidates_;
  std::uint32_t per_seq_ = 0;
  mutable std::string traces_sha_;
};

std::uint32_t longest_pair(const std::vector<ContrastivePair>& pairs) {
  std::size_t longest = 0;
  for (const auto& p : pairs) longest = std::max({longest, p.positive.size(), p.negative.size()});
  return static_cast<std::uint32_t>(longest + 4);
}

// Mean residual difference (positive - negative) per layer at the last prompt token.
std::vector<std::vector<float>> extract_residual_vector(const Evaluator& ev,
                                                        const std::vector<ContrastivePair>& pairs,
                                                        const EvalOptions& o) {
  Session session = ev.make_session(1, true, longest_pair(pairs));
  std::vector<std::vector<double>> sum;
  for (std::size_t p = 0; p < pairs.size(); ++p) {
    const ContrastivePair& pair = pairs[p];
    if (o.extraction_progress) o.extraction_progress(p, pairs.size());
    for (int sign : {1, -1}) {
      session.clear();
      session.decode(0, sign > 0 ? pair.positive : pair.negative, true);
      const auto rows = session.last_residual();
      sum.resize(rows.size());
      for (std::size_t l = 0; l < rows.size(); ++l) {
        sum[l].resize(rows[l].size(), 0.0);
        for (std::size_t j = 0; j < rows[l].size(); ++j) sum[l][j] += sign * double(rows[l][j]);
      }
    }
  }
  if (o.extraction_progress) o.extraction_progress(pairs.size(), pairs.size());
  std::vector<std::vector<float>> mean(sum.size());
  for (std::size_t l = 0; l < sum.size(); ++l) {
    for (double x : sum[l]) mean[l].push_back(static_cast<float>(x / double(pairs.size())));
  }
  return mean;
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
    if (o.method == Method::Caa) info["kind"] = "residual (l_out)";
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
  for (auto& row : out)
    for (float& x : row) x *= c;
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
ordered_json model_file_identity(const std::string& path) {
  constexpr std::uintmax_t kSpan = 4u << 20;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::Io, "cannot read model file '" + path + "'");
  const std::uintmax_t size = std::filesystem::file_size(path);
  std::uint64_t h = 0xcbf29ce484222325ULL;
  std::vector<char> buffer;
  auto hash_span = [&](std::uintmax_t from, std::uintmax_t n) {
    buffer.resize(static_cast<std::size_t>(n));
    in.seekg(static_cast<std::streamoff>(from));
    in.read(buffer.data(), static_cast<std::streamsize>(n));
    if (!in) throw Error(ErrorCode::Io, "cannot read model file '" + path + "'");
    for (const char c : buffer) {
      h ^= static_cast<unsigned char>(c);
      h *= 0x100000001b3ULL;
    }
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
  if (!o.model_path.empty()) c["model_file"] = model_file_identity(o.model_path);
  if (o.task == Task::OrganismChoice) c["choice_scoring"] = "organism_answer_first";
  if (o.method == Method::FewShot || o.method == Method::Cache || o.method == Method::CacheCot ||
      o.method == Method::Caa) {
    c["traces"] = o.traces;
    c["fewshot_map"] = o.fewshot_map;
    c["pairs"] = o.n_pairs;
    c["shots"] = o.shots;
  }
  if (o.method == Method::Cache || o.method == Method::CacheCot) {
    c["vector"] = o.vector_path;
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
  if (!o.selection.is_null()) c["selection"] = o.selection;
  return c;
}

// A result JSON (sweep, diagnosis), its folder created when missing.
void write_json_file(const std::string& path, const ordered_json& j) {
  if (const auto parent = fs::path(path).parent_path(); !parent.empty()) {
    fs::create_directories(parent);
  }
  write_file_atomic(path, j.dump(2) + "\n");
}

// Results already in items.jsonl; a torn last line (a kill mid-write) is cut off.
std::map<std::size_t, ItemResult> load_done(const std::string& path) {
  std::map<std::size_t, ItemResult> done;
  if (!fs::exists(path)) return done;
  const std::string text = read_text_file(path);
  std::size_t good_end = 0, start = 0, line_no = 0;
  while (start < text.size()) {
    const std::size_t nl = text.find('\n', start);
    if (nl == std::string::npos) break;  // torn line
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
  if (good_end != text.size()) fs::resize_file(path, good_end);
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

}  // namespace

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
      if (matched == "qwen2") o.steering.coef_v = 1.0f;
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
      if (matched == "llama-3.2-3b") o.n_pairs = 200;
      if (matched == "llama-3.2-1b" || matched == "llama-3.1-8b" || matched == "phi-4-mini")
        o.steering.coef_v = 8;
      if (matched == "smollm2") o.steering.coef_v = 4;
      if (matched == "qwen2") {
        o.steering.coef_v = 8;
        o.n_pairs = 200;
      }
    } else if (o.task == Task::Piqa) {
      if (matched == "llama-3.2-1b" || matched == "llama-3.1-8b" || matched == "phi-4-mini")
        o.steering.coef_v = 8;
      if (matched == "llama-3.2-3b") {
        o.n_pairs = 300;
        o.steering.coef_v = 6;
      }
      if (matched == "smollm2" || matched == "qwen2") o.steering.coef_v = 10;
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

ordered_json ItemResult::to_json() const {
  return ordered_json{{"index", index},         {"id", id},
                      {"prompt", prompt},       {"response", response},
                      {"extracted", extracted}, {"target", target},
                      {"correct", correct},     {"n_tokens", n_tokens},
                      {"n_steps", n_steps},     {"reasoning", reasoning},
                      {"forced", forced},       {"ttft_ms", std::round(ttft_ms * 100.0) / 100.0}};
}

ItemResult ItemResult::from_json(const ordered_json& j) {
  ItemResult r;
  r.index = j.at("index").get<std::size_t>();
  r.id = j.at("id").get<std::string>();
  r.prompt = j.at("prompt").get<std::string>();
  r.response = j.at("response").get<std::string>();
  r.extracted = j.at("extracted").get<std::string>();
  r.target = j.at("target").get<std::string>();
  r.correct = j.at("correct").get<bool>();
  r.n_tokens = j.at("n_tokens").get<std::int32_t>();
  r.n_steps = j.at("n_steps").get<int>();
  r.reasoning = j.at("reasoning").get<bool>();
  r.forced = j.at("forced").get<bool>();
  r.ttft_ms = j.value("ttft_ms", 0.0);
  return r;
}

int count_reasoning_steps(Task task, const std::string& response) {
  if (is_organism(task)) {
    const std::size_t at = response.rfind("The answer is");
    const std::string before = response.substr(0, at == std::string::npos ? response.size() : at);
    int n = 0;
    std::size_t start = 0;
    while (start < before.size()) {
      std::size_t stop = before.find(". ", start);
      if (stop == std::string::npos) stop = before.size();
      if (before.substr(start, stop - start).find(" = ") != std::string::npos) ++n;
      start = stop + 2;
    }
    return n;
  }
  const std::string low = lower(response);
  const std::size_t at = low.rfind("answer is");
  std::string before = response.substr(0, at == std::string::npos ? response.size() : at);
  if (at != std::string::npos) {
    // Drop the start of the answer sentence itself ("So the").
    const std::size_t end = before.find_last_of(".!?\n");
    before = end == std::string::npos ? "" : before.substr(0, end + 1);
  }
  int n = 0;
  std::string sentence;
  auto flush = [&] {
    if (std::any_of(sentence.begin(), sentence.end(),
                    [](unsigned char c) { return std::isalnum(c) != 0; })) {
      ++n;
    }
    sentence.clear();
  };
  for (std::size_t i = 0; i < before.size(); ++i) {
    const char c = before[i];
    sentence += c;
    if (c == '\n' ||
        ((c == '.' || c == '!' || c == '?') && (i + 1 == before.size() || before[i + 1] == ' '))) {
      flush();
    }
  }
  flush();
  // Without an answer statement the last sentence is the answer itself.
  if (at == std::string::npos && n > 0) --n;
  return n;
}

std::pair<double, double> wilson_interval(std::size_t correct, std::size_t n) {
  if (n == 0) return {0.0, 0.0};
  const double z = 1.959963984540054, p = double(correct) / double(n), nn = double(n);
  const double centre = (p + z * z / (2 * nn)) / (1 + z * z / nn);
  const double half = z * std::sqrt(p * (1 - p) / nn + z * z / (4 * nn * nn)) / (1 + z * z / nn);
  return {100.0 * std::max(0.0, centre - half), 100.0 * std::min(1.0, centre + half)};
}

ordered_json summarize(const std::vector<ItemResult>& results) {
  std::size_t correct = 0, reasoning = 0, forced = 0;
  std::vector<std::int32_t> lengths;
  double total_tokens = 0, total_ttft = 0;
  for (const ItemResult& r : results) {
    total_ttft += r.ttft_ms;
    correct += r.correct ? 1 : 0;
    reasoning += r.reasoning ? 1 : 0;
    forced += r.forced ? 1 : 0;
    lengths.push_back(r.n_tokens);
    total_tokens += r.n_tokens;
  }
  const std::size_t n = results.size();
  auto sorted = lengths;
  std::sort(sorted.begin(), sorted.end());
  const double median = n == 0  ? 0.0
                        : n % 2 ? sorted[n / 2]
                                : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  const auto ci = wilson_interval(correct, n);
  auto r2 = [](double x) { return std::round(x * 100.0) / 100.0; };
  return ordered_json{{"n", n},
                      {"correct", correct},
                      {"accuracy", r2(n ? 100.0 * double(correct) / double(n) : 0.0)},
                      {"ci95", {r2(ci.first), r2(ci.second)}},
                      {"reasoning_rate", r2(n ? 100.0 * double(reasoning) / double(n) : 0.0)},
                      {"forced", forced},
                      {"mean_tokens", r2(n ? total_tokens / double(n) : 0.0)},
                      {"median_tokens", median},
                      {"mean_ttft_ms", r2(n ? total_ttft / double(n) : 0.0)},
                      {"lengths", lengths}};
}

ordered_json run_eval(const std::shared_ptr<const Model>& model, const EvalOptions& o) {
  if (o.out_dir.empty()) throw Error(ErrorCode::InvalidArgument, "--out is required");
  if (o.n_parallel < 1) throw Error(ErrorCode::InvalidArgument, "--parallel must be >= 1");
  const auto start = std::chrono::steady_clock::now();
  Evaluator ev(model, o);
  // A vector file of another model is refused before anything is written.
  if (!o.vector_path.empty() && (o.method == Method::Cache || o.method == Method::CacheCot)) {
    const std::string m = load_steering_vector(o.vector_path).model.mismatch(model->fingerprint());
    if (!m.empty()) {
      throw Error(ErrorCode::Format,
                  "steering vector " + o.vector_path + " was made for another model: " + m);
    }
  }
  fs::create_directories(o.out_dir);
  const std::string config_path = o.out_dir + "/config.json";
  const std::string items_path = o.out_dir + "/items.jsonl";
  ordered_json config = config_json(o, *model);
  const std::string config_text = config.dump(2) + "\n";
  if (fs::exists(config_path)) {
    if (read_text_file(config_path) != config_text) {
      throw Error(ErrorCode::InvalidArgument, "output folder " + o.out_dir +
                                                  " holds a run with another configuration "
                                                  "(config.json differs); choose another --out");
    }
  } else {
    write_file_atomic(config_path, config_text);
  }
  std::map<std::size_t, ItemResult> done = load_done(items_path);

  // Vectors.
  std::optional<SteeringVector> vector;
  std::vector<std::vector<float>> caa;
  ordered_json vector_info = nullptr;
  const std::size_t total = ev.items().size();
  const bool pending = done.size() < total;
  if (pending && (o.method == Method::Cache || o.method == Method::CacheCot)) {
    ordered_json unused;
    vector = cache_vector(ev, o, unused);
  }
  if (pending && o.method == Method::Caa) {
    caa = extract_residual_vector(ev, ev.contrastive_pairs(false), o);
  }
  if (o.method == Method::Cache || o.method == Method::CacheCot || o.method == Method::Caa) {
    vector_info = vector_provenance(o);
  }

  Setting setting;
  if (vector) {
    setting.vector = &*vector;
    setting.params = o.steering;
  }
  setting.offset = o.steering.offset_token;
  if (o.method != Method::Cache && o.method != Method::CacheCot) setting.offset.reset();
  std::function<void(Session&)> before_tail;
  std::int32_t first = 0, last = 0;
  if (o.method == Method::Caa) {
    first = resolve_caa_layer(o.caa.layer_first, *model);
    last = o.caa.layer_last >= 0 ? o.caa.layer_last : first;
    const auto directions = scaled(caa, o.caa.coef);
    before_tail = [directions, first, last](Session& s) {
      s.set_control_vector(directions, first, last);
    };
  }

  Session session = ev.make_session(o.n_parallel);
  if (o.progress) o.progress(done.size(), total);  // the start: resumed items are not new work
  AppendFile items_out(items_path);
  for (std::size_t begin = 0; begin < total; begin += o.n_parallel) {
    std::vector<std::size_t> batch;
    for (std::size_t i = begin; i < std::min(total, begin + o.n_parallel); ++i) {
      if (!done.count(i)) batch.push_back(i);
    }
    if (batch.empty()) continue;
    auto results = ev.run_batch(session, batch, {setting}, before_tail);
    if (o.method == Method::Caa) session.clear_control_vector();
    std::string lines;
    for (const ItemResult& r : results[0]) lines += journal_line(r.to_json());
    items_out.append(lines);
    for (ItemResult& r : results[0]) done[r.index] = as_journalled(r);
    if (o.progress) o.progress(done.size(), total);
  }
  std::vector<ItemResult> all;
  for (auto& [i, r] : done) all.push_back(r);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ordered_json summary{{"kind", "kvsteer-eval-summary"},
                       {"version", 1},
                       {"task", task_name(o.task)},
                       {"method", method_name(o.method)}};
  std::string label = method_name(o.method);
  if (o.method == Method::Cache || o.method == Method::CacheCot) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), " c_k=%g c_v=%g", double(o.steering.coef_k),
                  double(o.steering.coef_v));
    label += buf;
  } else if (o.method == Method::Caa) {
    label += " L" + std::to_string(first) + (last != first ? "-" + std::to_string(last) : "") +
             " c=" + nlohmann::json(o.caa.coef).dump();
  }
  summary["label"] = label;
  summary.update(summarize(all));
  summary["elapsed_s"] = std::round(elapsed * 10) / 10;
  summary["items_per_s"] =
      elapsed > 0 ? std::round(100.0 * double(all.size()) / elapsed) / 100.0 : 0.0;
  summary["model"] = {{"path", o.model_path},
                      {"fingerprint", fingerprint_text(model->fingerprint())}};
  summary["vector"] = vector_info;
  summary["config"] = config;
  summary["commit"] = KVSTEER_GIT_COMMIT;
  write_file_atomic(o.out_dir + "/summary.json", summary.dump(2) + "\n");
  return summary;
}

namespace {

// The per-item journal of a sweep, beside its JSON (`<out>.items.jsonl`): a sweep on a real model
// runs for hours, so every finished batch is appended and the same command resumes where it was
// killed. The first line names the configuration and the grid; a journal of another sweep is
// refused rather than mixed in. Item lines are eval's item records with the setting's index.
class SweepJournal {
 public:
  SweepJournal(std::string path, const ordered_json& header, std::size_t n_settings)
      : path_(std::move(path)), done_(n_settings) {
    if (path_.empty()) return;
    const std::string head = header.dump(-1) + "\n";
    if (!fs::exists(path_)) {
      write_file_atomic(path_, head);
    } else {
      load(head);
    }
    out_.emplace(path_);
  }

  bool has(std::size_t setting, std::size_t item) const { return done_[setting].count(item) != 0; }

  bool has_all(std::size_t item) const {
    for (const auto& d : done_)
      if (!d.count(item)) return false;
    return true;
  }

  std::size_t n_done(std::size_t setting) const { return done_[setting].size(); }

  void add(std::size_t setting, std::vector<ItemResult> results) {
    std::vector<std::vector<ItemResult>> by_setting(done_.size());
    by_setting[setting] = std::move(results);
    add_all(std::move(by_setting));
  }

  // One batch of every setting in one append: a kill between settings would otherwise leave the
  // batch done for some settings only, and the resumed run would decode it again and journal
  // those settings' items twice.
  void add_all(std::vector<std::vector<ItemResult>> by_setting) {
    std::string lines;
    for (std::size_t s = 0; s < by_setting.size(); ++s) {
      for (const ItemResult& r : by_setting[s]) {
        ordered_json j{{"setting", s}};
        j.update(r.to_json());
        lines += journal_line(j);
      }
    }
    // Journal first, then memory: what the summary counts is what a resumed run would read.
    if (out_) out_->append(lines);
    for (std::size_t s = 0; s < by_setting.size(); ++s) {
      for (const ItemResult& r : by_setting[s]) done_[s][r.index] = as_journalled(r);
    }
  }

  std::vector<ItemResult> results(std::size_t setting) const {
    std::vector<ItemResult> all;
    for (const auto& [i, r] : done_[setting]) all.push_back(r);
    return all;
  }

 private:
  void load(const std::string& head) {
    const std::string text = read_text_file(path_);
    const std::size_t first = text.find('\n');
    if (first == std::string::npos || text.compare(0, first + 1, head) != 0) {
      throw Error(ErrorCode::InvalidArgument,
                  path_ +
                      " holds a sweep with another configuration or grid; remove it or "
                      "choose another -o");
    }
    std::size_t good_end = first + 1, start = first + 1, line_no = 1;
    while (start < text.size()) {
      const std::size_t nl = text.find('\n', start);
      if (nl == std::string::npos) break;  // torn line: a kill mid-write
      ++line_no;
      try {
        const ordered_json j = ordered_json::parse(text.substr(start, nl - start));
        const auto setting = j.at("setting").get<std::size_t>();
        if (setting >= done_.size()) throw std::runtime_error("setting index out of range");
        ItemResult r = ItemResult::from_json(j);
        done_[setting][r.index] = std::move(r);
      } catch (const std::exception& e) {
        throw Error(ErrorCode::Format,
                    path_ + ": line " + std::to_string(line_no) + ": " + e.what());
      }
      good_end = start = nl + 1;
    }
    if (good_end != text.size()) fs::resize_file(path_, good_end);
  }

  std::string path_;
  std::vector<std::map<std::size_t, ItemResult>> done_;
  std::optional<AppendFile> out_;
};

ordered_json setting_summary(ordered_json setting, const std::vector<ItemResult>& results) {
  auto sum = summarize(results);
  sum.erase("lengths");
  setting.update(sum);
  return setting;
}

}  // namespace

ordered_json run_sweep(const std::shared_ptr<const Model>& model, const SweepOptions& so) {
  const EvalOptions& o = so.base;
  if (o.method != Method::Cache && o.method != Method::CacheCot && o.method != Method::Caa) {
    throw Error(ErrorCode::InvalidArgument, "kvsteer sweep runs --method cache, cache+cot or caa");
  }
  if (o.method == Method::Caa && (so.caa_layers.empty() || so.caa_coefs.empty())) {
    throw Error(ErrorCode::InvalidArgument, "a CAA sweep needs --caa-layers and --caa-coefs");
  }
  Evaluator ev(model, o);
  const std::size_t total = ev.items().size();
  // The grid in the order of the output's settings.
  ordered_json grid = ordered_json::array();
  if (o.method == Method::Caa) {
    for (std::int32_t layer : so.caa_layers)
      for (float c : so.caa_coefs) grid.push_back({{"layer", layer}, {"c", c}});
  } else {
    for (const std::string& layers : so.layers)
      for (float ck : so.coef_k)
        for (float cv : so.coef_v) grid.push_back({{"c_k", ck}, {"c_v", cv}, {"layers", layers}});
  }
  if (grid.empty()) {
    // Cache sweeps share each question's batch among the settings: none would divide by zero.
    throw Error(ErrorCode::InvalidArgument,
                "the sweep grid is empty: give at least one value of every grid flag");
  }
  const ordered_json config = config_json(o, *model);
  if (!so.out.empty()) {
    if (const auto parent = fs::path(so.out).parent_path(); !parent.empty()) {
      fs::create_directories(parent);
    }
  }
  SweepJournal journal(
      so.out.empty() ? "" : so.out + ".items.jsonl",
      {{"kind", "kvsteer-sweep-items"}, {"version", 1}, {"config", config}, {"grid", grid}},
      grid.size());
  const auto start = std::chrono::steady_clock::now();
  if (o.method == Method::Caa) {
    std::size_t s = 0;
    bool pending = false;
    for (s = 0; s < grid.size(); ++s) pending = pending || journal.n_done(s) < total;
    std::vector<std::vector<float>> caa;
    if (pending) caa = extract_residual_vector(ev, ev.contrastive_pairs(false), o);
    std::optional<Session> session;
    if (o.progress) o.progress(0, grid.size());
    for (s = 0; s < grid.size(); ++s) {
      const auto layer = grid[s].at("layer").get<std::int32_t>();
      const auto directions = scaled(caa, grid[s].at("c").get<float>());
      auto before_tail = [&directions, layer](Session& sess) {
        sess.set_control_vector(directions, layer, layer);
      };
      for (std::size_t begin = 0; begin < total; begin += o.n_parallel) {
        std::vector<std::size_t> batch;
        for (std::size_t i = begin; i < std::min(total, begin + o.n_parallel); ++i)
          if (!journal.has(s, i)) batch.push_back(i);
        if (batch.empty()) continue;
        if (!session) session.emplace(ev.make_session(o.n_parallel));
        auto r = ev.run_batch(*session, batch, {Setting{}}, before_tail);
        session->clear_control_vector();
        journal.add(s, std::move(r[0]));
      }
      if (o.progress) o.progress(s + 1, grid.size());
    }
  } else {
    ordered_json vector_info;
    std::optional<SteeringVector> vector;
    std::vector<Setting> settings;
    // Each question's copies share one prefill; n_parallel bounds the sequences in flight.
    const std::size_t per_batch = std::max<std::size_t>(1, o.n_parallel / grid.size());
    std::optional<Session> session;
    std::size_t n_done = 0;
    for (std::size_t i = 0; i < total; ++i) n_done += journal.has_all(i) ? 1 : 0;
    if (o.progress) o.progress(n_done, total);
    for (std::size_t begin = 0; begin < total; begin += per_batch) {
      std::vector<std::size_t> batch;
      for (std::size_t i = begin; i < std::min(total, begin + per_batch); ++i)
        if (!journal.has_all(i)) batch.push_back(i);
      if (batch.empty()) continue;
      if (!vector) {
        vector = cache_vector(ev, o, vector_info);
        for (const auto& g : grid) {
          Setting st;
          st.vector = &*vector;
          st.params.coef_k = g.at("c_k").get<float>();
          st.params.coef_v = g.at("c_v").get<float>();
          st.params.layers_k = LayerSelection::parse(g.at("layers").get<std::string>());
          st.params.layers_v = st.params.layers_k;
          st.offset = o.steering.offset_token;
          settings.push_back(st);
        }
        session.emplace(ev.make_session(static_cast<std::uint32_t>(per_batch * grid.size())));
      }
      journal.add_all(ev.run_batch(*session, batch, settings, nullptr));
      n_done += batch.size();
      if (o.progress) o.progress(n_done, total);
    }
  }
  ordered_json settings_json = ordered_json::array();
  for (std::size_t s = 0; s < grid.size(); ++s)
    settings_json.push_back(setting_summary(grid[s], journal.results(s)));
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ordered_json out{{"kind", "kvsteer-sweep"},
                   {"version", 1},
                   {"task", task_name(o.task)},
                   {"method", method_name(o.method)},
                   {"n_items", total},
                   {"elapsed_s", std::round(elapsed * 10) / 10},
                   {"settings", settings_json},
                   {"config", config},
                   {"commit", KVSTEER_GIT_COMMIT}};
  if (!so.out.empty()) write_json_file(so.out, out);
  return out;
}

namespace {

// Means over prompts of the per-prompt figures of one steering setting.
class DiagnosisTally {
 public:
  DiagnosisTally(std::size_t n_layer, std::size_t n_head)
      : n_layer_(n_layer), n_head_(n_head), k_ratio_(n_layer), v_ratio_(n_layer) {
    for (auto* grid : {&tail_plain_, &tail_steered_, &follow_plain_, &follow_steered_, &tail_share_,
                       &follow_share_}) {
      grid->assign(n_layer, std::vector<Mean>(n_head));
    }
  }

  void add(const PromptDiagnosis& d) {
    ++n_;
    kl_.add(d.kl_first);
    diverged_ += d.first_divergence >= 0 ? 1 : 0;
    if (d.first_divergence >= 0) divergence_step_.add(d.first_divergence);
    recompute_error_ = std::max(recompute_error_, d.recompute_error);
    uniform_.add(1.0 / double(d.steered_pos + 2));  // the tail token sees steered_pos + 2 cells
    for (std::size_t l = 0; l < n_layer_; ++l) {
      k_ratio_[l].add(d.k_edit_ratio[l]);
      v_ratio_[l].add(d.v_edit_ratio[l]);
    }
    add_steps(d.attention_plain, tail_plain_, follow_plain_);
    add_steps(d.attention_steered, tail_steered_, follow_steered_);
    add_steps(d.v_contribution, tail_share_, follow_share_);
  }

  ordered_json effect() const {
    return {{"n_prompts", n_},
            {"kl_first", round6(kl_.value())},
            {"diverged_share", n_ == 0 ? 0.0 : round6(double(diverged_) / double(n_))},
            {"mean_divergence_step", round6(divergence_step_.value())}};
  }

  ordered_json layers() const {
    ordered_json out = ordered_json::array();
    for (std::size_t l = 0; l < n_layer_; ++l) {
      ordered_json heads = ordered_json::array();
      for (std::size_t h = 0; h < n_head_; ++h) {
        heads.push_back({{"head", h},
                         {"tail_plain", round6(tail_plain_[l][h].value())},
                         {"tail_steered", round6(tail_steered_[l][h].value())},
                         {"following_plain", round6(follow_plain_[l][h].value())},
                         {"following_steered", round6(follow_steered_[l][h].value())},
                         {"v_share_tail", round6(tail_share_[l][h].value())},
                         {"v_share_following", round6(follow_share_[l][h].value())}});
      }
      out.push_back({{"layer", l},
                     {"k_edit_ratio", round6(k_ratio_[l].value())},
                     {"v_edit_ratio", round6(v_ratio_[l].value())},
                     {"tail_plain", round6(head_mean(tail_plain_[l]))},
                     {"tail_steered", round6(head_mean(tail_steered_[l]))},
                     {"following_plain", round6(head_mean(follow_plain_[l]))},
                     {"following_steered", round6(head_mean(follow_steered_[l]))},
                     {"v_share_tail", round6(head_mean(tail_share_[l]))},
                     {"v_share_following", round6(head_mean(follow_share_[l]))},
                     {"heads", heads}});
    }
    return out;
  }

  double recompute_error() const { return recompute_error_; }
  double uniform() const { return uniform_.value(); }

 private:
  struct Mean {
    double sum = 0.0;
    std::size_t n = 0;
    void add(double x) {
      sum += x;
      ++n;
    }
    double value() const { return n == 0 ? 0.0 : sum / double(n); }
  };
  using Grid = std::vector<std::vector<Mean>>;  // [layer][head]

  static double round6(double x) { return std::round(x * 1e6) / 1e6; }
  static double head_mean(const std::vector<Mean>& heads) {
    double sum = 0.0;
    for (const Mean& m : heads) sum += m.value();
    return heads.empty() ? 0.0 : sum / double(heads.size());
  }
  // Step 0 (the tail token) and the mean over the following steps of one prompt.
  void add_steps(const std::vector<std::vector<std::vector<double>>>& steps, Grid& tail,
                 Grid& following) const {
    for (std::size_t l = 0; l < n_layer_ && !steps.empty(); ++l) {
      for (std::size_t h = 0; h < n_head_; ++h) {
        tail[l][h].add(steps[0][l][h]);
        if (steps.size() < 2) continue;
        double sum = 0.0;
        for (std::size_t t = 1; t < steps.size(); ++t) sum += steps[t][l][h];
        following[l][h].add(sum / double(steps.size() - 1));
      }
    }
  }

  std::size_t n_layer_, n_head_, n_ = 0, diverged_ = 0;
  Mean kl_, divergence_step_, uniform_;
  double recompute_error_ = 0.0;
  std::vector<Mean> k_ratio_, v_ratio_;
  Grid tail_plain_, tail_steered_, follow_plain_, follow_steered_, tail_share_, follow_share_;
};

}  // namespace

ordered_json run_diagnosis(const std::shared_ptr<const Model>& model, const DiagnoseOptions& d) {
  const EvalOptions& o = d.base;
  if (o.method != Method::Cache && o.method != Method::CacheCot) {
    throw Error(ErrorCode::InvalidArgument, "kvsteer diagnose runs --method cache or cache+cot");
  }
  if (d.n_follow < 1) throw Error(ErrorCode::InvalidArgument, "--follow must be >= 1");
  for (float scale : d.scales) {
    if (!std::isfinite(scale))
      throw Error(ErrorCode::InvalidArgument, "--scales holds a non-finite value");
  }
  const auto start = std::chrono::steady_clock::now();
  Evaluator ev(model, o);
  ordered_json vector_info;
  const SteeringVector vector = cache_vector(ev, o, vector_info);
  const ModelFingerprint& fp = model->fingerprint();
  std::size_t longest = 0;
  for (std::size_t i = 0; i < ev.items().size(); ++i)
    longest = std::max(longest, ev.prompt_tokens(i).size());
  SessionParams sp;
  sp.n_seq = 2;
  sp.n_ctx = static_cast<std::uint32_t>(2 * (longest + static_cast<std::size_t>(d.n_follow) + 8));
  sp.n_batch = std::min<std::uint32_t>(512, sp.n_ctx);
  sp.n_threads = o.n_threads;
  sp.capture_tensors = diagnosis_capture_tensors();
  Session session(model, sp);

  // Settings: the given one, its scaled copies, and each selected layer alone.
  struct Named {
    std::string kind;
    double value;
    SteeringParams params;
  };
  std::vector<Named> settings{{"base", 1.0, o.steering}};
  for (float scale : d.scales) {
    SteeringParams p = o.steering;
    p.coef_k *= scale;
    p.coef_v *= scale;
    settings.push_back({"scale", scale, p});
  }
  if (d.per_layer) {
    for (std::int32_t l = 0; l < fp.n_layer; ++l) {
      const bool k = o.steering.layers_k.contains(l) && o.steering.coef_k != 0.0f;
      const bool v = o.steering.layers_v.contains(l) && o.steering.coef_v != 0.0f;
      if (!k && !v) continue;
      SteeringParams p = o.steering;
      p.layers_k = p.layers_v = LayerSelection::parse(std::to_string(l));
      if (!k) p.coef_k = 0.0f;
      if (!v) p.coef_v = 0.0f;
      settings.push_back({"layer", double(l), p});
    }
  }
  const std::size_t total = ev.items().size();
  if (o.progress) o.progress(0, ev.items().size());
  std::vector<DiagnosisTally> tallies(
      settings.size(),
      DiagnosisTally(static_cast<std::size_t>(fp.n_layer), static_cast<std::size_t>(fp.n_head)));
  for (std::size_t i = 0; i < total; ++i) {
    for (std::size_t s = 0; s < settings.size(); ++s) {
      DiagnosisParams dp;
      dp.steering = settings[s].params;
      dp.n_follow = d.n_follow;
      tallies[s].add(diagnose_prompt(session, ev.prompt_tokens(i), vector, dp));
    }
    if (o.progress) o.progress(i + 1, total);
  }
  double recompute_error = 0.0;
  for (const auto& t : tallies) recompute_error = std::max(recompute_error, t.recompute_error());
  ordered_json scales = ordered_json::array(), per_layer = ordered_json::array();
  for (std::size_t s = 1; s < settings.size(); ++s) {
    ordered_json j = settings[s].kind == "scale" ? ordered_json{{"scale", settings[s].value},
                                                                {"c_k", settings[s].params.coef_k},
                                                                {"c_v", settings[s].params.coef_v}}
                                                 : ordered_json{{"layer", int(settings[s].value)}};
    j.update(tallies[s].effect());
    if (settings[s].kind == "scale") {
      // The attention the edited cell draws, and the V share, averaged over layers and heads.
      double attn = 0.0, share = 0.0;
      const ordered_json layers = tallies[s].layers();
      for (const auto& l : layers) {
        attn += l.at("tail_steered").get<double>();
        share += l.at("v_share_tail").get<double>();
      }
      j["tail_steered_attention"] = attn / double(layers.size());
      j["v_share_tail"] = share / double(layers.size());
      scales.push_back(j);
    } else {
      per_layer.push_back(j);
    }
  }
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ordered_json out{{"kind", "kvsteer-diagnosis"},
                   {"version", 1},
                   {"task", task_name(o.task)},
                   {"method", method_name(o.method)},
                   {"n_prompts", total},
                   {"n_follow", d.n_follow},
                   {"steering", steering_json(o.steering)},
                   {"vector", vector_info},
                   {"model", {{"path", o.model_path}, {"fingerprint", fingerprint_text(fp)}}},
                   {"attention_recompute_error", recompute_error},
                   {"uniform_attention_tail", tallies[0].uniform()},
                   {"effect", tallies[0].effect()},
                   {"layers", tallies[0].layers()},
                   {"scales", scales},
                   {"per_layer", per_layer},
                   {"elapsed_s", std::round(elapsed * 10) / 10},
                   {"commit", KVSTEER_GIT_COMMIT}};
  if (!d.out.empty()) write_json_file(d.out, out);
  return out;
}

}  // namespace kvsteer::eval
