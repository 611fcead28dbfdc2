// Edits that stay in range, on every cache type the engine supports: an edit whose result the
// cache type cannot hold (F16 beyond 65504, BF16 beyond its range, a Q8_0 or Q4_0 block whose
// F16 scale overflows after requantization, a non-finite delta on F32) is refused naming the
// layer and the largest value, and the sequence's state is byte-identical afterwards; an edit
// just inside the range is written. A vector with a non-finite value is refused by generate()
// before any sequence is touched.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "kvsteer/error.h"
#include "kvsteer/generation.h"
#include "kvsteer/session.h"
#include "support/model_cases.h"

namespace kvsteer {
namespace {

using test::ModelCase;

struct RangeCase {
  ModelCase config;
  float fits_k, overflows_k;  // added to every K element of layer 1; overflows 0: no finite value
  float fits_v, overflows_v;  //   overflows the type (F32), a NaN is tried instead
  std::string name() const { return config.name(); }
};

void PrintTo(const RangeCase& c, std::ostream* os) { *os << c.name(); }

constexpr float kNone = 0.0f;

std::vector<RangeCase> range_cases() {
  const auto on = FlashAttn::On;
  return {
      {{"stories260K", KvType::F32, KvType::F32, on}, 1e30f, kNone, 1e30f, kNone},
      {{"stories260K", KvType::F16, KvType::F16, on}, 6e4f, 7e4f, 6e4f, 7e4f},
      // Flash attention off: V is stored transposed, element by element.
      {{"stories260K", KvType::F16, KvType::F16, FlashAttn::Off}, 6e4f, 7e4f, 6e4f, 7e4f},
      {{"stories260K", KvType::BF16, KvType::BF16, on}, 1e38f, 3.4e38f, 1e38f, 3.4e38f},
      {{"llama-f32.gguf", KvType::Q8_0, KvType::Q8_0, on}, 8e6f, 9e6f, 8e6f, 9e6f},
      {{"llama-f32.gguf", KvType::Q4_0, KvType::Q4_0, on}, 5e5f, 6e5f, 5e5f, 6e5f},
  };
}

// A delta of `value` in every element of layer 1's K (keys) or V row, nothing elsewhere.
CellDelta layer1_delta(const Model& m, bool keys, float value) {
  const auto& fp = m.fingerprint();
  CellDelta d;
  d.k.resize(static_cast<std::size_t>(fp.n_layer));
  d.v.resize(static_cast<std::size_t>(fp.n_layer));
  if (keys) {
    d.k[1].assign(static_cast<std::size_t>(fp.n_embd_k_gqa), value);
  } else {
    d.v[1].assign(static_cast<std::size_t>(fp.n_embd_v_gqa), value);
  }
  return d;
}

class KvRange : public ::testing::TestWithParam<RangeCase> {
 protected:
  void SetUp() override {
    model_ = test::shared_model(GetParam().config.model);
    session_ = std::make_unique<Session>(model_, test::session_params(GetParam().config));
    prompt_ = test::sample_prompt(*model_, 12);
  }
  std::shared_ptr<const Model> model_;
  std::unique_ptr<Session> session_;
  std::vector<Token> prompt_;
};

TEST_P(KvRange, EditBeyondTheCacheTypeIsRefusedAndChangesNothing) {
  const RangeCase& c = GetParam();
  Session& s = *session_;
  s.decode(0, prompt_);
  const Pos target = static_cast<Pos>(prompt_.size()) - 1;
  const auto before = s.sequence_state(0);
  for (const bool keys : {true, false}) {
    const float overflows = keys ? c.overflows_k : c.overflows_v;
    const KvType type = keys ? c.config.type_k : c.config.type_v;
    const float value = overflows == kNone ? std::numeric_limits<float>::quiet_NaN() : overflows;
    try {
      s.add_to_cell(0, target, layer1_delta(*model_, keys, value));
      ADD_FAILURE() << (keys ? "K" : "V") << " edit of " << value << " was not refused";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
      const std::string m = e.what();
      EXPECT_NE(m.find("layer 1"), std::string::npos) << m;
      EXPECT_NE(m.find("nothing was written"), std::string::npos) << m;
      if (overflows != kNone) {
        EXPECT_NE(m.find(std::string(keys ? "K" : "V") + " edit of layer 1"), std::string::npos)
            << m;
        EXPECT_NE(m.find(std::string("a ") + kv_type_name(type) + " cache"), std::string::npos)
            << m;
        EXPECT_NE(m.find("values up to"), std::string::npos) << m;
      }
    }
    EXPECT_EQ(s.sequence_state(0), before) << "a refused " << (keys ? "K" : "V") << " edit wrote";
  }
  // Just inside the range: written, and every stored value reads back finite.
  s.add_to_cell(0, target, layer1_delta(*model_, true, c.fits_k));
  s.add_to_cell(0, target, layer1_delta(*model_, false, c.fits_v));
  const KvCell cell = s.read_cell(0, target);
  for (float x : cell.k[1]) ASSERT_TRUE(std::isfinite(x));
  for (float x : cell.v[1]) ASSERT_TRUE(std::isfinite(x));
  EXPECT_NE(s.sequence_state(0), before);
  // The session goes on decoding after the refusals (the scratch sequence was released).
  s.decode(0, std::vector<Token>{prompt_.front()});
}

TEST_P(KvRange, NonFiniteVectorIsRefusedBeforeAnySequenceIsTouched) {
  Session& s = *session_;
  s.decode(0, prompt_);
  const auto before = s.sequence_state(0);
  SteeringVector vec;
  vec.model = model_->fingerprint();
  vec.info.k_rotated = s.k_rotated();
  const auto& fp = vec.model;
  vec.k.assign(static_cast<std::size_t>(fp.n_layer),
               std::vector<float>(static_cast<std::size_t>(fp.n_embd_k_gqa), 0.5f));
  vec.v.assign(static_cast<std::size_t>(fp.n_layer),
               std::vector<float>(static_cast<std::size_t>(fp.n_embd_v_gqa), 0.5f));
  vec.v[1][3] = std::numeric_limits<float>::infinity();
  GenerationRequest req{0, prompt_, &vec, {}};
  GenerationParams gp;
  gp.n_predict = 4;
  try {
    (void)generate(s, req, gp);
    FAIL() << "expected a refusal";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("layer 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("inf"), std::string::npos) << e.what();
  }
  EXPECT_EQ(s.sequence_state(0), before);
}

INSTANTIATE_TEST_SUITE_P(CacheTypes, KvRange, ::testing::ValuesIn(range_cases()),
                         [](const ::testing::TestParamInfo<RangeCase>& tp) {
                           return tp.param.name();
                         });

}  // namespace
}  // namespace kvsteer
