// extract_residual_directions (kvsteer/steering.h), activation steering's direction, on
// stories260K: the mean of (positive - negative) block outputs at the last prompt token.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kvsteer/error.h"
#include "kvsteer/session.h"
#include "kvsteer/steering.h"
#include "support/model_cases.h"

namespace kvsteer {
namespace {

class ResidualExtraction : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = test::shared_model("stories260K");
    params_.n_ctx = 256;
    params_.n_batch = 256;
    params_.n_threads = 1;
    params_.capture_residual = true;
  }

  // The block outputs of one prompt's last token, decoded alone in a fresh session.
  std::vector<std::vector<float>> residual(const std::string& text) {
    Session s(model_, params_);
    s.decode(0, model_->tokenize(text, true), true);
    return s.last_residual();
  }

  std::shared_ptr<const Model> model_;
  SessionParams params_;
};

TEST_F(ResidualExtraction, IsTheMeanOfPositiveMinusNegative) {
  const std::vector<std::string> pos{"Lily was very happy. She smiled.", "Tom was glad."};
  const std::vector<std::string> neg{"Lily was very sad. She cried.", "Tom was upset."};
  std::vector<ContrastivePair> pairs;
  for (std::size_t i = 0; i < pos.size(); ++i) {
    pairs.push_back({model_->tokenize(pos[i], true), model_->tokenize(neg[i], true)});
  }
  Session s(model_, params_);
  std::size_t calls = 0;
  const auto got =
      extract_residual_directions(s, pairs, [&](std::size_t, std::size_t) { ++calls; });
  EXPECT_EQ(calls, pairs.size() + 1);
  ASSERT_EQ(got.size(), static_cast<std::size_t>(model_->n_layer()));

  std::vector<std::vector<double>> want(got.size());
  for (std::size_t i = 0; i < pos.size(); ++i) {
    const auto p = residual(pos[i]);
    const auto n = residual(neg[i]);
    for (std::size_t l = 0; l < got.size(); ++l) {
      want[l].resize(p[l].size(), 0.0);
      for (std::size_t j = 0; j < p[l].size(); ++j) {
        want[l][j] += (double(p[l][j]) - double(n[l][j])) / double(pos.size());
      }
    }
  }
  double largest = 0.0;
  for (std::size_t l = 0; l < got.size(); ++l) {
    ASSERT_EQ(got[l].size(), want[l].size());
    for (std::size_t j = 0; j < got[l].size(); ++j) {
      EXPECT_NEAR(got[l][j], want[l][j], 1e-4 * (1.0 + std::abs(want[l][j]))) << l << "," << j;
      largest = std::max(largest, std::abs(want[l][j]));
    }
  }
  EXPECT_GT(largest, 1e-3) << "the pairs differ, so must their residuals";

  // Swapping the halves of every pair negates the direction.
  for (auto& pair : pairs) std::swap(pair.positive, pair.negative);
  const auto swapped = extract_residual_directions(s, pairs);
  for (std::size_t l = 0; l < got.size(); ++l) {
    for (std::size_t j = 0; j < got[l].size(); ++j) {
      EXPECT_NEAR(swapped[l][j], -got[l][j], 1e-5 * (1.0 + std::abs(got[l][j])));
    }
  }
}

TEST_F(ResidualExtraction, RefusesNoPairsAndEmptyPrompts) {
  Session s(model_, params_);
  EXPECT_THROW(extract_residual_directions(s, {}), Error);
  std::vector<ContrastivePair> pairs{{model_->tokenize("Tom was glad.", true), {}}};
  EXPECT_THROW(extract_residual_directions(s, pairs), Error);
}

}  // namespace
}  // namespace kvsteer
