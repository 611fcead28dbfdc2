#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kvsteer/error.h"
#include "kvsteer/steering.h"

namespace kvsteer {
namespace {

SteeringVector small_vector(std::int32_t n_layer, std::int32_t width) {
  SteeringVector v;
  v.model.n_layer = n_layer;
  v.model.n_embd_k_gqa = width;
  v.model.n_embd_v_gqa = width;
  for (std::int32_t il = 0; il < n_layer; ++il) {
    v.k.emplace_back(static_cast<std::size_t>(width), static_cast<float>(il + 1));
    v.v.emplace_back(static_cast<std::size_t>(width), -static_cast<float>(il + 1));
  }
  return v;
}

TEST(LayerSelection, ParsesForms) {
  EXPECT_EQ(LayerSelection::parse("1-").min_layer, 1);
  EXPECT_TRUE(LayerSelection::parse("1-").layers.empty());
  EXPECT_TRUE(LayerSelection::parse("all").contains(0));
  EXPECT_FALSE(LayerSelection::parse("none").contains(5));
  EXPECT_EQ(LayerSelection::parse("3,5,7").layers, (std::vector<std::int32_t>{3, 5, 7}));
  EXPECT_EQ(LayerSelection::parse("2-4,9").layers, (std::vector<std::int32_t>{2, 3, 4, 9}));
  EXPECT_EQ(LayerSelection::parse("5,3,5").to_string(), "3,5");
  EXPECT_EQ(LayerSelection::parse("4-").to_string(), "4-");
  EXPECT_FALSE(LayerSelection{}.contains(0));  // the paper never steers layer 0
  EXPECT_TRUE(LayerSelection{}.contains(1));
}

TEST(LayerSelection, RejectsGarbage) {
  for (const char* bad : {"", "x", "1,,2", "-3", "5-2", "1.5", "2-x"}) {
    EXPECT_THROW(LayerSelection::parse(bad), Error) << bad;
  }
}

TEST(SteeringDelta, ScalesSelectedLayersOnly) {
  const auto vec = small_vector(4, 3);
  SteeringParams p;
  p.coef_k = 0.5f;
  p.coef_v = 2.0f;
  p.layers_k = LayerSelection::parse("2");
  const CellDelta d = steering_delta(vec, p);
  ASSERT_EQ(d.k.size(), 4u);
  EXPECT_TRUE(d.k[0].empty());
  EXPECT_TRUE(d.k[1].empty());
  EXPECT_EQ(d.k[2], (std::vector<float>{1.5f, 1.5f, 1.5f}));
  EXPECT_TRUE(d.k[3].empty());
  EXPECT_TRUE(d.v[0].empty());  // layers >= 1 by default
  EXPECT_EQ(d.v[3], (std::vector<float>{-8.0f, -8.0f, -8.0f}));
}

TEST(SteeringDelta, ZeroCoefficientLeavesRowsEmpty) {
  const auto vec = small_vector(3, 2);
  SteeringParams p;
  p.coef_k = 0.0f;
  p.coef_v = 0.0f;
  const CellDelta d = steering_delta(vec, p);
  for (const auto& row : d.k) EXPECT_TRUE(row.empty());
  for (const auto& row : d.v) EXPECT_TRUE(row.empty());
}

TEST(SteeringDelta, RejectsNonFiniteCoefficientsAndUnknownLayers) {
  const auto vec = small_vector(3, 2);
  SteeringParams p;
  p.coef_v = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(steering_delta(vec, p), Error);
  p.coef_v = std::numeric_limits<float>::infinity();
  EXPECT_THROW(steering_delta(vec, p), Error);
  p.coef_v = 1.0f;
  p.layers_v = LayerSelection::parse("1,7");
  try {
    steering_delta(vec, p);
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("layer 7"), std::string::npos) << e.what();
  }
}

// A selection that steers no layer of the model would make the edit a silent no-op.
TEST(SteeringDelta, RefusesASelectionThatSelectsNoLayerOnlyWhenItsCoefficientActs) {
  const auto vec = small_vector(3, 2);
  const auto message = [&](const SteeringParams& p) -> std::string {
    try {
      (void)steering_delta(vec, p);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
      return e.what();
    }
    return "";
  };
  SteeringParams p;
  p.coef_v = 2.0f;
  p.layers_v = LayerSelection::parse("3-");
  EXPECT_EQ(message(p),
            "the V layer selection '3-' selects no layer: the model has 3 layers (0..2)");
  p.coef_v = 0.0f;  // nothing to apply: nothing to refuse
  EXPECT_EQ(message(p), "");
  p.coef_v = 2.0f;
  p.layers_v = LayerSelection::parse("none");  // nothing, on purpose
  EXPECT_EQ(message(p), "");
  p.layers_v = LayerSelection::parse("2-");
  p.coef_k = 1.0f;
  p.layers_k = LayerSelection::parse("5-");
  EXPECT_EQ(message(p),
            "the K layer selection '5-' selects no layer: the model has 3 layers (0..2)");
  // The same check without a vector, as a run makes it before extracting one.
  EXPECT_THROW(check_layers(p, 3), Error);
  EXPECT_NO_THROW(check_layers(p, 6));
  const auto one_layer = small_vector(1, 2);
  SteeringParams defaults;  // layers >= 1 on a one-layer model: no layer
  EXPECT_THROW((void)steering_delta(one_layer, defaults), Error);
}

TEST(ModelFingerprint, MismatchNamesTheField) {
  ModelFingerprint a;
  a.arch = "llama";
  a.n_layer = 4;
  ModelFingerprint b = a;
  EXPECT_EQ(a.mismatch(b), "");
  b.n_layer = 5;
  EXPECT_EQ(a.mismatch(b), "n_layer is 4 in the vector but 5 in the model");
  b = a;
  b.vocab_hash = "x";
  EXPECT_NE(a.mismatch(b).find("vocabulary hash"), std::string::npos);
}

TEST(SteeringDelta, RefusesNonFiniteVectorValuesNamingTheLayer) {
  auto vec = small_vector(3, 2);
  vec.v[2][1] = std::numeric_limits<float>::quiet_NaN();
  SteeringParams p;
  try {
    steering_delta(vec, p);
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("layer 2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("nan"), std::string::npos) << e.what();
  }
  // A layer that is not selected is not read.
  p.layers_v = LayerSelection::parse("1");
  EXPECT_NO_THROW(steering_delta(vec, p));
}

TEST(SteeringDelta, RefusesAProductThatOverflowsFloat) {
  auto vec = small_vector(3, 2);
  vec.k[1][0] = 1e30f;
  SteeringParams p;
  p.coef_k = 1e10f;
  try {
    steering_delta(vec, p);
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("layer 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("1e+30"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kvsteer
