// The analytic gradient of the masked loss (ggml backward through get_rows-selected rows, GQA,
// record isolation, batch of two sequences) must match central finite differences of the loss.
// This test caught ggml-alloc computing SOFT_MAX_BACK in place over the softmax output
// (trainer.cpp, protect_softmax_outputs).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "ggml-backend.h"
#include "ggml.h"
#include "organism/trainer/graph.h"
#include "organism/trainer/model.h"
#include "organism/trainer/test_util.h"
#include "organism/trainer/trainer.h"

namespace kvsteer::train {
namespace {

std::vector<float> get(const ggml_tensor* t) {
  std::vector<float> v(static_cast<size_t>(ggml_nelements(t)));
  ggml_backend_tensor_get(t, v.data(), 0, ggml_nbytes(t));
  return v;
}

void set(ggml_tensor* t, const std::vector<float>& v) {
  ggml_backend_tensor_set(t, v.data(), 0, ggml_nbytes(t));
}

// Loss with parameter `p` moved by h * dir.
double loss_at(Trainer& trainer, ggml_tensor* p, const std::vector<float>& base,
               const std::vector<float>& dir, double h, const std::vector<PackedSequence>& seqs) {
  std::vector<float> moved(base);
  for (size_t i = 0; i < moved.size(); ++i) {
    moved[i] += static_cast<float>(h * dir[i]);
  }
  set(p, moved);
  const double loss = trainer.evaluate(seqs, static_cast<int>(seqs.size())).loss;
  set(p, base);
  return loss;
}

// Unit direction: the normalised gradient plus noise of the same norm, so that both the size and
// the direction of the analytic gradient are checked.
std::vector<float> direction(const std::vector<float>& g, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  double gnorm = 0.0;
  for (float x : g) {
    gnorm += double(x) * x;
  }
  gnorm = std::sqrt(gnorm);
  std::vector<float> d(g.size());
  double dnorm = 0.0;
  for (size_t i = 0; i < d.size(); ++i) {
    d[i] = static_cast<float>(g[i] / gnorm) + normal(rng) / std::sqrt(float(d.size()));
    dnorm += double(d[i]) * d[i];
  }
  for (float& x : d) {
    x = static_cast<float>(x / std::sqrt(dnorm));
  }
  return d;
}

void check_gradients(float init_std) {
  test::TempDir dir;
  RandomInitSpec spec = test::tiny_spec();
  spec.init_std = init_std;
  write_random_init(dir.file("m.gguf"), spec);
  Model model = Model::load(dir.file("m.gguf"));
  // Sequences of 48 tokens holding several records each, with partial masks.
  const auto all = pack_records(toy_language(8, 3, true), 48, spec.n_vocab);
  ASSERT_GE(all.size(), 2u);
  const std::vector<PackedSequence> seqs(all.begin(), all.begin() + 2);
  Trainer trainer(model, AdamWOptions{}, 1);
  std::vector<std::vector<float>> grads;
  trainer.loss_and_grads(make_batch({&seqs[0], &seqs[1]}), &grads);

  std::mt19937 rng(11);
  for (size_t k = 0; k < model.params().size(); ++k) {
    ggml_tensor* p = model.params()[k];
    const std::vector<float> d = direction(grads[k], rng);
    double analytic = 0.0;
    for (size_t i = 0; i < d.size(); ++i) {
      analytic += double(grads[k][i]) * d[i];
    }
    const std::vector<float> base = get(p);
    const double h = 1e-2;
    const double numeric =
        (loss_at(trainer, p, base, d, h, seqs) - loss_at(trainer, p, base, d, -h, seqs)) / (2 * h);
    EXPECT_NEAR(numeric, analytic, 0.02 * std::abs(analytic) + 2e-4)
        << p->name << ": numeric " << numeric << " analytic " << analytic;
  }
}

TEST(MaskedLossGradient, MatchesFiniteDifferencesAtInitScale) { check_gradients(0.02f); }

// Larger weights make attention sharp and every gradient clearly non-zero.
TEST(MaskedLossGradient, MatchesFiniteDifferencesWithSharpAttention) { check_gradients(0.2f); }

}  // namespace
}  // namespace kvsteer::train
