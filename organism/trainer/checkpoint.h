// Checkpoints: one GGUF holding the model metadata and weights (llama names), the AdamW moments
// (adam_m.<name>, adam_v.<name>) and the run state under kvsteer.ckpt.* keys. Written atomically.
//
// The data order needs no RNG state of its own: epoch_order() is counter-based, so (seed, step)
// determine the next batch exactly; both are stored.
#pragma once

#include <cstdint>
#include <string>

#include "organism/trainer/optimizer.h"
#include "organism/trainer/trainer.h"

namespace kvsteer::train {

// What must match between the run that wrote a checkpoint and the run that resumes it.
struct RunIdentity {
  uint64_t seed = 0;
  int64_t n_steps = 0;
  int n_ctx = 0;
  int n_batch = 0;
  uint64_t data_fingerprint = 0;  // fingerprint() of the packed training sequences
  AdamWOptions adamw;
};

// File name of the checkpoint inside a checkpoint folder.
std::string checkpoint_path(const std::string& dir);

// File name of the weights-only snapshot (a plain model GGUF) written beside each periodic
// checkpoint, so that a run can be evaluated with libllama while it trains.
std::string snapshot_path(const std::string& dir);

// Saves weights, moments, step and `id` to `path` atomically. Throws Error(Io).
void save_checkpoint(const std::string& path, Trainer& trainer, const RunIdentity& id);

// Restores weights, moments and step index from `path` into `trainer`. Throws Error(Io) if the
// file cannot be read, Error(Format) if it is not a checkpoint of this model, and
// Error(InvalidArgument) if it was written by a run whose identity differs from `id` (the message
// names the first differing setting).
void load_checkpoint(const std::string& path, Trainer& trainer, const RunIdentity& id);

}  // namespace kvsteer::train
