#include "organism/trainer/test_util.h"

namespace kvsteer::train::test {

RandomInitSpec tiny_spec() {
  RandomInitSpec s;
  s.n_vocab = 320;
  s.n_ctx_train = 64;
  s.n_embd = 64;
  s.n_layer = 2;
  s.n_head = 4;
  s.n_head_kv = 2;
  s.n_ff = 128;
  s.seed = 5;
  return s;
}

RunOptions tiny_run(const TempDir& dir, int64_t n_steps) {
  RunOptions o;
  o.model_in = dir.file("init.gguf");
  o.data = dir.file("train.kvsd");
  o.val_data = dir.file("val.kvsd");
  write_random_init(o.model_in, tiny_spec());
  save_dataset(o.data, toy_language(96, 1, true));
  save_dataset(o.val_data, toy_language(16, 2, true));
  o.n_ctx = 64;
  o.n_batch = 4;
  o.n_steps = n_steps;
  o.n_threads = 1;
  o.adamw.lr = 3e-3f;
  o.adamw.warmup = 5;
  o.log_every = 1;
  return o;
}

}  // namespace kvsteer::train::test
