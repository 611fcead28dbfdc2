// The cache-free causal llama forward graph and masked cross-entropy loss, in ggml. It computes
// what libllama's llama graph (src/models/llama.cpp) computes for each record decoded alone.
#pragma once

#include <cstdint>
#include <vector>

#include "organism/trainer/dataset.h"
#include "organism/trainer/model.h"

namespace kvsteer::train {

// Sizes of one batch of packed sequences.
struct BatchShape {
  int n_ctx = 0;   // tokens per sequence
  int n_seq = 0;   // sequences in the batch
  int n_rows = 0;  // trained positions (loss rows) over the whole batch; > 0

  int n_tokens() const { return n_ctx * n_seq; }
};

// Host copy of a batch, laid out as the graph inputs. Token t of sequence s has flat index
// s * n_ctx + t.
struct HostBatch {
  BatchShape shape;
  std::vector<int32_t> tokens;   // [n_seq * n_ctx]
  std::vector<int32_t> pos;      // [n_seq * n_ctx] position within the token's record
  std::vector<float> kq_mask;    // [n_seq][n_ctx query][n_ctx key]: 0 visible, -INF masked
  std::vector<int32_t> rows;     // [n_rows] flat index of each trained position, ascending
  std::vector<int32_t> targets;  // [n_rows] token each trained position must predict
};

// Builds the host batch of `seqs` (all of the same length). Throws Error(InvalidArgument) if the
// sequences have no trained position.
HostBatch make_batch(const std::vector<const PackedSequence*>& seqs);

// Graph input tensors, created in the compute context and marked as inputs.
struct GraphInputs {
  ggml_tensor* tokens = nullptr;   // I32 [n_tokens]
  ggml_tensor* pos = nullptr;      // I32 [n_tokens]
  ggml_tensor* kq_mask = nullptr;  // F32 [n_ctx, n_ctx, 1, n_seq]
  ggml_tensor* rows = nullptr;     // I32 [n_rows]
  ggml_tensor* targets = nullptr;  // F32 [n_vocab, n_rows] one-hot
};

// Adds the forward pass and loss to `ctx` (a no_alloc context) and returns the scalar loss: the
// mean over the batch's trained positions of -log p(target). Only trained positions go through the
// output projection (get_rows before `output`), which is what makes the loss masked: a one-hot
// target with zero rows would give a wrong gradient, since ggml's cross-entropy backward assumes
// that every target row sums to 1.
ggml_tensor* build_loss(ggml_context* ctx, const Model& model, const BatchShape& shape,
                        GraphInputs* in);

// Copies `batch` into allocated input tensors.
void set_inputs(const GraphInputs& in, const HostBatch& batch, int n_vocab);

}  // namespace kvsteer::train
