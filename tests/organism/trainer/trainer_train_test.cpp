#include <gtest/gtest.h>

#include <sstream>

#include "kvsteer/error.h"
#include "organism/trainer/run.h"
#include "organism/trainer/test_util.h"

namespace kvsteer::train {
namespace {

TEST(TrainRun, LossDecreasesOnToyLanguage) {
  test::TempDir dir;
  RunOptions o = test::tiny_run(dir, 30);
  o.out = dir.file("trained.gguf");
  o.eval_every = 10;
  std::ostringstream log;
  const RunSummary s = run_training(o, log);
  SCOPED_TRACE(log.str());
  EXPECT_TRUE(s.completed);
  EXPECT_EQ(s.steps_done, 30);
  // ln(320) = 5.77 at random init; the toy language's entropy is about 0.7 nats per token.
  EXPECT_LT(s.last_loss, 3.0);
  EXPECT_LT(s.val_loss, 3.0);
  EXPECT_NE(log.str().find("step 1/30 | loss 5."), std::string::npos);
  EXPECT_NE(log.str().find("tok/s"), std::string::npos);
  EXPECT_NE(log.str().find("ETA"), std::string::npos);
}

TEST(TrainRun, RejectsInconsistentOptions) {
  test::TempDir dir;
  RunOptions o = test::tiny_run(dir, 5);
  o.n_epochs = 1.0;
  EXPECT_THROW(validate_options(o), Error);
  o = test::tiny_run(dir, 5);
  o.resume = true;
  EXPECT_THROW(validate_options(o), Error);
  o = test::tiny_run(dir, 5);
  EXPECT_THROW(validate_options(o), Error);  // neither --out nor --checkpoint
  o.out = dir.file("out.gguf");
  o.eval_every = 2;
  o.val_data.clear();
  EXPECT_THROW(validate_options(o), Error);  // --eval-every without --val-data
  o = test::tiny_run(dir, 5);
  o.out = dir.file("out.gguf");
  o.n_ctx = 16;  // shorter than the toy records
  std::ostringstream log;
  try {
    run_training(o, log);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("more than the sequence length 16"), std::string::npos)
        << e.what();
  }
}

TEST(TrainRun, EpochsSetTheStepCount) {
  test::TempDir dir;
  RunOptions o = test::tiny_run(dir, 0);
  o.n_epochs = 0.5;
  o.halt_after = 1;
  o.checkpoint_dir = dir.file("ckpt");
  std::ostringstream log;
  const RunSummary s = run_training(o, log);
  // 96 toy records pack into some number of sequences; 0.5 epoch of batch 4 is ceil(n / 8).
  EXPECT_GT(s.n_steps, 1);
  EXPECT_FALSE(s.completed);
  EXPECT_EQ(s.steps_done, 1);
}

}  // namespace
}  // namespace kvsteer::train
