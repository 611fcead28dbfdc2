// KvStreams::PerSequence (kvsteer/session.h): a cache stream per sequence. Edits and reads are as
// exact as in a unified cache, copy_sequence copies at once (an edit right after it sticks), a
// lone sequence computes what it computes in a unified cache, and a sequence's results do not
// depend on the other sequences decoded beside it beyond the rounding of batched matmuls.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include "kvsteer/error.h"
#include "kvsteer/generation.h"
#include "kvsteer/session.h"
#include "support/model_cases.h"

namespace kvsteer {
namespace {

class KvStreamsTest : public ::testing::Test {
 protected:
  void SetUp() override { model_ = test::shared_model("stories260K"); }

  // F32 cache and flash attention off: the setting where layouts can be compared bit for bit.
  SessionParams params(KvStreams streams, std::uint32_t n_seq) const {
    SessionParams p;
    p.n_seq = n_seq;
    p.n_ctx = 256 * n_seq;
    p.n_batch = 256;
    p.n_threads = 1;
    p.type_k = p.type_v = KvType::F32;
    p.flash_attn = FlashAttn::Off;
    p.kv_streams = streams;
    p.edit_route = EditRoute::FullSequence;
    return p;
  }

  std::vector<Token> tokens(const char* text) const { return model_->tokenize(text, true); }

  CellDelta delta(float scale) const {
    const auto& fp = model_->fingerprint();
    CellDelta d;
    d.k.resize(static_cast<std::size_t>(fp.n_layer));
    d.v.resize(static_cast<std::size_t>(fp.n_layer));
    for (std::int32_t il = 1; il < fp.n_layer; ++il) {
      for (std::int32_t j = 0; j < fp.n_embd_v_gqa; ++j)
        d.v[static_cast<std::size_t>(il)].push_back(scale * static_cast<float>((j % 7) - 3));
    }
    return d;
  }

  // Greedy continuation of seq for n tokens, decoding every listed sequence each step (the
  // others' tokens are fixed), returning seq's logits at each step.
  static std::vector<std::vector<float>> steps(Session& s, SeqId seq, std::vector<SeqId> others,
                                               int n) {
    std::vector<std::vector<float>> out;
    for (int i = 0; i < n; ++i) {
      const auto l = s.logits(seq);
      out.emplace_back(l.begin(), l.end());
      const Token next = static_cast<Token>(std::max_element(l.begin(), l.end()) - l.begin());
      std::vector<std::vector<Token>> toks{{next}};
      for (std::size_t k = 0; k < others.size(); ++k) toks.push_back({static_cast<Token>(100 + i)});
      // Spans into toks, which is not resized from here on.
      std::vector<DecodeItem> items{{seq, toks[0], true}};
      for (std::size_t k = 0; k < others.size(); ++k)
        items.push_back({others[k], toks[k + 1], true});
      s.decode(items);
    }
    return out;
  }

  std::shared_ptr<const Model> model_;
};

// keep_prefix (the prompt cache's truncation) in either layout: the kept cells are untouched,
// the rest is gone, and decoding the dropped tokens again gives the logits of one whole decode.
TEST_F(KvStreamsTest, KeepPrefixDropsTheTailAndDecodingGoesOnFromIt) {
  const auto t = tokens("Once upon a time, there was a little cat who liked milk.");
  ASSERT_GT(t.size(), 8u);
  for (KvStreams streams : {KvStreams::Unified, KvStreams::PerSequence}) {
    Session s(model_, params(streams, 2));
    s.decode(0, t);
    const auto whole = s.logits(0);
    const std::vector<float> want(whole.begin(), whole.end());
    const KvCell kept_before = s.read_cell(0, 4);
    s.decode(1, t);
    s.keep_prefix(0, 5);
    EXPECT_EQ(s.next_pos(0), 5);
    EXPECT_EQ(s.next_pos(1), static_cast<Pos>(t.size())) << "another sequence is untouched";
    EXPECT_THROW((void)s.logits(0), Error) << "its logits went with the dropped cells";
    const KvCell kept_after = s.read_cell(0, 4);
    EXPECT_EQ(kept_after.k, kept_before.k);
    EXPECT_EQ(kept_after.v, kept_before.v);
    s.decode(0, std::span<const Token>(t).subspan(5));
    const auto again = s.logits(0);
    double worst = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      worst = std::max(worst, static_cast<double>(std::abs(again[i] - want[i])));
    }
    // Decoded in two calls instead of one: the same cells, summed in another matmul batch.
    EXPECT_LT(worst, 1e-4) << kv_streams_name(streams);
    EXPECT_THROW(s.keep_prefix(0, -1), Error);
    EXPECT_THROW(s.keep_prefix(2, 0), Error);
  }
}

TEST_F(KvStreamsTest, NeedsTheFullSequenceRoute) {
  SessionParams p = params(KvStreams::PerSequence, 2);
  p.edit_route = EditRoute::OneCell;
  try {
    Session s(model_, p);
    FAIL() << "a one-cell route over per-sequence streams was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("full-sequence edit route"), std::string::npos);
  }
}

TEST_F(KvStreamsTest, EditsAndReadsAreExactAndTouchOneSequence) {
  Session s(model_, params(KvStreams::PerSequence, 3));
  const std::vector<std::vector<Token>> prompts{tokens("Once upon a time"),
                                                tokens("Lily had a red ball"), tokens("Tom ran")};
  for (SeqId q = 0; q < 3; ++q) s.decode(q, prompts[static_cast<std::size_t>(q)]);
  const Pos pos = static_cast<Pos>(prompts[1].size()) - 1;
  const KvCell before = s.read_cell(1, pos);
  const auto others0 = s.read_cells(0);
  const auto others2 = s.read_cells(2);
  const CellDelta d = delta(0.25f);
  s.add_to_cell(1, pos, d);
  const KvCell after = s.read_cell(1, pos);
  for (std::size_t il = 0; il < after.v.size(); ++il) {
    EXPECT_EQ(after.k[il], before.k[il]) << il;
    for (std::size_t j = 0; j < after.v[il].size(); ++j) {
      const float want = before.v[il][j] + (d.v[il].empty() ? 0.0f : d.v[il][j]);
      ASSERT_EQ(after.v[il][j], want) << il << "," << j;
    }
  }
  const auto same = [](const std::vector<KvCell>& a, const std::vector<KvCell>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
      if (a[i].k != b[i].k || a[i].v != b[i].v) return false;
    return true;
  };
  EXPECT_TRUE(same(s.read_cells(0), others0));
  EXPECT_TRUE(same(s.read_cells(2), others2));
  // The sequence goes on decoding from its edited cache.
  s.decode(1, std::vector<Token>{tokens("x").back()});
  EXPECT_EQ(s.next_pos(1), pos + 2);
}

TEST_F(KvStreamsTest, AnEditRightAfterACopyStaysAfterTheNextDecode) {
  // llama.cpp copies one stream into another only at the next decode; copy_sequence must copy
  // at once, or the edit below is made on stale cells and then overwritten by the copy.
  Session s(model_, params(KvStreams::PerSequence, 3));
  const auto prompt = tokens("Once upon a time there was a girl");
  s.decode(0, prompt);
  s.copy_sequence(0, 1);
  s.copy_sequence(0, 2);
  const Pos pos = static_cast<Pos>(prompt.size()) - 1;
  const KvCell original = s.read_cell(0, pos);
  EXPECT_EQ(s.read_cell(1, pos).v, original.v);
  const CellDelta d = delta(0.5f);
  s.add_to_cell(1, pos, d);
  const Token t = prompt.back();
  const std::vector<Token> one{t};
  std::vector<DecodeItem> items{{0, one, true}, {1, one, true}, {2, one, true}};
  s.decode(items);
  const KvCell edited = s.read_cell(1, pos);
  for (std::size_t il = 1; il < edited.v.size(); ++il) {
    for (std::size_t j = 0; j < edited.v[il].size(); ++j) {
      ASSERT_EQ(edited.v[il][j], original.v[il][j] + d.v[il][j]) << il << "," << j;
    }
  }
  const auto l0 = s.logits(0), l1 = s.logits(1), l2 = s.logits(2);
  EXPECT_TRUE(std::equal(l0.begin(), l0.end(), l2.begin())) << "copies of one prefill";
  EXPECT_FALSE(std::equal(l0.begin(), l0.end(), l1.begin())) << "the edit must act";
}

TEST_F(KvStreamsTest, ALoneSequenceComputesWhatItDoesInAUnifiedCache) {
  const auto prompt = tokens("Once upon a time");
  Session unified(model_, params(KvStreams::Unified, 1));
  Session streams(model_, params(KvStreams::PerSequence, 1));
  unified.decode(0, prompt);
  streams.decode(0, prompt);
  EXPECT_EQ(steps(unified, 0, {}, 24), steps(streams, 0, {}, 24));
}

TEST_F(KvStreamsTest, ASequenceDoesNotDependOnItsNeighbours) {
  // Alone, and beside two sequences of other lengths that started before it: in a unified cache
  // its cells would sit after theirs; here each has its own stream.
  const auto prompt = tokens("Once upon a time");
  Session alone(model_, params(KvStreams::PerSequence, 3));
  alone.decode(0, prompt);
  Session shared(model_, params(KvStreams::PerSequence, 3));
  shared.decode(1, tokens("Lily had a big red ball and a small blue one"));
  shared.decode(2, tokens("Tom"));
  shared.decode(0, prompt);
  const auto a = steps(alone, 0, {}, 24);
  const auto b = steps(shared, 0, {1, 2}, 24);
  // Not bit for bit: a decode of three tokens runs the matmuls with another batch size than a
  // decode of one (measured here: 7.9e-6). Attention over a neighbour's cells would move
  // logits by far more than the bound.
  double largest = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    for (std::size_t j = 0; j < a[i].size(); ++j)
      largest = std::max(largest, static_cast<double>(std::abs(a[i][j] - b[i][j])));
  }
  EXPECT_LT(largest, 1e-4);
}

TEST_F(KvStreamsTest, ASequenceHoldsItsStreamsShareAndLongerRequestsAreRefusedUpFront) {
  Session unified(model_, params(KvStreams::Unified, 2));
  Session streams(model_, params(KvStreams::PerSequence, 2));
  EXPECT_EQ(unified.n_ctx(), 512u);
  EXPECT_EQ(unified.n_ctx_seq(), 512u);
  EXPECT_EQ(streams.n_ctx(), 512u);
  EXPECT_EQ(streams.n_ctx_seq(), 256u);
  // 10 + 300 cells fit the whole cache but not one stream: refused before anything is decoded,
  // not by the decode that overflows the stream halfway through the answer.
  const auto prompt = tokens("Once upon a time");
  GenerationRequest r;
  r.seq = 0;
  r.prompt = prompt;
  GenerationParams gp;
  gp.n_predict = 300;
  try {
    generate(streams, std::vector<GenerationRequest>{r}, gp);
    FAIL() << "a request longer than its stream was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("256 per sequence"), std::string::npos) << e.what();
  }
  EXPECT_EQ(streams.next_pos(0), 0);
}

}  // namespace
}  // namespace kvsteer
