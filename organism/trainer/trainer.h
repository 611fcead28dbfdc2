// One training step and evaluation on the CPU backend: forward, ggml backward, clipping and AdamW
// in a single graph per step (rebuilt each step because the number of trained rows varies).
#pragma once

#include <cstdint>
#include <vector>

#include "organism/trainer/dataset.h"
#include "organism/trainer/graph.h"
#include "organism/trainer/model.h"
#include "organism/trainer/optimizer.h"

namespace kvsteer::train {

// Result of one optimiser step.
struct StepResult {
  float loss = 0.0f;       // mean NLL over the batch's trained rows (nats), before the update
  float grad_norm = 0.0f;  // global L2 norm of the gradient, before clipping
  float lr = 0.0f;         // learning rate used by the update
  int n_rows = 0;          // trained rows in the batch
};

// Token-weighted mean NLL over a set of sequences.
struct EvalResult {
  double loss = 0.0;   // nats per trained token
  int64_t n_rows = 0;  // trained tokens
};

// Thread-compatible; holds references to `model`, which must outlive it.
class Trainer {
 public:
  // n_threads: CPU threads for every graph (results are deterministic for a fixed count).
  // Throws Error(InvalidArgument) on bad options.
  Trainer(Model& model, const AdamWOptions& adamw, int n_threads);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Runs forward + backward + AdamW update number `step_index()` of `n_steps` on `batch`, then
  // increments the step index.
  StepResult step(const HostBatch& batch, int64_t n_steps);

  // Loss of `seqs`, evaluated in batches of `n_batch` sequences, without updating anything.
  EvalResult evaluate(const std::vector<PackedSequence>& seqs, int n_batch);

  // Loss and gradients (one vector per model parameter, in Model::params() order) without an
  // update; for gradient checks.
  float loss_and_grads(const HostBatch& batch, std::vector<std::vector<float>>* grads);

  int64_t step_index() const { return step_; }
  void set_step_index(int64_t step) { step_ = step; }
  AdamWState& adamw() { return adamw_; }
  Model& model() { return model_; }

 private:
  struct Graph;
  Graph build(const BatchShape& shape, int mode) const;
  void compute(ggml_cgraph* graph);

  Model& model_;
  AdamWState adamw_;
  int n_threads_;
  int64_t step_ = 0;
  ggml_backend_ptr backend_;
  ggml_gallocr_ptr alloc_train_;
  ggml_gallocr_ptr alloc_eval_;
};

}  // namespace kvsteer::train
