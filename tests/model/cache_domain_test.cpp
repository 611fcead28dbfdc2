// Cache layouts that need care: Hadamard-rotated quantized K caches, and the two cache blocks of
// sliding-window (iSWA) models.
#include <gtest/gtest.h>

#include <cmath>

#include "kvsteer/error.h"
#include "kvsteer/generation.h"
#include "kvsteer/steering.h"
#include "support/model_cases.h"

namespace kvsteer {
namespace {

SessionParams params(KvType k, KvType v, EditRoute route = EditRoute::OneCell) {
  SessionParams p;
  p.n_ctx = 512;
  p.n_batch = 64;
  p.n_threads = 1;
  p.type_k = k;
  p.type_v = v;
  p.flash_attn = FlashAttn::On;
  p.edit_route = route;
  return p;
}

// Orthonormal Walsh-Hadamard matrix of size n (Sylvester construction), applied to one head.
std::vector<float> hadamard(const std::vector<float>& x, std::size_t offset, std::size_t n) {
  std::vector<float> out(n, 0.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(n));
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      const int sign = (__builtin_popcountll(i & j) % 2 == 0) ? 1 : -1;
      out[i] += static_cast<float>(sign) * scale * x[offset + j];
    }
  }
  return out;
}

std::vector<ContrastivePair> random_pairs(const Model& m) {
  std::vector<ContrastivePair> pairs;
  for (unsigned i = 0; i < 4; ++i) {
    pairs.push_back({test::sample_prompt(m, 20, 100 + i), test::sample_prompt(m, 14, 200 + i)});
  }
  return pairs;
}

// Logit change a steering vector causes after the prompt (teacher-forced next step).
std::vector<float> steering_effect(Session& s, const SteeringVector& vec,
                                   const std::vector<Token>& prompt) {
  GenerationParams gen;
  gen.n_predict = 1;
  SteeringParams sp;
  sp.coef_k = 3.0f;
  sp.coef_v = 0.0f;  // keys only: the part the rotation acts on
  std::vector<float> out;
  for (const SteeringVector* v : {static_cast<const SteeringVector*>(nullptr), &vec}) {
    s.clear();
    s.decode(0, prompt, false);
    if (v != nullptr) s.add_to_cell(0, static_cast<Pos>(prompt.size()) - 1, steering_delta(*v, sp));
    const Token t = prompt.front();
    s.decode(0, std::span<const Token>(&t, 1), true);
    const auto l = s.logits(0);
    if (out.empty()) {
      out.assign(l.begin(), l.end());
    } else {
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = l[i] - out[i];
    }
  }
  return out;
}

double distance(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(d);
}

double norm(const std::vector<float>& a) { return distance(a, std::vector<float>(a.size(), 0)); }

TEST(QuantizedKeys, CachedRowsAreHadamardRotated) {
  auto m = test::shared_model("llama-f32.gguf");
  ASSERT_EQ(m->fingerprint().n_embd_head_k, 64);
  Session plain(m, params(KvType::F32, KvType::F32));
  Session quant(m, params(KvType::Q8_0, KvType::F32));
  EXPECT_FALSE(plain.k_rotated());
  EXPECT_TRUE(quant.k_rotated());
  const auto prompt = test::sample_prompt(*m, 12);
  plain.decode(0, prompt, false);
  quant.decode(0, prompt, false);
  const KvCell a = plain.read_cell(0, 11);
  const KvCell b = quant.read_cell(0, 11);
  for (std::size_t il = 0; il < a.k.size(); ++il) {
    double err_rotated = 0, err_plain = 0;
    for (std::size_t h = 0; h < a.k[il].size() / 64; ++h) {
      const auto rotated = hadamard(a.k[il], h * 64, 64);
      double max_err = 0, max_abs = 0;
      for (std::size_t j = 0; j < 64; ++j) {
        const double q = b.k[il][h * 64 + j];
        max_err = std::max(max_err, std::fabs(rotated[j] - q));
        max_abs = std::max(max_abs, static_cast<double>(std::fabs(rotated[j])));
        err_rotated += (rotated[j] - q) * (rotated[j] - q);
        err_plain += (a.k[il][h * 64 + j] - q) * (a.k[il][h * 64 + j] - q);
      }
      // Layer 0 sees identical inputs in both sessions: the only difference is Q8_0 rounding, at
      // most half a step of max|x|/127 per value, plus the rounding of the block scale to F16.
      if (il == 0) {
        EXPECT_LE(max_err, max_abs / 200.0 + 1e-6) << "head " << h;
      }
    }
    // Later layers' inputs already differ by the rounding of earlier layers, but the stored rows
    // are still far closer to the rotated plain rows than to the plain rows themselves.
    EXPECT_LT(std::sqrt(err_rotated), 0.1 * std::sqrt(err_plain)) << "layer " << il;
  }
  EXPECT_EQ(a.v[0], b.v[0]);  // V is not rotated (F32 in both sessions; layer 0 inputs are equal)
}

TEST(QuantizedKeys, ExtractionAndApplicationShareTheRotatedDomain) {
  auto m = test::shared_model("llama-f32.gguf");
  Session plain(m, params(KvType::F32, KvType::F32));
  Session quant(m, params(KvType::Q8_0, KvType::F32));
  const auto pairs = random_pairs(*m);
  const SteeringVector v_plain = extract_steering_vector(plain, pairs);
  SteeringVector v_quant = extract_steering_vector(quant, pairs);
  EXPECT_TRUE(v_quant.info.k_rotated);
  EXPECT_FALSE(v_plain.info.k_rotated);
  const auto prompt = test::sample_prompt(*m, 16, 9);

  const auto effect_plain = steering_effect(plain, v_plain, prompt);
  const auto effect_quant = steering_effect(quant, v_quant, prompt);
  // The same vector extracted and applied in the rotated domain has the effect it has in the plain
  // domain (attention is invariant under the orthonormal rotation), up to Q8_0 rounding.
  ASSERT_GT(norm(effect_plain), 1e-2);
  EXPECT_LT(distance(effect_quant, effect_plain), 0.25 * norm(effect_plain))
      << "rotated-domain steering effect differs from the plain one";
  // Applying plain-domain keys to a rotated cache is refused...
  EXPECT_THROW(check_applicable(v_plain, quant), Error);
  // ...because it would be wrong: forcing it gives another effect.
  SteeringVector forced = v_plain.clone();
  forced.info.k_rotated = true;
  const auto effect_forced = steering_effect(quant, forced, prompt);
  EXPECT_GT(distance(effect_forced, effect_plain), distance(effect_quant, effect_plain) * 2)
      << "the domain check would not be needed";
}

TEST(SlidingWindow, LayersMapToTheirCacheBlocks) {
  auto m = test::shared_model("gemma2-f32.gguf");
  const auto& swa = m->swa_layers();
  ASSERT_EQ(swa, (std::vector<bool>{true, false, true, false}));  // gemma2: every other layer
  // The full-sequence route reads the cell from seq 0's blob, where llama.cpp leaves out cells that
  // fell out of the sliding window: those layers come back empty, the global layers do not.
  Session full(m, params(KvType::F16, KvType::F16, EditRoute::FullSequence));
  const auto prompt = test::sample_prompt(*m, 40);  // window 16
  full.decode(0, prompt, false);
  const KvCell old_cell = full.read_cell(0, 2);
  const KvCell recent = full.read_cell(0, 39);
  for (std::size_t il = 0; il < swa.size(); ++il) {
    EXPECT_EQ(old_cell.k[il].empty(), swa[il]) << "layer " << il;
    EXPECT_FALSE(recent.k[il].empty()) << "layer " << il;
  }
  // Both routes read identical rows for a cell in the window.
  Session one(m, params(KvType::F16, KvType::F16));
  one.decode(0, prompt, false);
  const KvCell via_one = one.read_cell(0, 39);
  EXPECT_EQ(via_one.k, recent.k);
  EXPECT_EQ(via_one.v, recent.v);
}

TEST(SlidingWindow, ExtractionFillsEveryLayer) {
  auto m = test::shared_model("gemma2-f32.gguf");
  Session s(m, params(KvType::F32, KvType::F32));
  const auto vec = extract_steering_vector(s, random_pairs(*m));
  for (std::size_t il = 0; il < vec.k.size(); ++il) {
    EXPECT_EQ(vec.k[il].size(), static_cast<std::size_t>(m->fingerprint().n_embd_k_gqa)) << il;
    EXPECT_GT(norm(vec.v[il]), 0.0) << il;
  }
}

}  // namespace
}  // namespace kvsteer
