// Properties of one-cell KV edits that must hold on every architecture and cache type.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "kvsteer/error.h"
#include "kvsteer/session.h"
#include "support/model_cases.h"

namespace kvsteer {
namespace {

using test::ModelCase;

// Teacher-forced logits of `continuation` after the prompt, one row per token.
std::vector<std::vector<float>> continue_logits(Session& s, SeqId seq,
                                                const std::vector<Token>& continuation) {
  std::vector<std::vector<float>> rows;
  for (Token t : continuation) {
    s.decode(seq, std::vector<Token>{t});
    const auto l = s.logits(seq);
    rows.emplace_back(l.begin(), l.end());
  }
  return rows;
}

CellDelta random_delta(const Model& m, unsigned seed, float scale, bool keys, bool values) {
  const auto& fp = m.fingerprint();
  CellDelta d;
  unsigned x = seed;
  auto next = [&x, scale] {
    x = x * 1103515245u + 12345u;
    return scale * (static_cast<float>((x >> 9) % 2001) / 1000.0f - 1.0f);
  };
  for (std::int32_t il = 0; il < fp.n_layer; ++il) {
    std::vector<float> k, v;
    if (keys && il >= 1) {
      for (std::int32_t j = 0; j < fp.n_embd_k_gqa; ++j) k.push_back(next());
    }
    if (values && il >= 1) {
      for (std::int32_t j = 0; j < fp.n_embd_v_gqa; ++j) v.push_back(next());
    }
    d.k.push_back(k);
    d.v.push_back(v);
  }
  return d;
}

// Rounding of one stored value for the cache type (relative to the value's magnitude).
float tolerance(KvType type, float magnitude) {
  switch (type) {
    case KvType::F32:
      return 1e-6f * (1 + magnitude);
    case KvType::F16:
      return 1e-3f * (1 + magnitude);
    case KvType::BF16:
      return 8e-3f * (1 + magnitude);
    default:
      return 2e-2f * (1 + magnitude);
  }
}

class KvEdit : public ::testing::TestWithParam<ModelCase> {
 protected:
  void SetUp() override {
    model_ = test::shared_model(GetParam().model);
    session_ = std::make_unique<Session>(model_, test::session_params(GetParam()));
    prompt_ = test::sample_prompt(*model_, 24);
    continuation_ = test::sample_prompt(*model_, 6, 7);
  }
  std::shared_ptr<const Model> model_;
  std::unique_ptr<Session> session_;
  std::vector<Token> prompt_, continuation_;
};

TEST_P(KvEdit, ZeroEditIsBitIdentical) {
  Session& s = *session_;
  s.decode(0, prompt_);
  const auto blob_before = s.sequence_state(0);
  const auto reference = continue_logits(s, 0, continuation_);

  s.clear();
  s.decode(0, prompt_);
  CellDelta zero = random_delta(*model_, 1, 0.0f, true, true);
  s.add_to_cell(0, static_cast<Pos>(prompt_.size()) - 1, zero);
  EXPECT_EQ(s.sequence_state(0), blob_before);
  EXPECT_EQ(continue_logits(s, 0, continuation_), reference);
}

TEST_P(KvEdit, EditChangesOnlyTheTargetCell) {
  Session& s = *session_;
  const Pos target = static_cast<Pos>(prompt_.size()) - 4;
  s.decode(0, prompt_);
  std::vector<KvCell> before;
  for (Pos p = 0; p < static_cast<Pos>(prompt_.size()); ++p) before.push_back(s.read_cell(0, p));
  const CellDelta delta = random_delta(*model_, 2, 0.5f, false, true);  // c_k = 0: values only
  s.add_to_cell(0, target, delta);
  for (Pos p = 0; p < static_cast<Pos>(prompt_.size()); ++p) {
    const KvCell after = s.read_cell(0, p);
    for (std::size_t il = 0; il < after.k.size(); ++il) {
      EXPECT_EQ(after.k[il], before[p].k[il]) << "K changed at pos " << p << " layer " << il;
      if (p != target || delta.v[il].empty()) {
        EXPECT_EQ(after.v[il], before[p].v[il]) << "V changed at pos " << p << " layer " << il;
        continue;
      }
      for (std::size_t j = 0; j < after.v[il].size(); ++j) {
        const float want = before[p].v[il][j] + delta.v[il][j];
        EXPECT_NEAR(after.v[il][j], want, tolerance(GetParam().type_v, std::fabs(want)))
            << "layer " << il << " dim " << j;
      }
    }
  }
}

TEST_P(KvEdit, KeyEditReadsBack) {
  Session& s = *session_;
  const Pos target = static_cast<Pos>(prompt_.size()) - 1;
  s.decode(0, prompt_);
  const KvCell before = s.read_cell(0, target);
  const CellDelta delta = random_delta(*model_, 3, 0.5f, true, false);
  s.add_to_cell(0, target, delta);
  const KvCell after = s.read_cell(0, target);
  for (std::size_t il = 0; il < after.k.size(); ++il) {
    EXPECT_EQ(after.v[il], before.v[il]);
    for (std::size_t j = 0; j < after.k[il].size(); ++j) {
      const float want = before.k[il][j] + (delta.k[il].empty() ? 0.0f : delta.k[il][j]);
      EXPECT_NEAR(after.k[il][j], want, tolerance(GetParam().type_k, std::fabs(want)))
          << "layer " << il << " dim " << j;
    }
  }
}

TEST_P(KvEdit, EditChangesLaterLogitsOnly) {
  Session& s = *session_;
  s.decode(0, prompt_);
  const auto reference = continue_logits(s, 0, continuation_);
  s.clear();
  s.decode(0, prompt_);
  s.add_to_cell(0, static_cast<Pos>(prompt_.size()) - 1,
                random_delta(*model_, 4, 2.0f, true, true));
  const auto steered = continue_logits(s, 0, continuation_);
  for (std::size_t i = 0; i < steered.size(); ++i) {
    EXPECT_NE(steered[i], reference[i]) << "step " << i << " was not affected by the edit";
  }
}

TEST_P(KvEdit, SteeringOneSequenceLeavesAnotherUnchanged) {
  Session s(model_, test::session_params(GetParam(), 2));
  const std::vector<DecodeItem> both{{0, prompt_, false}, {1, prompt_, false}};
  s.decode(both);
  const std::vector<DecodeItem> next{{0, {&continuation_[0], 1}, true},
                                     {1, {&continuation_[0], 1}, true}};
  // On iSWA models (gemma2) any restore moves the cache head back to the edited cell, and
  // llama.cpp then reuses cells that fell out of the sliding window for the next tokens: their
  // placement, and so the float summation order, differs (docs/DESIGN.md). The reference for B is
  // therefore A edited by zero: what must not reach B is the content of A's edit.
  const auto& swa = model_->swa_layers();
  if (std::find(swa.begin(), swa.end(), true) != swa.end()) {
    s.add_to_cell(0, static_cast<Pos>(prompt_.size()) - 1,
                  random_delta(*model_, 5, 0.0f, true, true));
  }
  s.decode(next);
  const auto b_reference = std::vector<float>(s.logits(1).begin(), s.logits(1).end());

  s.clear();
  s.decode(both);
  s.add_to_cell(0, static_cast<Pos>(prompt_.size()) - 1,
                random_delta(*model_, 5, 2.0f, true, true));
  s.decode(next);
  EXPECT_EQ(std::vector<float>(s.logits(1).begin(), s.logits(1).end()), b_reference);
  EXPECT_NE(std::vector<float>(s.logits(0).begin(), s.logits(0).end()), b_reference);
}

TEST_P(KvEdit, FullSequenceRouteMatchesOneCellRoute) {
  auto params = test::session_params(GetParam());
  params.edit_route = EditRoute::FullSequence;
  Session full(model_, params);
  Session& one = *session_;
  const CellDelta delta = random_delta(*model_, 6, 1.0f, true, true);
  for (Session* s : {&one, &full}) {
    s->decode(0, prompt_);
    s->add_to_cell(0, 10, delta);
  }
  EXPECT_EQ(full.sequence_state(0), one.sequence_state(0));
  EXPECT_EQ(continue_logits(full, 0, continuation_), continue_logits(one, 0, continuation_));
}

TEST_P(KvEdit, RejectsBadEdits) {
  Session& s = *session_;
  s.decode(0, prompt_);
  const auto n = static_cast<Pos>(prompt_.size());
  CellDelta good = random_delta(*model_, 7, 1.0f, true, true);
  EXPECT_THROW(s.add_to_cell(0, n, good), Error);
  EXPECT_THROW(s.add_to_cell(0, -1, good), Error);
  EXPECT_THROW(s.read_cell(0, n), Error);
  EXPECT_THROW(s.add_to_cell(3, 0, good), Error);
  CellDelta nan = good;
  nan.v[1][0] = std::nanf("");
  EXPECT_THROW(s.add_to_cell(0, 1, nan), Error);
  CellDelta wrong = good;
  wrong.k[1].push_back(0.0f);
  EXPECT_THROW(s.add_to_cell(0, 1, wrong), Error);
  CellDelta extra = good;
  extra.v.emplace_back();
  EXPECT_THROW(s.add_to_cell(0, 1, extra), Error);
  // Nothing was changed by the refused edits.
  Session fresh(model_, test::session_params(GetParam()));
  fresh.decode(0, prompt_);
  EXPECT_EQ(s.sequence_state(0), fresh.sequence_state(0));
}

// The edit must cost later tokens nothing: the edited cell stays where it was, so the tokens
// decoded after it see the same cells in the same attention window as without the edit (a cell
// moved to a higher index would widen the window and break contiguity). Two sequences, as
// generation runs.
TEST_P(KvEdit, EditKeepsTheAttentionWindow) {
  auto params = test::session_params(GetParam(), 2);
  params.capture_attention_window = true;
  Session s(model_, params);
  auto windows = [&](bool edited) {
    s.clear();
    s.decode(0, prompt_, false);
    s.decode(1, continuation_, false);
    if (edited) {
      s.add_to_cell(0, static_cast<Pos>(prompt_.size()) - 1,
                    random_delta(*model_, 5, 0.5f, true, true));
      s.add_to_cell(1, static_cast<Pos>(continuation_.size()) - 1,
                    random_delta(*model_, 6, 0.5f, true, true));
    }
    std::vector<AttentionWindow> out;
    for (Token t : continuation_) {
      for (SeqId seq : {0, 1}) {
        s.decode(seq, std::vector<Token>{t});
        out.push_back(s.last_attention_window());
      }
    }
    return out;
  };
  const auto plain = windows(false);
  const auto steered = windows(true);
  ASSERT_EQ(plain.size(), steered.size());
  for (std::size_t i = 0; i < plain.size(); ++i) {
    EXPECT_EQ(plain[i].n_kv, steered[i].n_kv) << "step " << i;
    EXPECT_EQ(plain[i].visible_cells, steered[i].visible_cells) << "step " << i;
  }
  // Sequence 0's first new token sees its prompt's cells 0.. and its own cell after sequence 1's
  // (a sliding-window layer 0, gemma2's, sees only the window's last cells).
  const auto& first = plain.front().visible_cells;
  const auto n_prompt = static_cast<std::int32_t>(prompt_.size());
  const auto own = static_cast<std::int32_t>(prompt_.size() + continuation_.size());
  EXPECT_EQ(first.back(), own);
  if (!model_->swa_layers().front()) {
    ASSERT_EQ(first.size(), prompt_.size() + 1);
    for (std::int32_t j = 0; j < n_prompt; ++j) EXPECT_EQ(first[static_cast<std::size_t>(j)], j);
  }
}

TEST(AttentionWindow, IsRefusedWhenNotCaptured) {
  auto model = test::shared_model("stories260K");
  Session s(model, test::session_params(test::ModelCase{"stories260K"}));
  s.decode(0, test::sample_prompt(*model, 4));
  EXPECT_THROW((void)s.last_attention_window(), Error);
}

INSTANTIATE_TEST_SUITE_P(AllModels, KvEdit, ::testing::ValuesIn(test::all_model_cases()),
                         [](const ::testing::TestParamInfo<ModelCase>& tp) {
                           return tp.param.name();
                         });

}  // namespace
}  // namespace kvsteer
