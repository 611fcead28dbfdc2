// The saved GGUF, run through libllama, gives the trainer's own masked loss.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "organism/trainer/dataset.h"
#include "organism/trainer/llama_loss.h"
#include "organism/trainer/model.h"
#include "organism/trainer/run.h"
#include "organism/trainer/test_util.h"
#include "organism/trainer/trainer.h"

namespace kvsteer::train {
namespace {

void expect_parity(const std::string& model_path, const std::string& val_path, int n_ctx) {
  const std::vector<Record> records = load_dataset(val_path);
  Model model = Model::load(model_path);
  Trainer trainer(model, AdamWOptions{}, 1);
  const auto seqs = pack_records(records, n_ctx, model.hparams().n_vocab);
  const EvalResult ours = trainer.evaluate(seqs, 4);
  const LlamaLoss ref = llama_masked_loss(model_path, records, n_ctx, 1);
  EXPECT_EQ(ours.n_rows, ref.n_rows);
  const double rel = std::abs(ours.loss - ref.loss) / ref.loss;
  std::printf("[ parity ] %s: trainer %.6f libllama %.6f rel diff %.2e (%lld tokens)\n",
              model_path.c_str(), ours.loss, ref.loss, rel, static_cast<long long>(ref.n_rows));
  EXPECT_LT(rel, 1e-4) << "trainer " << ours.loss << " libllama " << ref.loss;
}

TEST(LossParity, RandomInitModelMatchesLibllama) {
  test::TempDir dir;
  const RunOptions o = test::tiny_run(dir, 1);
  expect_parity(o.model_in, o.val_data, o.n_ctx);
}

TEST(LossParity, TrainedModelMatchesLibllama) {
  test::TempDir dir;
  RunOptions o = test::tiny_run(dir, 25);
  o.out = dir.file("trained.gguf");
  std::ostringstream log;
  const RunSummary s = run_training(o, log);
  ASSERT_TRUE(s.completed) << log.str();
  expect_parity(o.out, o.val_data, o.n_ctx);
  // The loss the run reported is the same quantity.
  const LlamaLoss ref = llama_masked_loss(o.out, load_dataset(o.val_data), o.n_ctx, 1);
  EXPECT_NEAR(s.val_loss, ref.loss, 1e-4 * ref.loss);
}

}  // namespace
}  // namespace kvsteer::train
