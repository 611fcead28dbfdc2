#include <cstdio>
#include <vector>
#include "kvsteer/kvsteer.h"
using namespace kvsteer;
int main(int argc, char** argv) {
  Backend b;
  auto m = load_model(argv[1]);
  SessionParams p; p.n_ctx = 512; p.n_batch = 64; p.n_seq = 2; p.n_threads = 1; p.type_k = KvType::F32; p.type_v = KvType::F32; p.flash_attn = FlashAttn::On;
  float scale = argc > 2 ? atof(argv[2]) : 1.0f;
  std::vector<Token> prompt; for (int i = 0; i < 24; ++i) prompt.push_back(5 + i * 7 % 300);
  Token t = 17;
  for (int variant = 0; variant < 6; ++variant) {
    SessionParams pp = p; if (variant == 4) pp.edit_route = EditRoute::FullSequence;
    Session s(m, pp);
    std::vector<DecodeItem> both{{0, prompt, false}, {1, prompt, false}};
    s.decode(both);
    if (variant == 3) { (void)s.read_cell(0, 23); }
    if (variant == 5) { std::vector<Token> one{prompt[0]}; }
    if (variant > 0 && variant != 3 && variant != 5) {
      const auto& fp = m->fingerprint();
      CellDelta d;
      for (int il = 0; il < fp.n_layer; ++il) { d.k.emplace_back(fp.n_embd_k_gqa, variant != 2 ? 0.0f : scale); d.v.emplace_back(fp.n_embd_v_gqa, variant != 2 ? 0.0f : scale); }
      s.add_to_cell(0, 23, d);
    }
    std::vector<DecodeItem> next{{0, {&t, 1}, true}, {1, {&t, 1}, true}};
    s.decode(next);
    auto l = s.logits(1);
    printf("variant %d: seq1 logits %.7f %.7f %.7f  seq0 %.7f\n", variant, l[0], l[1], l[2], s.logits(0)[0]);
    auto blob1 = s.sequence_state(1);
    printf("  seq1 blob size %zu\n", blob1.size());
  }
}
