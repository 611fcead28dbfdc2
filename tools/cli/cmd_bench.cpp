// kvsteer bench: cost of one cell edit against context length, and decode speed with and without a
// prior edit, as JSON.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "common.h"

namespace kvsteer::cli {
namespace {

struct BenchOptions {
  ModelOptions model;
  std::vector<std::uint32_t> contexts{100, 1000, 4000};
  std::int32_t repeats = 20;
  std::int32_t n_decode = 64;
  std::int32_t blocks = 8;
  std::uint32_t decode_prompt = 128;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Median of `repeats` timed calls after one untimed warm-up call, in milliseconds.
template <typename F>
double median_ms(std::int32_t repeats, F&& f) {
  f();
  std::vector<double> ms;
  for (std::int32_t r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    ms.push_back(seconds_since(t0) * 1e3);
  }
  std::nth_element(ms.begin(), ms.begin() + static_cast<long>(ms.size() / 2), ms.end());
  return ms[ms.size() / 2];
}

CellDelta ones(const Model& m, float c) {
  const auto& fp = m.fingerprint();
  CellDelta d;
  for (std::int32_t il = 0; il < fp.n_layer; ++il) {
    d.k.emplace_back(static_cast<std::size_t>(fp.n_embd_k_gqa), c);
    d.v.emplace_back(static_cast<std::size_t>(fp.n_embd_v_gqa), c);
  }
  return d;
}

nlohmann::json bench_context(Session& s, const Model& m, std::uint32_t n_tokens,
                             const BenchOptions& o) {
  std::vector<Token> prompt;
  for (std::uint32_t i = 0; i < n_tokens; ++i) {
    prompt.push_back(static_cast<Token>((i * 7919u + 13u) % static_cast<unsigned>(m.n_vocab())));
  }
  s.clear();
  auto t0 = std::chrono::steady_clock::now();
  s.decode(0, prompt, true);
  const double prefill = seconds_since(t0);
  const CellDelta delta = ones(m, 1e-3f);
  const Pos last = static_cast<Pos>(n_tokens) - 1;
  const double edit = median_ms(o.repeats, [&] { s.add_to_cell(0, last, delta); });
  const double read = median_ms(o.repeats, [&] { (void)s.read_cell(0, last); });
  return {{"n_tokens", n_tokens},
          {"prefill_tok_per_s", n_tokens / prefill},
          {"edit_ms_median", edit},
          {"read_ms_median", read}};
}

std::vector<Token> decode_prompt(const Model& m, std::uint32_t n) {
  std::vector<Token> prompt;
  for (std::uint32_t i = 0; i < n; ++i) {
    prompt.push_back(static_cast<Token>((i * 104729u + 7u) % static_cast<unsigned>(m.n_vocab())));
  }
  return prompt;
}

// Prefills the prompt, edits its last cell when `edited` (as generation does), then decodes n
// tokens one at a time; returns the decode speed in tokens/s (the prefill and edit untimed).
double decode_speed(Session& s, const Model& m, const std::vector<Token>& prompt, std::int32_t n,
                    bool edited) {
  s.clear();
  s.decode(0, prompt, true);
  if (edited) {
    s.add_to_cell(0, static_cast<Pos>(prompt.size()) - 1, ones(m, 1e-3f));
  }
  auto t0 = std::chrono::steady_clock::now();
  for (std::int32_t i = 0; i < n; ++i) {
    const Token t = static_cast<Token>((i * 31 + 7) % m.n_vocab());
    s.decode(0, std::span<const Token>(&t, 1), true);
  }
  return n / seconds_since(t0);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Decode speed steered against unsteered, measured in alternating blocks (ABBA order, so that
// warm-up, clock and load drift fall on both sides alike): the per-pair ratio's median and range.
nlohmann::json decode_comparison(Session& s, const Model& m, const BenchOptions& o) {
  const auto prompt = decode_prompt(m, o.decode_prompt);
  (void)decode_speed(s, m, prompt, 8, false);  // warm-up: graphs and buffers
  std::vector<double> plain, steered, ratio;
  for (std::int32_t b = 0; b < o.blocks; ++b) {
    double p = 0, e = 0;
    if (b % 2 == 0) {
      p = decode_speed(s, m, prompt, o.n_decode, false);
      e = decode_speed(s, m, prompt, o.n_decode, true);
    } else {
      e = decode_speed(s, m, prompt, o.n_decode, true);
      p = decode_speed(s, m, prompt, o.n_decode, false);
    }
    plain.push_back(p);
    steered.push_back(e);
    ratio.push_back(e / p);
  }
  return {{"blocks", o.blocks},
          {"prompt_tokens", prompt.size()},
          {"tokens_per_block", o.n_decode},
          {"unsteered_tok_per_s_median", median(plain)},
          {"after_edit_tok_per_s_median", median(steered)},
          {"ratio_median", median(ratio)},
          {"ratio_min", *std::min_element(ratio.begin(), ratio.end())},
          {"ratio_max", *std::max_element(ratio.begin(), ratio.end())},
          {"unsteered_tok_per_s", plain},
          {"after_edit_tok_per_s", steered}};
}

// Where the cells are: the attention window llama.cpp computes over and the cells the next token
// sees, after a prefill and after the same prefill with its last cell edited. An edit that moved
// the cell to a higher index, or left a hole, would show here.
nlohmann::json window_check(const std::shared_ptr<const Model>& m, SessionParams params,
                            const BenchOptions& o) {
  params.capture_attention_window = true;
  Session s(m, params);
  const auto prompt = decode_prompt(*m, o.decode_prompt);
  nlohmann::json out;
  for (const bool edited : {false, true}) {
    s.clear();
    s.decode(0, prompt, true);
    if (edited) {
      s.add_to_cell(0, static_cast<Pos>(prompt.size()) - 1, ones(*m, 1e-3f));
    }
    nlohmann::json steps = nlohmann::json::array();
    for (std::int32_t i = 0; i < 3; ++i) {
      const Token t = static_cast<Token>((i * 31 + 7) % m->n_vocab());
      s.decode(0, std::span<const Token>(&t, 1), true);
      const AttentionWindow w = s.last_attention_window();
      steps.push_back({{"n_kv", w.n_kv},
                       {"visible_cells", w.visible_cells.size()},
                       {"first_visible", w.visible_cells.front()},
                       {"last_visible", w.visible_cells.back()},
                       {"contiguous", w.visible_cells.back() - w.visible_cells.front() + 1 ==
                                          static_cast<std::int32_t>(w.visible_cells.size())}});
    }
    out[edited ? "after_edit" : "unsteered"] = steps;
  }
  return out;
}

void run(const BenchOptions& o) {
  auto model = o.model.load();
  std::uint32_t max_ctx = 0;
  for (auto c : o.contexts) {
    max_ctx = std::max(max_ctx, c);
  }
  auto params = o.model.session_params(*model);
  params.n_ctx = std::max(params.n_ctx, max_ctx + 128);
  nlohmann::json out;
  out["model"] = {{"path", o.model.model},
                  {"description", model->description()},
                  {"n_params", model->n_params()}};
  for (const char* route : {"one-cell", "full"}) {
    params.edit_route = std::string(route) == "full" ? EditRoute::FullSequence : EditRoute::OneCell;
    Session s(model, params);
    nlohmann::json rows = nlohmann::json::array();
    for (auto c : o.contexts) {
      rows.push_back(bench_context(s, *model, c, o));
    }
    out["edit"][route] = rows;
  }
  params.edit_route = EditRoute::OneCell;
  Session s(model, params);
  const nlohmann::json decode = decode_comparison(s, *model, o);
  out["decode"] = decode;
  out["decode_tok_per_s"] = {{"unsteered", decode["unsteered_tok_per_s_median"]},
                             {"after_edit", decode["after_edit_tok_per_s_median"]}};
  out["attention_window"] = window_check(model, params, o);
  out["threads"] = params.n_threads;
  out["engine_cpu_features"] = Backend::cpu_features();
  out["cache_type_k"] = kv_type_name(params.type_k);
  out["cache_type_v"] = kv_type_name(params.type_v);
  std::printf("%s\n", out.dump(2).c_str());
}

}  // namespace

void add_bench(CLI::App& app) {
  auto opts = std::make_shared<BenchOptions>();
  auto* sub = app.add_subcommand("bench", "measure edit cost and decode speed (JSON)");
  opts->model.add_to(*sub);
  sub->add_option("--contexts", opts->contexts, "context lengths for the edit cost")
      ->check(CLI::Range(1, 1 << 20));
  sub->add_option("--repeats", opts->repeats, "edits per measurement")
      ->check(CLI::Range(1, 100000));
  sub->add_option("--n-decode", opts->n_decode, "tokens decoded per speed measurement")
      ->check(CLI::Range(1, 100000));
  sub->add_option("--blocks", opts->blocks,
                  "decode measurements per side, steered and unsteered alternating")
      ->check(CLI::Range(2, 10000));
  sub->add_option("--decode-prompt", opts->decode_prompt, "prompt tokens before the decode")
      ->check(CLI::Range(1u, 100000u));
  sub->callback([opts] { run(*opts); });
}

}  // namespace kvsteer::cli
