// An interrupted run resumed from its checkpoint reaches bit-identical weights.
#include <gtest/gtest.h>

#include <sstream>

#include "ggml-backend.h"
#include "ggml.h"
#include "kvsteer/error.h"
#include "organism/trainer/model.h"
#include "organism/trainer/run.h"
#include "organism/trainer/test_util.h"

namespace kvsteer::train {
namespace {

std::vector<std::vector<float>> weights(const std::string& path) {
  Model m = Model::load(path);
  std::vector<std::vector<float>> out;
  for (const ggml_tensor* t : m.params()) {
    std::vector<float>& v = out.emplace_back(static_cast<size_t>(ggml_nelements(t)));
    ggml_backend_tensor_get(t, v.data(), 0, ggml_nbytes(t));
  }
  return out;
}

RunSummary run(const RunOptions& o) {
  std::ostringstream log;
  return run_training(o, log);
}

TEST(Resume, ReachesTheSameWeightsAsAnUninterruptedRun) {
  test::TempDir dir;
  RunOptions o = test::tiny_run(dir, 8);
  o.n_threads = 2;
  o.out = dir.file("straight.gguf");
  o.checkpoint_dir = dir.file("ckpt_straight");
  o.checkpoint_every = 3;
  ASSERT_TRUE(run(o).completed);

  RunOptions a = o;
  a.out = dir.file("resumed.gguf");
  a.checkpoint_dir = dir.file("ckpt_resumed");
  a.halt_after = 5;  // the checkpoint at step 3 is overwritten by the one at the halt
  const RunSummary first = run(a);
  ASSERT_FALSE(first.completed);
  ASSERT_EQ(first.steps_done, 5);
  a.halt_after = 0;
  a.resume = true;
  const RunSummary second = run(a);
  ASSERT_TRUE(second.completed);

  const auto w_straight = weights(o.out);
  const auto w_resumed = weights(a.out);
  ASSERT_EQ(w_straight.size(), w_resumed.size());
  for (size_t i = 0; i < w_straight.size(); ++i) {
    EXPECT_EQ(w_straight[i], w_resumed[i]) << "tensor " << i;
  }
  // And the weights did change.
  EXPECT_NE(weights(o.model_in)[0], w_straight[0]);
}

TEST(Resume, RefusesACheckpointOfAnotherConfiguration) {
  test::TempDir dir;
  RunOptions o = test::tiny_run(dir, 4);
  o.checkpoint_dir = dir.file("ckpt");
  o.halt_after = 2;
  run(o);
  o.halt_after = 0;
  o.resume = true;
  o.adamw.lr *= 2;
  EXPECT_THROW(run(o), Error);
  o.adamw.lr /= 2;
  o.seed += 1;
  EXPECT_THROW(run(o), Error);
}

TEST(Resume, FailsClearlyWithoutACheckpoint) {
  test::TempDir dir;
  RunOptions o = test::tiny_run(dir, 4);
  o.checkpoint_dir = dir.file("none");
  o.resume = true;
  try {
    run(o);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io);
    EXPECT_NE(std::string(e.what()).find("checkpoint.gguf"), std::string::npos);
  }
}

}  // namespace
}  // namespace kvsteer::train
