// The steering diagnosis on every model/cache configuration: its recomputed attention matches
// llama.cpp's attention output, a zero edit changes nothing, a V edit leaves the attention of the
// first steered layer untouched and shows up in that layer's head outputs, and whole-sequence
// cell reads equal single-cell reads.
#include <gtest/gtest.h>

#include <cmath>

#include "kvsteer/diagnosis.h"
#include "kvsteer/error.h"
#include "support/model_cases.h"

namespace kvsteer {
namespace {

class Diagnosis : public ::testing::TestWithParam<test::ModelCase> {
 protected:
  void SetUp() override {
    model_ = test::shared_model(GetParam().model);
    params_ = test::session_params(GetParam(), 2);
    params_.n_ctx = 256;
    params_.capture_tensors = diagnosis_capture_tensors();
  }
  // A deterministic vector of the model's shape with entries in [-scale, scale].
  SteeringVector vector(float scale) const {
    const auto& fp = model_->fingerprint();
    SteeringVector v;
    v.model = fp;
    unsigned x = 12345u;
    auto next = [&] {
      x = x * 1664525u + 1013904223u;
      return scale * (static_cast<float>((x >> 8) % 2001u) / 1000.0f - 1.0f);
    };
    v.k.assign(static_cast<std::size_t>(fp.n_layer), {});
    v.v.assign(static_cast<std::size_t>(fp.n_layer), {});
    for (std::int32_t il = 0; il < fp.n_layer; ++il) {
      for (int j = 0; j < fp.n_embd_k_gqa; ++j) v.k[static_cast<std::size_t>(il)].push_back(next());
      for (int j = 0; j < fp.n_embd_v_gqa; ++j) v.v[static_cast<std::size_t>(il)].push_back(next());
    }
    return v;
  }
  // Steering with the given coefficients and an offset token, measured over n_follow tokens.
  DiagnosisParams params(float coef_k, float coef_v, std::int32_t n_follow) const {
    DiagnosisParams p;
    p.steering.coef_k = coef_k;
    p.steering.coef_v = coef_v;
    p.steering.offset_token = test::sample_prompt(*model_, 1, 7).front();
    p.n_follow = n_follow;
    return p;
  }
  std::shared_ptr<const Model> model_;
  SessionParams params_;
};

TEST_P(Diagnosis, AttentionIsRecomputedExactlyAndAZeroEditChangesNothing) {
  Session session(model_, params_);
  if (session.k_rotated()) {
    EXPECT_THROW(diagnose_prompt(session, test::sample_prompt(*model_, 20), vector(1), {}), Error);
    return;
  }
  const DiagnosisParams p = params(0.0f, 0.0f, 4);
  const auto prompt = test::sample_prompt(*model_, 20);
  const PromptDiagnosis d = diagnose_prompt(session, prompt, vector(1), p);
  const auto& fp = model_->fingerprint();
  EXPECT_EQ(d.steered_pos, 19);
  // llama.cpp rounds the query to the cache type (f16, bf16) before q.k; we do not.
  EXPECT_LT(d.recompute_error, 3e-2);
  ASSERT_FALSE(d.attention_plain.empty());
  ASSERT_EQ(d.attention_plain[0].size(), static_cast<std::size_t>(fp.n_layer));
  ASSERT_EQ(d.attention_plain[0][0].size(), static_cast<std::size_t>(fp.n_head));
  // The edited (re-homed) cell sits elsewhere in the cache: without flash attention that changes
  // the order of llama.cpp's sums (llama-internals.md §6), so equal only to rounding. How much
  // depends on the CPU: with an F16 cache and flash attention off, an AVX-512 machine gave up to
  // 2.7e-3 in the attention weights and a KL of 4.2e-7 (stories260K; the tiny fixtures 1.3e-4 to
  // 2.1e-4 and 1.4e-7 to 3.5e-7), where an AVX2 machine stayed below 1e-4 and 1e-8. The bounds
  // keep a margin over the larger figures; a real change (a non-zero edit) moves both by orders
  // of magnitude more.
  ASSERT_EQ(d.attention_steered.size(), d.attention_plain.size());
  double max_diff = 0.0;
  for (std::size_t t = 0; t < d.attention_plain.size(); ++t)
    for (std::size_t l = 0; l < d.attention_plain[t].size(); ++l)
      for (std::size_t h = 0; h < d.attention_plain[t][l].size(); ++h)
        max_diff =
            std::max(max_diff, std::abs(d.attention_plain[t][l][h] - d.attention_steered[t][l][h]));
  EXPECT_LT(max_diff, 1e-2);
  EXPECT_LT(d.kl_first, 2e-6);
  EXPECT_EQ(d.first_divergence, -1);
  EXPECT_EQ(d.tokens_plain, d.tokens_steered);
  double attention_sum = 0.0;
  for (const auto& layer : d.attention_plain[0]) {
    for (double a : layer) {
      EXPECT_GE(a, 0.0);
      EXPECT_LE(a, 1.0);
      attention_sum += a;
    }
  }
  EXPECT_GT(attention_sum, 0.0) << "the tail token must attend to the cell before it somewhere";
  for (const auto& step : d.v_contribution)
    for (const auto& layer : step)
      for (double share : layer) EXPECT_EQ(share, 0.0);
}

TEST_P(Diagnosis, AVEditKeepsTheFirstSteeredLayersAttentionAndShowsInItsHeadOutputs) {
  Session session(model_, params_);
  if (session.k_rotated()) {  // no attention from a rotated K: refused, as above
    EXPECT_THROW(diagnose_prompt(session, test::sample_prompt(*model_, 16), vector(1), {}), Error);
    return;
  }
  const DiagnosisParams p = params(0.0f, 4.0f, 3);
  const PromptDiagnosis d =
      diagnose_prompt(session, test::sample_prompt(*model_, 16), vector(1), p);
  const auto& fp = model_->fingerprint();
  EXPECT_LT(d.recompute_error, 3e-2);
  EXPECT_EQ(d.k_edit_ratio[1], 0.0);
  EXPECT_GT(d.v_edit_ratio[1], 0.0);
  EXPECT_EQ(d.v_edit_ratio[0], 0.0) << "layer 0 is never steered (paper: layers >= 1)";
  // Layers 0 and 1 read queries and keys the V edit cannot reach: the same weights (to rounding:
  // without flash attention the re-homed cell changes the order of llama.cpp's sums, and on an
  // AVX-512 machine the query's rounding to F16 then differed by up to 3.3e-4; AVX2: < 1e-5).
  for (std::size_t l : {0u, 1u}) {
    for (std::int32_t h = 0; h < fp.n_head; ++h) {
      const auto hh = static_cast<std::size_t>(h);
      EXPECT_NEAR(d.attention_plain[0][l][hh], d.attention_steered[0][l][hh], 2e-3)
          << l << " " << h;
    }
  }
  double share = 0.0;
  for (std::int32_t h = 0; h < fp.n_head; ++h)
    share += d.v_contribution[0][1][static_cast<std::size_t>(h)];
  EXPECT_GT(share, 0.0);
  EXPECT_GT(d.kl_first, 0.0);
}

TEST_P(Diagnosis, WholeSequenceReadsEqualSingleCellReads) {
  Session session(model_, params_);
  const auto prompt = test::sample_prompt(*model_, 12, 3);
  session.decode(0, prompt, false);
  const std::vector<KvCell> cells = session.read_cells(0);
  ASSERT_EQ(cells.size(), prompt.size());
  for (std::size_t i = 0; i < cells.size(); ++i) {
    const KvCell one = session.read_cell(0, static_cast<Pos>(i));
    EXPECT_EQ(cells[i].pos, static_cast<Pos>(i));
    EXPECT_EQ(cells[i].k, one.k) << i;
    EXPECT_EQ(cells[i].v, one.v) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(AllModels, Diagnosis, ::testing::ValuesIn(test::all_model_cases()),
                         [](const ::testing::TestParamInfo<test::ModelCase>& tp) {
                           return tp.param.name();
                         });

TEST(DiagnosisSession, CaptureNeedsTheNamesAndADecode) {
  const auto model = test::shared_model("stories260K");
  SessionParams sp;
  sp.n_ctx = 64;
  sp.n_batch = 64;
  sp.n_threads = 1;
  sp.n_seq = 2;
  Session plain(model, sp);
  EXPECT_THROW(plain.last_captured("Qcur"), Error);
  DiagnosisParams p;
  p.steering.offset_token = 13;
  SteeringVector v;
  EXPECT_THROW(diagnose_prompt(plain, test::sample_prompt(*model, 4), v, p), Error);
  sp.capture_tensors = diagnosis_capture_tensors();
  Session captured(model, sp);
  EXPECT_THROW(captured.last_captured("Qcur"), Error) << "nothing decoded yet";
  captured.decode(0, test::sample_prompt(*model, 5), true);
  const auto q = captured.last_captured("Qcur");
  const auto& fp = model->fingerprint();
  ASSERT_EQ(q.size(), static_cast<std::size_t>(fp.n_layer));
  EXPECT_EQ(q[0].size(), static_cast<std::size_t>(fp.n_head * fp.n_embd_head_k));
  EXPECT_THROW(captured.last_captured("l_out"), Error) << "not asked for";
  p.n_follow = 0;
  EXPECT_THROW(diagnose_prompt(captured, test::sample_prompt(*model, 4), v, p), Error);
}

}  // namespace
}  // namespace kvsteer
