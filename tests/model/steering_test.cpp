// Extraction and one-time steering on a real pretrained model (stories260K).
#include <gtest/gtest.h>

#include <set>
#include <stdexcept>
#include <string>
#include <tuple>

#include "kvsteer/checkpoint_file.h"
#include "kvsteer/error.h"
#include "kvsteer/generation.h"
#include "kvsteer/steering.h"
#include "support/model_cases.h"
#include "support/test_env.h"

namespace kvsteer {
namespace {

class Steering : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = test::shared_model("stories260K");
    params_.n_ctx = 512;
    params_.n_batch = 64;
    params_.n_threads = 1;
    params_.type_k = KvType::F32;
    params_.type_v = KvType::F32;
  }
  std::vector<ContrastivePair> pairs() const {
    std::vector<ContrastivePair> out;
    const char* happy[] = {"Lily was very happy. She smiled and laughed with her mom.",
                           "Tom had a big smile. He was glad and played all day.",
                           "The sun was warm and the girl felt joy in her heart."};
    const char* sad[] = {"Lily was very sad. She cried and frowned at her mom.",
                         "Tom had a big frown. He was upset and cried all day.",
                         "The rain was cold and the girl felt pain in her heart."};
    for (int i = 0; i < 3; ++i) {
      out.push_back({model_->tokenize(happy[i], true), model_->tokenize(sad[i], true)});
    }
    return out;
  }
  std::shared_ptr<const Model> model_;
  SessionParams params_;
};

TEST_F(Steering, ExtractionIsTheMeanOfCellDifferences) {
  const auto ps = pairs();
  Session one(model_, params_);
  const SteeringVector vec = extract_steering_vector(one, ps);
  SessionParams batched = params_;
  batched.n_seq = 4;  // four prompts per decode
  Session s(model_, batched);
  const SteeringVector vec_batched = extract_steering_vector(s, ps);

  Session single(model_, params_);
  const auto& fp = model_->fingerprint();
  std::vector<std::vector<double>> want_k(fp.n_layer), want_v(fp.n_layer);
  for (const auto& pair : ps) {
    for (const auto& [tokens, sign] :
         {std::pair{&pair.positive, 1.0}, std::pair{&pair.negative, -1.0}}) {
      single.clear();
      single.decode(0, *tokens, false);
      const KvCell cell = single.read_cell(0, static_cast<Pos>(tokens->size()) - 1);
      for (std::int32_t il = 0; il < fp.n_layer; ++il) {
        want_k[il].resize(cell.k[il].size());
        want_v[il].resize(cell.v[il].size());
        for (std::size_t j = 0; j < cell.k[il].size(); ++j)
          want_k[il][j] += sign * cell.k[il][j] / 3;
        for (std::size_t j = 0; j < cell.v[il].size(); ++j)
          want_v[il][j] += sign * cell.v[il][j] / 3;
      }
    }
  }
  ASSERT_EQ(vec.k.size(), static_cast<std::size_t>(fp.n_layer));
  double max_diff = 0;
  double max_diff_batched = 0;
  double max_abs = 0;
  for (std::int32_t il = 0; il < fp.n_layer; ++il) {
    ASSERT_EQ(vec.k[il].size(), want_k[il].size());
    ASSERT_EQ(vec_batched.k[il].size(), want_k[il].size());
    for (std::size_t j = 0; j < want_k[il].size(); ++j) {
      for (const auto& [got, want] :
           {std::pair{vec.k[il][j], want_k[il][j]}, std::pair{vec.v[il][j], want_v[il][j]}}) {
        max_diff = std::max(max_diff, std::abs(got - want));
        max_abs = std::max(max_abs, std::abs(want));
      }
      max_diff_batched = std::max(max_diff_batched, std::abs(vec_batched.k[il][j] - want_k[il][j]));
      max_diff_batched = std::max(max_diff_batched, std::abs(vec_batched.v[il][j] - want_v[il][j]));
    }
  }
  ASSERT_GT(max_abs, 0.01) << "the vector is (nearly) zero: the test would prove nothing";
  // One prompt per decode: the same cells kv-dump reads; only the order of the float sums differs.
  EXPECT_LT(max_diff, 1e-6 * max_abs)
      << "max |extracted - mean of cell differences| = " << max_diff;
  // Several prompts per decode change the matmul kernels' rounding (llama-internals.md §6).
  EXPECT_LT(max_diff_batched, 1e-3 * max_abs)
      << "batched: " << max_diff_batched << " of " << max_abs;
  EXPECT_EQ(vec.info.n_pairs, 3u);
  EXPECT_EQ(vec.model.mismatch(model_->fingerprint()), "");
}

TEST_F(Steering, ExtractionShowsEveryCellItAverages) {
  const auto ps = pairs();
  SessionParams batched = params_;
  batched.n_seq = 4;
  Session s(model_, batched);
  struct Seen {
    std::size_t pair, position;
    bool positive;
    KvCell cell;
  };
  std::vector<Seen> seen;
  ExtractionParams ep;
  ep.on_cell = [&](std::size_t pair, bool positive, std::size_t position, const KvCell& cell) {
    seen.push_back({pair, position, positive, cell});
  };
  const Pos positions[] = {-1, -2};
  const auto vecs = extract_steering_vectors(s, ps, positions, ep);
  // Every prompt of every pair, at every position, once.
  ASSERT_EQ(seen.size(), ps.size() * 2 * 2);
  std::set<std::tuple<std::size_t, bool, std::size_t>> keys;
  for (const Seen& x : seen) keys.insert({x.pair, x.positive, x.position});
  EXPECT_EQ(keys.size(), seen.size());
  // The vector is the mean of what was shown: positive minus negative.
  for (std::size_t p = 0; p < 2; ++p) {
    for (std::size_t il = 1; il < vecs[p].v.size(); ++il) {
      for (std::size_t j = 0; j < vecs[p].v[il].size(); j += 7) {
        double mean = 0;
        for (const Seen& x : seen) {
          if (x.position == p) mean += (x.positive ? 1.0 : -1.0) * x.cell.v[il][j] / 3;
        }
        EXPECT_NEAR(vecs[p].v[il][j], mean, 1e-6) << "position " << p << " layer " << il;
      }
    }
  }
}

// An interrupted extraction resumed from its checkpoint (through a file, as the CLI does) gives the
// uninterrupted extraction's vectors bit for bit, and decodes only what the checkpoint lacks.
TEST_F(Steering, ExtractionResumedFromACheckpointEqualsAnUninterruptedOne) {
  test::TempDir dir;
  auto ps = pairs();
  ps.push_back({model_->tokenize("Ben found a shiny coin and jumped with joy.", true),
                model_->tokenize("Ben lost his shiny coin and sat down to cry.", true)});
  SessionParams batched = params_;
  batched.n_seq = 2;  // one pair per batch: a checkpoint after every pair
  const Pos positions[] = {-1, -2};
  Session whole(model_, batched);
  std::vector<std::size_t> checkpoints;
  ExtractionParams watch;
  watch.on_checkpoint = [&](const ExtractionCheckpoint& cp) {
    checkpoints.push_back(cp.pairs_done);
  };
  const auto want = extract_steering_vectors(whole, ps, positions, watch);
  EXPECT_EQ(checkpoints, (std::vector<std::size_t>{1, 2, 3, 4}));

  // Stopped after two pairs (an exception from the progress callback, as a kill would).
  Session first(model_, batched);
  ExtractionParams save;
  save.on_checkpoint = [&](const ExtractionCheckpoint& cp) {
    save_extraction_checkpoint(dir.file("x.partial"), cp);
  };
  save.progress = [](std::size_t done, std::size_t) {
    if (done == 2) throw std::runtime_error("stopped");
  };
  EXPECT_THROW(extract_steering_vectors(first, ps, positions, save), std::runtime_error);
  const ExtractionCheckpoint cp = load_extraction_checkpoint(dir.file("x.partial"));
  EXPECT_EQ(cp.pairs_done, 2u);
  EXPECT_EQ(cp.identity, extraction_identity(first, ps, positions));

  Session second(model_, batched);
  ExtractionParams resume;
  resume.resume = &cp;
  std::set<std::size_t> decoded;
  resume.on_cell = [&](std::size_t pair, bool, std::size_t, const KvCell&) {
    decoded.insert(pair);
  };
  const auto got = extract_steering_vectors(second, ps, positions, resume);
  EXPECT_EQ(decoded, (std::set<std::size_t>{2, 3}));
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t p = 0; p < want.size(); ++p) {
    ASSERT_EQ(got[p].k.size(), want[p].k.size());
    for (std::size_t il = 0; il < want[p].k.size(); ++il) {
      EXPECT_EQ(got[p].k[il], want[p].k[il]) << "position " << p << " layer " << il;
      EXPECT_EQ(got[p].v[il], want[p].v[il]) << "position " << p << " layer " << il;
    }
    EXPECT_EQ(got[p].info.n_pairs, 4u);
  }
  ASSERT_FALSE(want[0].v[1].empty());
}

TEST_F(Steering, ExtractionRefusesAnotherExtractionsCheckpoint) {
  const auto ps = pairs();
  SessionParams batched = params_;
  batched.n_seq = 2;
  const Pos last[] = {-1};
  Session s(model_, batched);
  ExtractionCheckpoint cp;
  ExtractionParams keep;
  keep.on_checkpoint = [&](const ExtractionCheckpoint& c) {
    if (c.pairs_done == 1) cp = c;
  };
  (void)extract_steering_vectors(s, ps, last, keep);
  const auto refused = [&](Session& session, std::span<const ContrastivePair> pairs,
                           std::span<const Pos> positions, const ExtractionCheckpoint& c,
                           const std::string& words) {
    ExtractionParams r;
    r.resume = &c;
    try {
      (void)extract_steering_vectors(session, pairs, positions, r);
      ADD_FAILURE() << "resumed: " << words;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  // Other pairs, other positions, another batch shape: another extraction.
  const std::vector<ContrastivePair> fewer(ps.begin(), ps.begin() + 2);
  refused(s, fewer, last, cp, "another extraction");
  const Pos two[] = {-1, -2};
  refused(s, ps, two, cp, "another extraction");
  SessionParams wider = batched;
  wider.n_seq = 4;
  Session w(model_, wider);
  refused(w, ps, last, cp, "another extraction");
  // The right identity with sums that do not fit.
  ExtractionCheckpoint odd = cp;
  odd.sums[0].v[3].pop_back();
  refused(s, ps, last, odd, "layer 3");
  ExtractionCheckpoint early = cp;
  early.pairs_done = 4;
  refused(s, ps, last, early, "4 of 3 pairs");
  // Two pairs per batch: one pair done is no batch's end.
  ExtractionCheckpoint mid = cp;
  mid.identity = extraction_identity(w, ps, last);
  refused(w, ps, last, mid, "not where a batch");
}

TEST_F(Steering, ExtractionRejectsBadInput) {
  Session s(model_, params_);
  EXPECT_THROW(extract_steering_vector(s, std::vector<ContrastivePair>{}), Error);
  std::vector<ContrastivePair> empty_prompt{{model_->tokenize("Lily", true), {}}};
  EXPECT_THROW(extract_steering_vector(s, empty_prompt), Error);
  ExtractionParams far;
  far.position = -100;
  EXPECT_THROW(extract_steering_vector(s, pairs(), far), Error);
}

TEST_F(Steering, SteeredGreedyGenerationDiffersAndIsReproducible) {
  Session s(model_, params_);
  const SteeringVector vec = extract_steering_vector(s, pairs());
  const auto prompt =
      model_->tokenize("Once upon a time, there was a little girl named Lily.", true);
  GenerationParams gen;
  gen.n_predict = 40;
  GenerationRequest plain{0, prompt, nullptr, {}};
  GenerationRequest steered{0, prompt, &vec, {}};
  steered.steering_params.coef_v = 40.0f;
  steered.steering_params.coef_k = 10.0f;
  const Generation a = generate(s, plain, gen);
  const Generation b = generate(s, steered, gen);
  const Generation b2 = generate(s, steered, gen);
  EXPECT_FALSE(a.tokens.empty());
  EXPECT_NE(a.tokens, b.tokens) << "steering did not change the greedy continuation: " << a.text;
  EXPECT_EQ(b.tokens, b2.tokens);
  EXPECT_EQ(b.text, b2.text);
}

TEST_F(Steering, ZeroCoefficientsGiveTheUnsteeredGeneration) {
  Session s(model_, params_);
  const SteeringVector vec = extract_steering_vector(s, pairs());
  const auto prompt = model_->tokenize("Once upon a time, there was a dog.", true);
  GenerationParams gen;
  gen.n_predict = 30;
  for (std::optional<Token> offset : {std::optional<Token>{}, std::optional<Token>{13}}) {
    GenerationRequest plain{0, prompt, nullptr, {}};
    plain.steering_params.offset_token = offset;
    GenerationRequest zero{0, prompt, &vec, {}};
    zero.steering_params.coef_k = 0.0f;
    zero.steering_params.coef_v = 0.0f;
    zero.steering_params.offset_token = offset;
    EXPECT_EQ(generate(s, plain, gen).tokens, generate(s, zero, gen).tokens);
  }
}

TEST_F(Steering, BatchedGenerationMatchesSingle) {
  SessionParams two = params_;
  two.n_seq = 2;
  Session s(model_, two);
  const SteeringVector vec = extract_steering_vector(s, pairs());
  const auto p1 = model_->tokenize("Once upon a time, there was a cat.", true);
  const auto p2 = model_->tokenize("Tom went to the park with his ball.", true);
  GenerationParams gen;
  gen.n_predict = 20;
  std::vector<GenerationRequest> reqs{{0, p1, &vec, {}}, {1, p2, nullptr, {}}};
  reqs[0].steering_params.coef_v = 4.0f;
  const auto together = generate(s, reqs, gen);
  const auto alone0 = generate(s, reqs[0], gen);
  GenerationRequest r1 = reqs[1];
  r1.seq = 0;
  const auto alone1 = generate(s, r1, gen);
  // F32 weights and cache: batch composition changes sums in the last bits only; greedy tokens
  // agree on this model (llama-internals.md §6).
  EXPECT_EQ(together[0].tokens, alone0.tokens);
  EXPECT_EQ(together[1].tokens, alone1.tokens);
}

TEST_F(Steering, StopStringsCutTheText) {
  Session s(model_, params_);
  const auto prompt = model_->tokenize("Once upon a time", true);
  GenerationParams gen;
  gen.n_predict = 60;
  const Generation free_run = generate(s, GenerationRequest{0, prompt, nullptr, {}}, gen);
  ASSERT_GT(free_run.text.size(), 12u);
  const std::string stop = free_run.text.substr(8, 3);
  gen.stop_strings = {stop};
  const Generation cut = generate(s, GenerationRequest{0, prompt, nullptr, {}}, gen);
  EXPECT_EQ(cut.stop_reason, StopReason::StopString);
  EXPECT_EQ(cut.text, free_run.text.substr(0, free_run.text.find(stop)));
  // An empty stop string would be met before any text; refused rather than ignored.
  gen.stop_strings = {stop, ""};
  try {
    generate(s, GenerationRequest{0, prompt, nullptr, {}}, gen);
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_STREQ(e.what(),
                 "stop string 2 of 2 is empty; give each stop string at least one character");
  }
}

TEST_F(Steering, RefusesVectorForAnotherModel) {
  Session s(model_, params_);
  SteeringVector vec = extract_steering_vector(s, pairs());
  vec.model.n_layer += 1;
  const auto prompt = model_->tokenize("Once upon a time", true);
  try {
    GenerationParams gen;
    gen.n_predict = 10;
    generate(s, GenerationRequest{0, prompt, &vec, {}}, gen);
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Format);
    EXPECT_NE(std::string(e.what()).find("n_layer"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kvsteer
