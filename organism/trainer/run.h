// A whole training run as kvsteer-train performs it: load, pack, (resume,) train with progress,
// evaluation and checkpoints, save.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

#include "organism/trainer/optimizer.h"

namespace kvsteer::train {

// Options of one run; each field is a kvsteer-train flag (README.md).
struct RunOptions {
  std::string model_in;          // --model-in: init GGUF (llama, F32/F16)
  std::string data;              // --data: KVSD training records
  std::string val_data;          // --val-data: KVSD validation records (optional)
  std::string out;               // --out: trained GGUF (written when the run completes)
  int n_ctx = 256;               // --ctx: tokens per packed sequence
  int n_batch = 8;               // --batch: sequences per optimiser step
  int64_t n_steps = 0;           // --steps (exclusive with --epochs)
  double n_epochs = 0.0;         // --epochs: steps = ceil(epochs * sequences / batch)
  AdamWOptions adamw;            // --lr --lr-min --warmup --weight-decay --grad-clip
  uint64_t seed = 42;            // --seed: data order
  int n_threads = 2;             // --threads
  std::string checkpoint_dir;    // --checkpoint DIR
  int64_t checkpoint_every = 0;  // --checkpoint-every K steps (0: only at the end or halt)
  bool resume = false;           // --resume from DIR/checkpoint.gguf
  int64_t eval_every = 0;        // --eval-every N steps on --val-data (0: only at the end)
  int64_t log_every = 10;        // --log-every N steps (progress line)
  int64_t halt_after = 0;        // --halt-after S: stop once step S is done (0: run to the end)
};

// What a run did.
struct RunSummary {
  int64_t n_params = 0;
  int64_t steps_done = 0;     // step index reached (including resumed steps)
  int64_t n_steps = 0;        // planned steps
  bool completed = false;     // reached n_steps and wrote --out
  double last_loss = 0.0;     // training loss of the last step
  double val_loss = -1.0;     // final validation loss, -1 without --val-data
  double tokens_per_s = 0.0;  // n_ctx * n_batch * steps / wall time of this session's steps
};

// Throws Error(InvalidArgument), naming the flags, if the options are inconsistent (a usage
// error: missing required flags, both or neither of --steps/--epochs, values out of range).
void validate_options(const RunOptions& opts);

// Performs the run, writing progress lines to `log`. Throws Error on any failure.
RunSummary run_training(const RunOptions& opts, std::ostream& log);

}  // namespace kvsteer::train
