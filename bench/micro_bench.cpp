// Micro-benchmarks: blob parsing and cell patching (synthetic blobs of real model shapes), and the
// end-to-end cost of reading and editing one cell through a Session.
//   kvsteer-microbench [--benchmark_filter=...]   (KVSTEER_BENCH_MODEL: GGUF for the Session
//   benches)
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "ggml.h"
#include "kv/seq_blob.h"
#include "kvsteer/kvsteer.h"

namespace {

using kvsteer::detail::BlockShape;

// A one-block F16 blob of n_cells cells, n_layer layers of width n_embd (K and V), all zero.
std::vector<std::uint8_t> make_blob(std::uint32_t n_layer, std::uint32_t n_embd,
                                    std::uint32_t n_cells) {
  kvsteer::detail::BlobLayout layout;
  for (std::uint32_t c = 0; c < n_cells; ++c)
    layout.positions.push_back(static_cast<std::int32_t>(c));
  layout.n_layer = n_layer;
  layout.n_embd_k = layout.n_embd_v = n_embd;
  layout.type_k = layout.type_v = GGML_TYPE_F16;
  return kvsteer::detail::write_seq_blob(layout);
}

// SmolLM2-360M: 32 layers, 5 KV heads of 64; Llama-3.2-1B: 16 layers, 8 KV heads of 64.
void BM_ParseBlob(benchmark::State& state) {
  const auto n_layer = static_cast<std::uint32_t>(state.range(0));
  const auto n_embd = static_cast<std::uint32_t>(state.range(1));
  const auto n_cells = static_cast<std::uint32_t>(state.range(2));
  const auto blob = make_blob(n_layer, n_embd, n_cells);
  const BlockShape shape{std::vector<std::uint32_t>(n_layer, n_embd),
                         std::vector<std::uint32_t>(n_layer, n_embd)};
  for (auto _ : state) {
    benchmark::DoNotOptimize(kvsteer::detail::parse_seq_blob(blob, {&shape, 1}));
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * blob.size()));
}
BENCHMARK(BM_ParseBlob)
    ->Args({32, 320, 1})
    ->Args({32, 320, 1000})
    ->Args({16, 512, 1})
    ->Args({16, 512, 4000});

void BM_PatchCell(benchmark::State& state) {
  const auto n_layer = static_cast<std::uint32_t>(state.range(0));
  const auto n_embd = static_cast<std::uint32_t>(state.range(1));
  auto blob = make_blob(n_layer, n_embd, 1);
  const BlockShape shape{std::vector<std::uint32_t>(n_layer, n_embd),
                         std::vector<std::uint32_t>(n_layer, n_embd)};
  const auto parsed = kvsteer::detail::parse_seq_blob(blob, {&shape, 1});
  const std::vector<float> delta(n_embd, 1e-3f);
  for (auto _ : state) {
    for (const auto& section : parsed.blocks[0].streams[0].v) {
      kvsteer::detail::add_to_cell_row(blob, section, 1, 0, delta);
    }
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_PatchCell)->Args({32, 320})->Args({16, 512});

std::shared_ptr<const kvsteer::Model> bench_model() {
  static std::shared_ptr<const kvsteer::Model> model = [] {
    const char* path = std::getenv("KVSTEER_BENCH_MODEL");
    return path != nullptr && *path != '\0' ? kvsteer::load_model(path)
                                            : std::shared_ptr<const kvsteer::Model>();
  }();
  return model;
}

void BM_SessionCellEdit(benchmark::State& state) {
  auto model = bench_model();
  if (!model) {
    state.SkipWithError("set KVSTEER_BENCH_MODEL to a GGUF file");
    return;
  }
  kvsteer::SessionParams p;
  p.n_ctx = 4352;
  p.edit_route =
      state.range(1) == 0 ? kvsteer::EditRoute::OneCell : kvsteer::EditRoute::FullSequence;
  kvsteer::Session s(model, p);
  std::vector<kvsteer::Token> prompt(static_cast<std::size_t>(state.range(0)), 1);
  s.decode(0, prompt, false);
  const auto& fp = model->fingerprint();
  kvsteer::CellDelta delta;
  for (std::int32_t il = 0; il < fp.n_layer; ++il) {
    delta.k.emplace_back(static_cast<std::size_t>(fp.n_embd_k_gqa), 0.0f);
    delta.v.emplace_back(static_cast<std::size_t>(fp.n_embd_v_gqa), 1e-3f);
  }
  const auto last = static_cast<kvsteer::Pos>(prompt.size()) - 1;
  for (auto _ : state) s.add_to_cell(0, last, delta);
  state.SetLabel(state.range(1) == 0 ? "one-cell" : "full-sequence");
}
BENCHMARK(BM_SessionCellEdit)
    ->ArgsProduct({{100, 1000, 4000}, {0, 1}})
    ->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  kvsteer::Backend backend(kvsteer::LogLevel::Silent);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
