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

double decode_speed(Session& s, const Model& m, std::int32_t n, bool edited) {
  const std::vector<Token> prompt(32, static_cast<Token>(m.n_vocab() / 2));
  s.clear();
  s.decode(0, prompt, true);
  if (edited) s.add_to_cell(0, 31, ones(m, 1e-3f));
  auto t0 = std::chrono::steady_clock::now();
  for (std::int32_t i = 0; i < n; ++i) {
    const Token t = static_cast<Token>((i * 31 + 7) % m.n_vocab());
    s.decode(0, std::span<const Token>(&t, 1), true);
  }
  return n / seconds_since(t0);
}

void run(const BenchOptions& o) {
  auto model = o.model.load();
  std::uint32_t max_ctx = 0;
  for (auto c : o.contexts) max_ctx = std::max(max_ctx, c);
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
    for (auto c : o.contexts) rows.push_back(bench_context(s, *model, c, o));
    out["edit"][route] = rows;
  }
  params.edit_route = EditRoute::OneCell;
  Session s(model, params);
  out["decode_tok_per_s"] = {{"unsteered", decode_speed(s, *model, o.n_decode, false)},
                             {"after_edit", decode_speed(s, *model, o.n_decode, true)}};
  out["threads"] = params.n_threads;
  out["cache_type_k"] = kv_type_name(params.type_k);
  out["cache_type_v"] = kv_type_name(params.type_v);
  std::printf("%s\n", out.dump(2).c_str());
}

}  // namespace

void add_bench(CLI::App& app) {
  auto opts = std::make_shared<BenchOptions>();
  auto* sub = app.add_subcommand("bench", "measure edit cost and decode speed (JSON)");
  opts->model.add_to(*sub);
  sub->add_option("--contexts", opts->contexts, "context lengths for the edit cost");
  sub->add_option("--repeats", opts->repeats, "edits per measurement")
      ->check(CLI::Range(1, 100000));
  sub->add_option("--n-decode", opts->n_decode, "tokens decoded per speed measurement")
      ->check(CLI::Range(1, 100000));
  sub->callback([opts] { run(*opts); });
}

}  // namespace kvsteer::cli
