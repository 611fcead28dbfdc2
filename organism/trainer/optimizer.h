// AdamW with a warmup + cosine learning-rate schedule and global-norm gradient clipping, built as
// ggml nodes (GGML_OP_OPT_STEP_ADAMW) after the backward pass. The trainer owns the moments and
// the step counter (instead of ggml-opt, whose moments and iteration count are private) so that a
// checkpoint can save and restore them exactly.
#pragma once

#include <cstdint>
#include <vector>

#include "organism/trainer/model.h"

namespace kvsteer::train {

// Optimiser settings; defaults follow common small-GPT practice (nanoGPT / llm.c).
struct AdamWOptions {
  float lr = 1e-3f;           // peak learning rate
  float lr_min = -1.0f;       // final learning rate of the cosine; < 0 means lr / 10
  int64_t warmup = 100;       // linear warmup steps (from lr / warmup to lr)
  float weight_decay = 0.1f;  // decoupled weight decay (Loshchilov & Hutter 2019, eq. 12),
                              // applied to matrices only, not to the norm weights
  float beta1 = 0.9f;         // first-moment decay
  float beta2 = 0.95f;        // second-moment decay
  float eps = 1e-8f;          // denominator epsilon
  float grad_clip = 1.0f;     // clip the global gradient L2 norm to this; <= 0 disables
};

// Learning rate of 0-based step `step` out of `n_steps`: linear warmup to lr, then cosine decay
// to lr_min at the last step.
float learning_rate(const AdamWOptions& opts, int64_t step, int64_t n_steps);

// First and second moments of every parameter (F32, same shapes, CPU buffer) and the small
// tensors the update reads. Move-only.
class AdamWState {
 public:
  AdamWState(const Model& model, const AdamWOptions& opts);

  // Appends clipping and one AdamW update per parameter to `graph`, which computes `grads`
  // (grads[i] of model.params()[i]). Returns the global gradient norm tensor (before clipping).
  ggml_tensor* build_update(ggml_context* ctx, ggml_cgraph* graph, const Model& model,
                            std::vector<ggml_tensor*> grads) const;

  // Writes the hyperparameters of update number `step` (0-based) into the parameter tensors.
  void set_step(int64_t step, int64_t n_steps);

  // Scalar 1.0: the gradient seed of the loss (ggml_build_backward_expand's accumulator).
  ggml_tensor* loss_grad() const { return loss_grad_; }
  const std::vector<ggml_tensor*>& m() const { return m_; }
  const std::vector<ggml_tensor*>& v() const { return v_; }
  const AdamWOptions& options() const { return opts_; }

 private:
  AdamWOptions opts_;
  ggml_context_ptr ctx_;
  ggml_backend_buffer_ptr buf_;
  std::vector<ggml_tensor*> m_;
  std::vector<ggml_tensor*> v_;
  ggml_tensor* pars_decay_ = nullptr;     // F32 [7] for ggml_opt_step_adamw, weight decay on
  ggml_tensor* pars_no_decay_ = nullptr;  // F32 [7], weight decay 0
  ggml_tensor* loss_grad_ = nullptr;      // F32 [1] = 1
  ggml_tensor* one_ = nullptr;            // F32 [1] = 1, numerator of the clip factor
};

}  // namespace kvsteer::train
