// Decode speed of several sequences at long contexts by cache layout (docs/DESIGN.md, "Cache
// layout"): n_seq sequences prefilled with `cells` tokens each, then timed decode steps of one
// token per sequence, for each combination of cache type, flash attention and streams.
//   kvsteer-kv-layout-bench MODEL [n_seq 16] [cells 800] [steps 20] [threads 2] [layout]
// Prints ms per step and tokens/s; `layout` keeps the layouts whose name contains it (each one
// prefills n_seq x cells tokens first, minutes at 16 x 800 on 2 cores). Run it on otherwise idle
// cores: a per-sequence graph is many small operations, each a barrier for the compute threads, and
// loses its gain when they share.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "kvsteer/kvsteer.h"

namespace {

using namespace kvsteer;

struct Layout {
  const char* name;
  KvType type;
  FlashAttn fa;
  KvStreams streams;
};

double ms_per_step(const std::shared_ptr<const Model>& model, const Layout& layout,
                   std::uint32_t n_seq, std::uint32_t cells, int steps, int threads) {
  SessionParams p;
  p.n_seq = n_seq;
  p.n_ctx = n_seq * (cells + static_cast<std::uint32_t>(steps) + 64);
  p.n_batch = std::min<std::uint32_t>(512, p.n_ctx);
  p.n_threads = threads;
  p.type_k = p.type_v = layout.type;
  p.flash_attn = layout.fa;
  p.kv_streams = layout.streams;
  if (layout.streams == KvStreams::PerSequence) p.edit_route = EditRoute::FullSequence;
  Session s(model, p);
  const Token t = model->bos().value_or(1);
  std::vector<Token> prompt(cells);
  for (std::uint32_t i = 0; i < cells; ++i) prompt[i] = t + static_cast<Token>(i % 50);
  for (SeqId q = 0; q < static_cast<SeqId>(n_seq); ++q) s.decode(q, prompt, true);
  std::vector<std::vector<Token>> next(n_seq, std::vector<Token>{t});
  std::vector<DecodeItem> items;
  for (SeqId q = 0; q < static_cast<SeqId>(n_seq); ++q)
    items.push_back({q, next[static_cast<std::size_t>(q)], true});
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) s.decode(items);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return ms / steps;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL [n_seq 16] [cells 800] [steps 20] [threads 2] [layout]\n",
                 argv[0]);
    return 2;
  }
  try {
    Backend backend(LogLevel::Error);
    const auto n_seq = static_cast<std::uint32_t>(argc > 2 ? std::atoi(argv[2]) : 16);
    const auto cells = static_cast<std::uint32_t>(argc > 3 ? std::atoi(argv[3]) : 800);
    const int steps = argc > 4 ? std::atoi(argv[4]) : 20;
    const int threads = argc > 5 ? std::atoi(argv[5]) : 2;
    if (n_seq < 1 || cells < 1 || steps < 1 || threads < 1) {
      std::fprintf(stderr, "kvsteer-kv-layout-bench: error: every number must be >= 1\n");
      return 2;
    }
    const auto model = load_model(argv[1]);
    const Layout layouts[] = {
        {"f16 fa-auto unified (default)", KvType::F16, FlashAttn::Auto, KvStreams::Unified},
        {"f16 fa-off  unified", KvType::F16, FlashAttn::Off, KvStreams::Unified},
        {"f16 fa-off  per-sequence", KvType::F16, FlashAttn::Off, KvStreams::PerSequence},
        {"f32 fa-off  unified", KvType::F32, FlashAttn::Off, KvStreams::Unified},
        {"f32 fa-off  per-sequence", KvType::F32, FlashAttn::Off, KvStreams::PerSequence},
    };
    const std::string only = argc > 6 ? argv[6] : "";
    const bool known = std::any_of(
        std::begin(layouts), std::end(layouts),
        [&only](const Layout& l) { return std::string(l.name).find(only) != std::string::npos; });
    if (!known) {
      std::fprintf(stderr, "kvsteer-kv-layout-bench: error: no layout name contains '%s'\n",
                   only.c_str());
      return 2;
    }
    std::printf("%u sequences x %u cells, %d steps, %d threads\n", n_seq, cells, steps, threads);
    for (const Layout& l : layouts) {
      if (std::string(l.name).find(only) == std::string::npos) continue;
      const double ms = ms_per_step(model, l, n_seq, cells, steps, threads);
      std::printf("%-32s %8.1f ms/step %8.1f tok/s\n", l.name, ms, 1000.0 * n_seq / ms);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvsteer-kv-layout-bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
