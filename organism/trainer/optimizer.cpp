#include "organism/trainer/optimizer.h"

#include <cfloat>
#include <cmath>

#include "ggml-backend.h"
#include "ggml.h"
#include "kvsteer/error.h"

namespace kvsteer::train {
namespace {

bool decays(const ggml_tensor* param) { return ggml_n_dims(param) >= 2; }

}  // namespace

float learning_rate(const AdamWOptions& opts, int64_t step, int64_t n_steps) {
  const float lr_min = opts.lr_min < 0.0f ? opts.lr / 10.0f : opts.lr_min;
  if (step < opts.warmup) {
    return opts.lr * static_cast<float>(step + 1) / static_cast<float>(opts.warmup);
  }
  const int64_t n_decay = n_steps - opts.warmup - 1;
  if (n_decay <= 0) {
    return opts.lr;
  }
  const double progress = std::min(1.0, double(step - opts.warmup) / double(n_decay));
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return static_cast<float>(lr_min + (opts.lr - lr_min) * cosine);
}

AdamWState::AdamWState(const Model& model, const AdamWOptions& opts) : opts_(opts) {
  if (!(opts.lr > 0.0f) || opts.warmup < 0 || opts.weight_decay < 0.0f || opts.beta1 < 0.0f ||
      opts.beta1 >= 1.0f || opts.beta2 < 0.0f || opts.beta2 >= 1.0f) {
    throw Error(ErrorCode::InvalidArgument,
                "AdamW options out of range (lr > 0, warmup >= 0, weight decay >= 0, "
                "betas in [0, 1) expected)");
  }
  const size_t n = model.params().size();
  ctx_.reset(ggml_init({(2 * n + 4) * ggml_tensor_overhead(), nullptr, /*no_alloc=*/true}));
  for (const ggml_tensor* p : model.params()) {
    ggml_tensor* m = ggml_dup_tensor(ctx_.get(), p);
    ggml_tensor* v = ggml_dup_tensor(ctx_.get(), p);
    ggml_format_name(m, "adam_m.%s", p->name);
    ggml_format_name(v, "adam_v.%s", p->name);
    m_.push_back(m);
    v_.push_back(v);
  }
  pars_decay_ = ggml_new_tensor_1d(ctx_.get(), GGML_TYPE_F32, 7);
  pars_no_decay_ = ggml_new_tensor_1d(ctx_.get(), GGML_TYPE_F32, 7);
  loss_grad_ = ggml_new_tensor_1d(ctx_.get(), GGML_TYPE_F32, 1);
  one_ = ggml_new_tensor_1d(ctx_.get(), GGML_TYPE_F32, 1);
  buf_.reset(ggml_backend_alloc_ctx_tensors_from_buft(ctx_.get(), ggml_backend_cpu_buffer_type()));
  ggml_backend_buffer_clear(buf_.get(), 0);
  const float one = 1.0f;
  ggml_backend_tensor_set(loss_grad_, &one, 0, sizeof(one));
  ggml_backend_tensor_set(one_, &one, 0, sizeof(one));
}

ggml_tensor* AdamWState::build_update(ggml_context* ctx, ggml_cgraph* graph, const Model& model,
                                      std::vector<ggml_tensor*> grads) const {
  const std::vector<ggml_tensor*>& params = model.params();
  ggml_tensor* sumsq = nullptr;
  for (ggml_tensor* g : grads) {
    ggml_tensor* s = ggml_sum(ctx, ggml_sqr(ctx, g));
    sumsq = sumsq ? ggml_add(ctx, sumsq, s) : s;
  }
  ggml_tensor* norm = ggml_sqrt(ctx, sumsq);
  ggml_set_name(norm, "grad_norm");
  ggml_set_output(norm);
  ggml_build_forward_expand(graph, norm);
  if (opts_.grad_clip > 0.0f) {
    // factor = 1 / max(1, norm / clip); ggml_clamp works in place, so clamp a scaled copy.
    ggml_tensor* ratio = ggml_scale(ctx, norm, 1.0f / opts_.grad_clip);
    ggml_tensor* factor = ggml_div(ctx, one_, ggml_clamp(ctx, ratio, 1.0f, FLT_MAX));
    for (ggml_tensor*& g : grads) {
      g = ggml_mul(ctx, g, factor);
    }
  }
  for (size_t i = 0; i < params.size(); ++i) {
    ggml_tensor* pars = decays(params[i]) ? pars_decay_ : pars_no_decay_;
    ggml_build_forward_expand(graph,
                              ggml_opt_step_adamw(ctx, params[i], grads[i], m_[i], v_[i], pars));
  }
  return norm;
}

void AdamWState::set_step(int64_t step, int64_t n_steps) {
  const auto t = static_cast<float>(step + 1);
  const float alpha = learning_rate(opts_, step, n_steps);
  float pars[7] = {alpha,
                   opts_.beta1,
                   opts_.beta2,
                   opts_.eps,
                   opts_.weight_decay,
                   1.0f / (1.0f - std::pow(opts_.beta1, t)),
                   1.0f / (1.0f - std::pow(opts_.beta2, t))};
  ggml_backend_tensor_set(pars_decay_, pars, 0, sizeof(pars));
  pars[4] = 0.0f;
  ggml_backend_tensor_set(pars_no_decay_, pars, 0, sizeof(pars));
}

}  // namespace kvsteer::train
