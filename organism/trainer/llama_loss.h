// Masked cross-entropy of records measured through libllama, the reference the trainer's own
// evaluation must match.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "organism/trainer/dataset.h"

namespace kvsteer::train {

struct LlamaLoss {
  double loss = 0.0;   // mean NLL (nats) over trained tokens
  int64_t n_rows = 0;  // trained tokens
};

// Loads `model_path` with libllama (CPU, F32 KV cache, flash attention off, n_ctx = n_batch =
// n_ubatch = n_ctx) and decodes each record alone from an empty cache at positions 0.. with all
// logits; token i of a record with loss_mask[i] = 1 (i >= 1) contributes -log p(token i | tokens
// before it). This equals the trainer's loss on the packed records. Calls llama_backend_init.
// Throws Error(Io) if the model cannot be loaded, Error(InvalidArgument) if a record is longer than
// n_ctx or a decode fails.
LlamaLoss llama_masked_loss(const std::string& model_path, const std::vector<Record>& records,
                            int n_ctx, int n_threads);

}  // namespace kvsteer::train
