// extract_residual_directions (kvsteer/steering.h), activation steering's direction, on
// stories260K: the mean of (positive - negative) block outputs at the last prompt token.
#include <gtest/gtest.h>

#include <cmath>
#include <span>
#include <stdexcept>
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
  ResidualExtractionParams count;
  count.progress = [&](std::size_t, std::size_t) { ++calls; };
  const auto got = extract_residual_directions(s, pairs, count);
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

TEST_F(ResidualExtraction, StoppedExtractionGoesOnFromItsCheckpointBitForBit) {
  const std::vector<std::string> pos{"Lily was happy.", "Tom was glad.", "Sue smiled.",
                                     "Ben laughed a lot."};
  const std::vector<std::string> neg{"Lily was sad.", "Tom was upset.", "Sue cried.",
                                     "Ben was angry."};
  std::vector<ContrastivePair> pairs;
  for (std::size_t i = 0; i < pos.size(); ++i) {
    pairs.push_back({model_->tokenize(pos[i], true), model_->tokenize(neg[i], true)});
  }
  Session whole(model_, params_);
  std::vector<std::size_t> seen;
  ResidualExtractionParams watch;
  watch.on_checkpoint = [&](const ResidualCheckpoint& cp) { seen.push_back(cp.pairs_done); };
  const auto want = extract_residual_directions(whole, pairs, watch);
  EXPECT_EQ(seen, (std::vector<std::size_t>{1, 2, 3, 4}));

  // Stopped before the third pair (an exception from the progress callback, as a kill would).
  Session first(model_, params_);
  ResidualCheckpoint kept;
  ResidualExtractionParams stop;
  stop.on_checkpoint = [&](const ResidualCheckpoint& cp) { kept = cp; };
  stop.progress = [](std::size_t done, std::size_t) {
    if (done == 2) throw std::runtime_error("stopped");
  };
  EXPECT_THROW((void)extract_residual_directions(first, pairs, stop), std::runtime_error);
  EXPECT_EQ(kept.pairs_done, 2u);
  EXPECT_EQ(kept.identity, residual_extraction_identity(first, pairs));

  Session second(model_, params_);
  ResidualExtractionParams resume;
  resume.resume = &kept;
  std::vector<std::size_t> decoded;
  resume.progress = [&](std::size_t done, std::size_t) { decoded.push_back(done); };
  const auto got = extract_residual_directions(second, pairs, resume);
  EXPECT_EQ(decoded, (std::vector<std::size_t>{2, 3, 4}));
  EXPECT_EQ(got, want);
}

TEST_F(ResidualExtraction, RefusesAnotherExtractionsCheckpoint) {
  std::vector<ContrastivePair> pairs{
      {model_->tokenize("Tom was glad.", true), model_->tokenize("Tom was upset.", true)},
      {model_->tokenize("Sue smiled.", true), model_->tokenize("Sue cried.", true)}};
  Session s(model_, params_);
  ResidualCheckpoint cp;
  ResidualExtractionParams keep;
  keep.on_checkpoint = [&](const ResidualCheckpoint& c) {
    if (c.pairs_done == 1) cp = c;
  };
  (void)extract_residual_directions(s, pairs, keep);
  const auto refused = [&](std::span<const ContrastivePair> ps, const ResidualCheckpoint& c,
                           const std::string& words) {
    ResidualExtractionParams r;
    r.resume = &c;
    try {
      (void)extract_residual_directions(s, ps, r);
      ADD_FAILURE() << "resumed: " << words;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  refused(std::span(pairs).first(1), cp, "another extraction");
  // A cache extraction of the same pairs is another extraction too.
  const Pos last[] = {-1};
  EXPECT_NE(residual_extraction_identity(s, pairs), extraction_identity(s, pairs, last));
  ResidualCheckpoint odd = cp;
  odd.sum[2].pop_back();
  refused(pairs, odd, "layers of");
  ResidualCheckpoint beyond = cp;
  beyond.pairs_done = 3;
  refused(pairs, beyond, "3 of 2 pairs");
}

TEST_F(ResidualExtraction, RefusesNoPairsAndEmptyPrompts) {
  Session s(model_, params_);
  EXPECT_THROW(extract_residual_directions(s, {}), Error);
  std::vector<ContrastivePair> pairs{{model_->tokenize("Tom was glad.", true), {}}};
  EXPECT_THROW(extract_residual_directions(s, pairs), Error);
}

}  // namespace
}  // namespace kvsteer
