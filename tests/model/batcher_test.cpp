// Continuous batching (kvsteer/batcher.h) on stories260K: every request gets what generate() gives
// it alone, whoever shares its decode calls and whenever it joins.
#include "kvsteer/batcher.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "kvsteer/error.h"
#include "kvsteer/generation.h"
#include "kvsteer/steering.h"
#include "support/model_cases.h"

namespace kvsteer {
namespace {

class Batching : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = test::shared_model("stories260K");
    params_.n_ctx = 1024;
    params_.n_batch = 64;
    params_.n_threads = 1;
    params_.type_k = KvType::F32;
    params_.type_v = KvType::F32;
  }

  std::shared_ptr<const SteeringVector> vector() {
    SessionParams one = params_;
    Session s(model_, one);
    std::vector<ContrastivePair> pairs{
        {model_->tokenize("Lily was very happy. She smiled and laughed.", true),
         model_->tokenize("Lily was very sad. She cried and frowned.", true)},
        {model_->tokenize("Tom had a big smile. He was glad.", true),
         model_->tokenize("Tom had a big frown. He was upset.", true)}};
    return std::make_shared<const SteeringVector>(extract_steering_vector(s, pairs));
  }

  BatchRequest request(const std::string& prompt, std::shared_ptr<const SteeringVector> v,
                       float coef_v, std::int32_t n_predict = 24) {
    BatchRequest r;
    r.prompt = model_->tokenize(prompt, true);
    r.steering = std::move(v);
    r.steering_params.coef_v = coef_v;
    r.steering_params.offset_token = model_->tokenize("\n", false).back();
    r.n_predict = n_predict;
    return r;
  }

  // generate() for the same request, alone in its own session.
  Generation alone(const BatchRequest& r) {
    Session s(model_, params_);
    GenerationParams gen;
    gen.n_predict = r.n_predict;
    gen.stop_strings = r.stop_strings;
    gen.sampling = r.sampling;
    return generate(s, GenerationRequest{0, r.prompt, r.steering.get(), r.steering_params}, gen);
  }

  struct Outcome {
    std::string text;
    StopReason reason = StopReason::Length;
    std::int32_t n_generated = 0;
    int events = 0;
    bool finished = false;
  };

  // Runs the batcher until idle, submitting `late` requests after `delay` steps.
  std::map<RequestId, Outcome> drain(Batcher& b, int max_steps = 1000) {
    std::map<RequestId, Outcome> out;
    for (int i = 0; i < max_steps && !b.idle(); ++i) collect(b.step(), out);
    EXPECT_TRUE(b.idle());
    return out;
  }

  static void collect(const std::vector<BatchEvent>& events, std::map<RequestId, Outcome>& out) {
    for (const BatchEvent& e : events) {
      Outcome& o = out[e.id];
      EXPECT_FALSE(o.finished) << "an event after the request finished";
      o.text += e.piece;
      o.events += 1;
      o.n_generated = e.n_generated;
      if (e.finished) {
        o.finished = true;
        o.reason = e.stop_reason;
      }
    }
  }

  std::shared_ptr<const Model> model_;
  SessionParams params_;
};

TEST_F(Batching, OneRequestStreamsWhatGenerateReturns) {
  const auto v = vector();
  for (float c : {0.0f, 6.0f}) {
    SessionParams p = params_;
    p.n_seq = 2;
    Session s(model_, p);
    Batcher b(s);
    const BatchRequest r = request("Once upon a time, there was a cat.", v, c);
    const RequestId id = b.submit(r);
    const auto out = drain(b);
    const Generation want = alone(r);
    ASSERT_EQ(out.count(id), 1u);
    EXPECT_TRUE(out.at(id).finished);
    EXPECT_EQ(out.at(id).text, want.text) << "c_v " << c;
    EXPECT_EQ(out.at(id).reason, want.stop_reason);
    EXPECT_EQ(out.at(id).n_generated, static_cast<std::int32_t>(want.tokens.size()));
    EXPECT_GT(out.at(id).events, 1) << "the text arrives in pieces, not at the end";
  }
}

TEST_F(Batching, RequestsWithDifferentVectorsShareStepsAndEachGetsItsOwnOutput) {
  const auto v = vector();
  SessionParams p = params_;
  p.n_seq = 3;
  Session s(model_, p);
  Batcher b(s);
  const std::vector<BatchRequest> reqs{request("Once upon a time, there was a cat.", v, 6.0f),
                                       request("Once upon a time, there was a cat.", v, -6.0f),
                                       request("Tom went to the park with his ball.", nullptr, 0)};
  std::vector<RequestId> ids;
  for (const auto& r : reqs) ids.push_back(b.submit(r));
  EXPECT_EQ(b.queued(), 3u);
  std::map<RequestId, Outcome> out;
  collect(b.step(), out);
  EXPECT_EQ(b.running(), 3u) << "all three admitted in one step";
  for (const auto& [id, o] : drain(b)) {
    out[id].text += o.text;
    out[id].finished = o.finished;
    out[id].reason = o.reason;
  }
  // F32 weights and cache: batch composition changes sums in the last bits only; greedy tokens
  // agree on this model (as Steering.BatchedGenerationMatchesSingle).
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(out.at(ids[i]).text, alone(reqs[i]).text) << "request " << i;
  }
  EXPECT_NE(out.at(ids[0]).text, out.at(ids[1]).text) << "the two coefficients steer differently";
}

TEST_F(Batching, LateRequestsJoinRunningOnesAndQueueWhenSlotsAreFull) {
  const auto v = vector();
  SessionParams p = params_;
  p.n_seq = 2;
  Session s(model_, p);
  Batcher b(s);
  const BatchRequest first = request("Once upon a time, there was a cat.", v, 6.0f, 30);
  const BatchRequest second = request("Tom went to the park with his ball.", v, 3.0f, 10);
  const BatchRequest third = request("The sun was warm and the girl smiled.", nullptr, 0, 12);
  std::map<RequestId, Outcome> out;
  const RequestId a = b.submit(first);
  for (int i = 0; i < 5; ++i) collect(b.step(), out);
  const RequestId c = b.submit(second);
  const RequestId d = b.submit(third);
  collect(b.step(), out);
  EXPECT_EQ(b.running(), 2u);
  EXPECT_EQ(b.queued(), 1u) << "two slots: the third waits";
  for (const auto& [id, o] : drain(b)) {
    out[id].text += o.text;
    out[id].finished = o.finished;
  }
  EXPECT_EQ(out.at(a).text, alone(first).text);
  EXPECT_EQ(out.at(c).text, alone(second).text);
  EXPECT_EQ(out.at(d).text, alone(third).text);
  EXPECT_TRUE(out.at(d).finished);
}

// With the prompt cache a request reuses the cells that a finished one left untouched and answers
// as a fresh prefill would (F32 cache and weights: exact on this model).
TEST_F(Batching, PromptCacheReusesUntouchedCellsAndAnswersAsAFreshPrefill) {
  const auto v = vector();
  const std::string story = "Once upon a time, there was a cat. The cat liked to play in the sun.";
  const BatchRequest first = request(story, nullptr, 0);
  const BatchRequest longer = request(story + " One day", nullptr, 0);
  const BatchRequest steered = request(story + " One day", v, 6.0f);
  // What each reuses: the first's prompt (its answer parts from the longer prompt at once); the
  // whole prefill of the steered one (an unsteered request's cells are all untouched); all but
  // the edited cell of its repeat.
  const std::vector<std::pair<BatchRequest, std::size_t>> plan{
      {first, 0},
      {longer, first.prompt.size()},
      {steered, steered.prompt.size()},
      {steered, steered.prompt.size() - 1}};
  for (bool reuse : {true, false}) {
    SessionParams p = params_;
    p.n_seq = 2;
    Session s(model_, p);
    Batcher b(s, BatcherOptions{reuse});
    std::uint64_t reused_before = 0;
    for (std::size_t i = 0; i < plan.size(); ++i) {
      const auto& [r, want_reused] = plan[i];
      const RequestId id = b.submit(r);
      const auto out = drain(b);
      EXPECT_EQ(out.at(id).text, alone(r).text) << "request " << i << " reuse " << reuse;
      EXPECT_EQ(b.stats().reused_tokens - reused_before, reuse ? want_reused : 0u)
          << "request " << i << " reuse " << reuse;
      reused_before = b.stats().reused_tokens;
    }
  }
}

TEST_F(Batching, KeptPromptsGiveWayWhenTheCacheIsFull) {
  // 256 cells, three sequences, requests of about 110 cells: a kept prompt must be dropped for
  // every new request to fit beside a running one.
  SessionParams p = params_;
  p.n_ctx = 256;
  p.n_seq = 3;
  Session s(model_, p);
  Batcher b(s, BatcherOptions{true});
  const std::vector<std::string> prompts{
      "Once upon a time, there was a cat.", "Tom went to the park with his ball.",
      "The sun was warm and the girl smiled.", "Lily had a red hat and a blue bag."};
  std::vector<BatchRequest> reqs;
  for (const auto& text : prompts) reqs.push_back(request(text, nullptr, 0, 96));
  std::map<RequestId, Outcome> out;
  std::vector<RequestId> ids{b.submit(reqs[0])};
  for (int i = 0; i < 20; ++i) collect(b.step(), out);
  for (std::size_t i = 1; i < reqs.size(); ++i) {
    ids.push_back(b.submit(reqs[i]));
    for (int k = 0; k < 40; ++k) collect(b.step(), out);
  }
  for (const auto& [id, o] : drain(b)) {
    out[id].text += o.text;
    out[id].finished = o.finished;
  }
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_TRUE(out.at(ids[i]).finished) << "request " << i;
    EXPECT_EQ(out.at(ids[i]).text, alone(reqs[i]).text) << "request " << i;
  }
}

TEST_F(Batching, CancelFreesTheSequenceAndStopsItsEvents) {
  SessionParams p = params_;
  p.n_seq = 1;
  Session s(model_, p);
  Batcher b(s);
  const BatchRequest r = request("Once upon a time, there was a cat.", nullptr, 0, 40);
  const RequestId gone = b.submit(r);
  const RequestId next = b.submit(r);
  for (int i = 0; i < 3; ++i) b.step();
  EXPECT_EQ(b.queued(), 1u);
  b.cancel(gone);
  EXPECT_EQ(s.next_pos(0), 0) << "its cells are freed at once";
  b.cancel(gone);  // twice, or after the end: ignored
  const auto out = drain(b);
  EXPECT_EQ(out.count(gone), 0u);
  EXPECT_EQ(out.at(next).text, alone(r).text);
}

TEST_F(Batching, StopStringsAreNeverStreamedAndCutTheText) {
  SessionParams p = params_;
  p.n_seq = 1;
  Session s(model_, p);
  BatchRequest r = request("Once upon a time", nullptr, 0, 60);
  const Generation free_run = alone(r);
  ASSERT_GT(free_run.text.size(), 20u);
  // A stop string across a token boundary: its first half arrives a step before it is complete,
  // and must be held back until then.
  std::string stop;
  for (std::size_t i = 0; i + 1 < free_run.tokens.size() && stop.empty(); ++i) {
    const std::string a = model_->token_to_piece(free_run.tokens[i]);
    const std::string b = model_->token_to_piece(free_run.tokens[i + 1]);
    if (i >= 2 && a.size() >= 2 && b.size() >= 2) stop = a.substr(a.size() - 2) + b.substr(0, 2);
  }
  ASSERT_FALSE(stop.empty());
  r.stop_strings = {stop};
  Batcher b(s);
  const RequestId id = b.submit(r);
  std::string streamed;
  while (!b.idle()) {
    for (const BatchEvent& e : b.step()) {
      streamed += e.piece;
      EXPECT_EQ(streamed.find(r.stop_strings[0]), std::string::npos) << "the stop string leaked";
      if (e.finished) {
        EXPECT_EQ(e.id, id);
        EXPECT_EQ(e.stop_reason, StopReason::StopString);
      }
    }
  }
  EXPECT_EQ(streamed, alone(r).text);
  EXPECT_EQ(streamed, free_run.text.substr(0, free_run.text.find(r.stop_strings[0])));
}

TEST_F(Batching, LogprobsFollowTheTextAndMatchTheLogits) {
  SessionParams p = params_;
  p.n_seq = 2;
  Session s(model_, p);
  Batcher b(s);
  BatchRequest r = request("Once upon a time", nullptr, 0, 16);
  r.n_logprobs = 3;
  BatchRequest other = request("Tom went to the park with his ball.", vector(), 6.0f, 16);
  const RequestId id = b.submit(r);
  b.submit(other);  // shares the decode calls and asks for no logprobs
  std::string text;
  std::vector<GeneratedLogprob> got;
  while (!b.idle()) {
    for (BatchEvent& e : b.step()) {
      if (e.id != id) {
        EXPECT_TRUE(e.logprobs.empty()) << "logprobs of a request that did not ask";
        continue;
      }
      text += e.piece;
      for (auto& lp : e.logprobs) {
        EXPECT_LE(lp.text_offset + model_->token_to_piece(lp.sampled.token).size(), text.size())
            << "a token's logprob came before its text";
        got.push_back(std::move(lp));
      }
    }
  }
  ASSERT_EQ(got.size(), 16u) << "one per sampled token; the offset token has none";
  std::string rebuilt = model_->token_to_piece(*r.steering_params.offset_token);
  for (const GeneratedLogprob& g : got) {
    EXPECT_EQ(g.text_offset, rebuilt.size());
    rebuilt += model_->token_to_piece(g.sampled.token);
    ASSERT_EQ(g.top.size(), 3u);
    // Greedy: the sampled token is the most likely one.
    EXPECT_EQ(g.top[0].token, g.sampled.token);
    EXPECT_FLOAT_EQ(g.top[0].logprob, g.sampled.logprob);
    EXPECT_GE(g.top[0].logprob, g.top[1].logprob);
    EXPECT_GE(g.top[1].logprob, g.top[2].logprob);
    EXPECT_LE(g.sampled.logprob, 0.0f);
  }
  EXPECT_EQ(rebuilt, text);

  // The first one, from the logits of the same tokens decoded by hand.
  Session ref(model_, params_);
  std::vector<Token> tokens = r.prompt;
  tokens.push_back(*r.steering_params.offset_token);
  ref.decode(0, tokens);
  const auto logits = ref.logits(0);
  double z = 0.0;
  const float max = *std::max_element(logits.begin(), logits.end());
  for (float l : logits) z += std::exp(static_cast<double>(l) - max);
  const double want = logits[static_cast<std::size_t>(got[0].sampled.token)] - max - std::log(z);
  EXPECT_NEAR(got[0].sampled.logprob, want, 1e-4);

  BatchRequest bad = r;
  bad.n_logprobs = 21;
  EXPECT_THROW(b.submit(bad), Error);
}

TEST_F(Batching, BadRequestsAreRefusedAtSubmit) {
  SessionParams p = params_;
  p.n_ctx = 128;
  Session s(model_, p);
  Batcher b(s);
  BatchRequest empty = request("x", nullptr, 0);
  empty.prompt.clear();
  EXPECT_THROW(b.submit(empty), Error);
  BatchRequest too_long = request("Once upon a time", nullptr, 0, 5000);
  EXPECT_THROW(b.submit(too_long), Error);
  BatchRequest bad_token = request("Once upon a time", nullptr, 0);
  bad_token.prompt.push_back(1 << 30);
  EXPECT_THROW(b.submit(bad_token), Error);
  BatchRequest nan = request("Once upon a time", vector(), std::nanf(""));
  EXPECT_THROW(b.submit(nan), Error);
  BatchRequest empty_stop = request("Once upon a time", nullptr, 0);
  empty_stop.stop_strings = {""};
  EXPECT_THROW(b.submit(empty_stop), Error);
  EXPECT_TRUE(b.idle()) << "nothing refused was queued";
}

}  // namespace
}  // namespace kvsteer
