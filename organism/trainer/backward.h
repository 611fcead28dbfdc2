// The backward pass: ggml's automatic differentiation plus two rewrites of its graph, one for
// correctness under ggml-alloc and one for speed on the CPU backend.
#pragma once

#include <cstddef>
#include <vector>

struct ggml_context;
struct ggml_cgraph;
struct ggml_tensor;

namespace kvsteer::train {

// A graph that computes a loss and the gradients of the parameters.
struct BackwardGraph {
  ggml_cgraph* graph = nullptr;     // forward + backward, no gradient bookkeeping
  std::vector<ggml_tensor*> grads;  // gradient of params[i], same shape
};

// Differentiates `loss` (a scalar built in `ctx`, which must hold ~4 * graph_size tensors) with
// respect to `params` (tensors flagged with ggml_set_param). `loss_grad` is an allocated F32
// scalar holding 1, the backward seed. Every parameter must influence the loss; throws
// Error(InvalidArgument) otherwise.
BackwardGraph build_backward(ggml_context* ctx, ggml_tensor* loss,
                             const std::vector<ggml_tensor*>& params, ggml_tensor* loss_grad,
                             size_t graph_size);

}  // namespace kvsteer::train
