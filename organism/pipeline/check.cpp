#include "organism/pipeline/check.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <system_error>

#include "eval/runner.h"
#include "kvsteer/error.h"
#include "kvsteer/generation.h"
#include "kvsteer/session.h"
#include "kvsteer/steering.h"

namespace kvsteer::organism {
namespace {

using nlohmann::ordered_json;

constexpr PromptMode kModes[] = {PromptMode::ZeroShot, PromptMode::FewShotReasoned,
                                 PromptMode::FewShotDirect, PromptMode::ZeroShotCot};
constexpr Variant kVariants[] = {Variant::Numeric, Variant::Choice};

bool is_number(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Correct / total counters of one cell of the report.
struct Tally {
  int n = 0, correct = 0, reasoning = 0, well_formed = 0;
  int64_t tokens = 0;

  void add(const ResponseParse& p, bool ok, size_t n_tokens) {
    ++n;
    correct += ok ? 1 : 0;
    reasoning += p.reasoning ? 1 : 0;
    well_formed += p.well_formed ? 1 : 0;
    tokens += static_cast<int64_t>(n_tokens);
  }
  double accuracy() const { return n ? 100.0 * correct / n : 0.0; }
  double reasoning_rate() const { return n ? 100.0 * reasoning / n : 0.0; }
  ordered_json json() const {
    auto round1 = [](double x) { return std::round(x * 10.0) / 10.0; };
    return ordered_json{{"n", n},
                        {"accuracy", round1(accuracy())},
                        {"reasoning_rate", round1(reasoning_rate())},
                        {"well_formed_rate", round1(n ? 100.0 * well_formed / n : 0.0)},
                        {"mean_tokens", round1(n ? double(tokens) / n : 0.0)}};
  }
};

// Accuracy etc. of one mode x offset x variant run, overall, per n_ops and for 3-4 operations.
// Multiple choice also checks the choice scan (dataset.h choice_scan) of each response that has
// one: consistent when every line restates the value its label has in the query and judges it
// right against its reference, only the last line says "yes", and the answer names that line's
// label (independent of whether the arithmetic before it was right). Organism v2's single lookup
// step was consistent at chance (23 %).
struct RunTally {
  Tally all, hard;
  std::map<int, Tally> by_ops;
  int scans = 0, scans_consistent = 0;

  ordered_json json() const {
    ordered_json ops = ordered_json::object();
    for (const auto& [k, t] : by_ops) ops[std::to_string(k)] = t.json();
    ordered_json j{{"all", all.json()}, {"ops_3_4", hard.json()}, {"by_ops", ops}};
    if (scans > 0) {
      j["choice_scan"] = {
          {"n", scans}, {"consistent_rate", std::round(1000.0 * scans_consistent / scans) / 10.0}};
    }
    return j;
  }
};

}  // namespace

std::vector<ScanLine> parse_choice_scan(std::string_view text) {
  // The unsigned number at `at` and where it ends; {-1, at} when there is none.
  auto number_at = [&](size_t at) -> std::pair<int, size_t> {
    if (at >= text.size() || text[at] < '0' || text[at] > '9') return {-1, at};
    int value = 0;
    const auto [end, error] = std::from_chars(text.data() + at, text.data() + text.size(), value);
    if (error != std::errc()) return {-1, at};
    return {value, static_cast<size_t>(end - text.data())};
  };
  std::vector<ScanLine> lines;
  for (size_t at = text.find(": "); at != std::string_view::npos; at = text.find(": ", at + 1)) {
    if (at == 0 || text[at - 1] < 'A' || text[at - 1] > 'Z') continue;
    if (at >= 2 && text[at - 2] != ' ' && text[at - 2] != '\n') continue;
    const auto [value, value_end] = number_at(at + 2);
    if (value < 0 || text.substr(value_end, 4) != " vs ") continue;
    const auto [reference, reference_end] = number_at(value_end + 4);
    if (reference < 0) continue;
    const std::string_view rest = text.substr(reference_end);
    const bool yes = rest.starts_with(" yes.");
    if (!yes && !rest.starts_with(" no.")) continue;
    lines.push_back({text[at - 1], value, reference, yes});
  }
  return lines;
}

bool choice_scan_consistent(const std::vector<ScanLine>& scan, const ChoiceSet& choices,
                            const std::string& answer) {
  // The loop below requires "yes" on the last line and only there.
  if (scan.empty() || answer != std::string(1, scan.back().label)) return false;
  for (size_t i = 0; i < scan.size(); ++i) {
    const int index = scan[i].label - 'A';
    if (index < 0 || index >= kNumChoices) return false;
    if (choices.values[static_cast<size_t>(index)] != scan[i].value) return false;
    if (scan[i].yes != (i + 1 == scan.size())) return false;
    if (scan[i].yes != (scan[i].value == scan[i].reference)) return false;
  }
  return true;
}

namespace {

std::vector<Token> prompt_tokens(const Model& model, const Item& item, PromptMode mode,
                                 const std::vector<const Item*>& examples) {
  std::string text = format_chatml(build_messages(item, mode, examples), true);
  text += cot_prefix(mode);
  return model.tokenize_prompt(text);
}

RunTally run_block(Session& session, const Model& model, const std::vector<Item>& items,
                   const std::vector<std::vector<Token>>& prompts, bool offset,
                   const CheckOptions& o) {
  const Token newline = model.tokenize("\n", false, false).front();
  GenerationParams gp;
  gp.n_predict = o.n_predict;
  RunTally tally;
  for (size_t begin = 0; begin < items.size(); begin += static_cast<size_t>(o.n_parallel)) {
    const size_t end = std::min(items.size(), begin + static_cast<size_t>(o.n_parallel));
    std::vector<GenerationRequest> requests;
    for (size_t i = begin; i < end; ++i) {
      GenerationRequest r;
      r.seq = static_cast<SeqId>(i - begin);
      r.prompt = prompts[i];
      if (offset) r.steering_params.offset_token = newline;
      requests.push_back(r);
    }
    const std::vector<Generation> out = generate(session, requests, gp);
    for (size_t i = begin; i < end; ++i) {
      const Generation& g = out[i - begin];
      const ResponseParse p = parse_response(g.text);
      const bool ok = p.well_formed && p.answer == items[i].solution;
      const int n_ops = items[i].problem.n_ops();
      tally.all.add(p, ok, g.tokens.size());
      tally.by_ops[n_ops].add(p, ok, g.tokens.size());
      if (n_ops >= 3) tally.hard.add(p, ok, g.tokens.size());
      if (items[i].variant == Variant::Choice) {
        const std::vector<ScanLine> scan = parse_choice_scan(g.text);
        if (!scan.empty()) {
          ++tally.scans;
          tally.scans_consistent +=
              choice_scan_consistent(scan, items[i].choices, p.answer) ? 1 : 0;
        }
      }
    }
  }
  return tally;
}

// Per-layer |mean(pos - neg)| / mean row norm of K and V at the prompt's last and second-to-last
// token over n_pairs contrastive pairs (3-shot reasoned vs 3-shot direct, same question): the
// library's extraction, with the row norms read from the cells it averages.
ordered_json steerability(const std::shared_ptr<const Model>& model_ptr,
                          const std::vector<Item>& pool, const CheckOptions& o) {
  const Model& model = *model_ptr;
  SessionParams sp;
  sp.n_seq = 2;
  sp.n_ctx = 2048;
  sp.n_threads = o.n_threads;
  Session session(model_ptr, sp);
  const auto n_layer = static_cast<std::size_t>(model.fingerprint().n_layer);
  const int n_pairs = std::min<int>(o.n_pairs, static_cast<int>(pool.size()));
  std::vector<ContrastivePair> pairs;
  for (int i = 0; i < n_pairs; ++i) {
    const Item& item = pool[static_cast<size_t>(pool.size() - 1 - static_cast<size_t>(i))];
    const auto examples = pick_examples(pool, item, i, o.shots);
    pairs.push_back({prompt_tokens(model, item, PromptMode::FewShotReasoned, examples),
                     prompt_tokens(model, item, PromptMode::FewShotDirect, examples)});
  }
  // Sum of the row norms of every averaged cell, per position and layer.
  std::vector<std::vector<double>> norm_k(2, std::vector<double>(n_layer, 0.0));
  std::vector<std::vector<double>> norm_v = norm_k;
  const auto norm = [](const std::vector<float>& row) {
    double s = 0;
    for (float x : row) s += double(x) * x;
    return std::sqrt(s);
  };
  ExtractionParams ep;
  ep.on_cell = [&](std::size_t, bool, std::size_t position, const KvCell& cell) {
    for (std::size_t l = 0; l < n_layer; ++l) {
      norm_k[position][l] += norm(cell.k[l]);
      norm_v[position][l] += norm(cell.v[l]);
    }
  };
  const Pos positions[] = {-1, -2};
  const std::vector<SteeringVector> means = extract_steering_vectors(session, pairs, positions, ep);
  const auto ratio = [&](const std::vector<float>& mean, double norms) {
    double s = 0;
    for (float x : mean) s += double(x) * x;
    const double mean_norm = norms / (2.0 * n_pairs);
    return mean_norm > 0 ? std::round(1e4 * std::sqrt(s) / mean_norm) / 1e4 : 0.0;
  };
  ordered_json out{{"n_pairs", n_pairs}, {"shots", o.shots}};
  const char* names[2] = {"last_token", "second_to_last_token"};
  for (std::size_t p = 0; p < 2; ++p) {
    ordered_json layers = ordered_json::array();
    for (std::size_t l = 0; l < n_layer; ++l) {
      layers.push_back({{"layer", l},
                        {"k_ratio", ratio(means[p].k[l], norm_k[p][l])},
                        {"v_ratio", ratio(means[p].v[l], norm_v[p][l])}});
    }
    out[names[p]] = layers;
  }
  return out;
}

}  // namespace

const char* prompt_mode_name(PromptMode mode) {
  switch (mode) {
    case PromptMode::ZeroShot:
      return "zero_shot";
    case PromptMode::FewShotReasoned:
      return "few_shot_reasoned";
    case PromptMode::FewShotDirect:
      return "few_shot_direct";
    case PromptMode::ZeroShotCot:
      return "zero_shot_cot";
  }
  return "?";
}

ResponseParse parse_response(std::string_view response) {
  ResponseParse p;
  constexpr std::string_view kMarker = "The answer is ";
  const size_t at = response.rfind(kMarker);
  if (at == std::string_view::npos) return p;
  std::string_view rest = response.substr(at + kMarker.size());
  const size_t dot = rest.find('.');
  const std::string_view answer = rest.substr(0, dot);
  const bool letter = answer.size() == 1 && answer[0] >= 'A' && answer[0] <= 'D';
  p.answer = std::string(answer);
  p.well_formed = dot != std::string_view::npos && (letter || is_number(answer));
  // The steps before the answer, counted as the eval harness counts them for organism tasks.
  p.n_steps =
      eval::count_reasoning_steps(eval::Task::OrganismNumeric, std::string(response.substr(0, at)));
  p.reasoning = p.n_steps > 0;
  return p;
}

std::string_view cot_prefix(PromptMode mode) {
  return mode == PromptMode::ZeroShotCot ? kCotPrefix : std::string_view{};
}

std::vector<Message> build_messages(const Item& item, PromptMode mode,
                                    const std::vector<const Item*>& examples) {
  std::vector<Message> messages;
  if (mode == PromptMode::FewShotReasoned || mode == PromptMode::FewShotDirect) {
    for (const Item* e : examples) {
      messages.push_back({"user", e->query});
      messages.push_back({"assistant", mode == PromptMode::FewShotReasoned ? reasoned_answer(*e)
                                                                           : direct_answer(*e)});
    }
  }
  messages.push_back({"user", item.query});
  return messages;
}

std::vector<const Item*> pick_examples(const std::vector<Item>& pool, const Item& item, int index,
                                       int k) {
  std::vector<const Item*> same;
  for (const Item& p : pool) {
    if (p.problem.family == item.problem.family && p.problem.question != item.problem.question) {
      same.push_back(&p);
    }
  }
  if (static_cast<int>(same.size()) < k) {
    throw Error(ErrorCode::InvalidArgument, "example pool holds fewer than k items of the family");
  }
  std::vector<const Item*> out;
  for (int j = 0; j < k; ++j) {
    out.push_back(
        same[(static_cast<size_t>(index) * static_cast<size_t>(k) + static_cast<size_t>(j)) %
             same.size()]);
  }
  return out;
}

ordered_json check_organism(const CheckOptions& o) {
  if (o.n_per_variant < 1 || o.shots < 1 || o.n_parallel < 1 || o.n_predict < 1) {
    throw Error(ErrorCode::InvalidArgument,
                "--n, --shots, --parallel and --n-predict must be >= 1");
  }
  const std::shared_ptr<const Model> model = load_model(o.model);
  ordered_json report{{"model", o.model},
                      {"n_per_variant", o.n_per_variant},
                      {"seed", o.seed},
                      {"shots", o.shots},
                      {"decoding", "greedy"},
                      {"n_predict", o.n_predict},
                      {"family", family_mix_name(o.family)}};
  ordered_json results = ordered_json::object();
  std::map<std::string, RunTally> tallies;  // "mode/offset/variant"
  std::vector<Item> numeric_pool;
  for (Variant variant : kVariants) {
    GenOptions test;
    test.seed = o.seed;
    test.n = o.n_per_variant;
    test.split = Split::Test;
    test.variant = variant;
    test.generator = o.generator;
    test.family = o.family;
    const std::vector<Item> items = generate_items(test);
    GenOptions train = test;
    train.split = Split::Train;
    train.n = std::max(200, o.n_pairs * 2);
    const std::vector<Item> pool = generate_items(train);
    if (variant == Variant::Numeric) numeric_pool = pool;

    int max_prompt = 0;
    std::map<PromptMode, std::vector<std::vector<Token>>> prompts;
    for (PromptMode mode : kModes) {
      for (size_t i = 0; i < items.size(); ++i) {
        prompts[mode].push_back(prompt_tokens(
            *model, items[i], mode, pick_examples(pool, items[i], static_cast<int>(i), o.shots)));
        max_prompt = std::max(max_prompt, static_cast<int>(prompts[mode].back().size()));
      }
    }
    SessionParams sp;
    sp.n_seq = static_cast<uint32_t>(o.n_parallel);
    sp.n_ctx = static_cast<uint32_t>(o.n_parallel * (max_prompt + o.n_predict + 2));
    sp.n_threads = o.n_threads;
    Session session(model, sp);
    for (PromptMode mode : kModes) {
      for (bool offset : {false, true}) {
        const RunTally t = run_block(session, *model, items, prompts[mode], offset, o);
        const std::string key = std::string(prompt_mode_name(mode)) + "/" +
                                (offset ? "offset" : "plain") + "/" +
                                std::string(variant_name(variant));
        tallies[key] = t;
        results[prompt_mode_name(mode)][offset ? "offset" : "plain"]
               [std::string(variant_name(variant))] = t.json();
        if (o.progress) {
          char line[200];
          std::snprintf(line, sizeof(line),
                        "%-40s acc %5.1f %%  reasoning %5.1f %%  (3-4 ops: %5.1f %%)", key.c_str(),
                        t.all.accuracy(), t.all.reasoning_rate(), t.hard.accuracy());
          o.progress(line);
        }
      }
    }
  }
  report["results"] = results;
  report["steerability"] = steerability(model, numeric_pool, o);

  ordered_json criteria = ordered_json::array();
  auto criterion = [&](const std::string& what, double value, double bound, bool holds) {
    criteria.push_back({{"criterion", what},
                        {"value", std::round(value * 10) / 10},
                        {"bound", std::round(bound * 10) / 10},
                        {"holds", holds}});
  };
  for (Variant variant : kVariants) {
    const std::string v(variant_name(variant));
    const RunTally& zs = tallies["zero_shot/plain/" + v];
    const RunTally& fs = tallies["few_shot_reasoned/plain/" + v];
    const RunTally& cot = tallies["zero_shot_cot/plain/" + v];
    criterion(v + ": zero-shot reasoning rate <= 10 %", zs.all.reasoning_rate(), 10,
              zs.all.reasoning_rate() <= 10);
    criterion(v + ": 3-shot reasoned reasoning rate >= 95 %", fs.all.reasoning_rate(), 95,
              fs.all.reasoning_rate() >= 95);
    criterion(v + ": 3-shot reasoned accuracy on 3-4 ops >= zero-shot + 30", fs.hard.accuracy(),
              zs.hard.accuracy() + 30, fs.hard.accuracy() >= zs.hard.accuracy() + 30);
    criterion(v + ": 3-shot reasoned accuracy on 3-4 ops >= 80 %", fs.hard.accuracy(), 80,
              fs.hard.accuracy() >= 80);
    criterion(v + ": zero-shot CoT accuracy >= zero-shot + 10", cot.all.accuracy(),
              zs.all.accuracy() + 10, cot.all.accuracy() >= zs.all.accuracy() + 10);
    for (PromptMode mode : kModes) {
      const std::string m = prompt_mode_name(mode);
      const double plain = tallies[m + "/plain/" + v].all.accuracy();
      const double off = tallies[m + "/offset/" + v].all.accuracy();
      criterion(v + ": " + m + " accuracy with offset within 3 points", off - plain, 3,
                std::abs(off - plain) <= 3);
    }
  }
  report["criteria"] = criteria;
  return report;
}

}  // namespace kvsteer::organism
