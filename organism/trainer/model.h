// The trainable llama model: hyperparameters from GGUF metadata, F32 weights in a CPU backend
// buffer under llama.cpp's tensor names, and the GGUF metadata that is copied to every saved file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ggml-cpp.h"

namespace kvsteer::train {

// llama-architecture hyperparameters as libllama reads them (llama-model.cpp, models/llama.cpp).
struct Hparams {
  int n_vocab = 0;
  int n_ctx_train = 0;              // llama.context_length
  int n_embd = 0;                   // llama.embedding_length
  int n_layer = 0;                  // llama.block_count
  int n_head = 0;                   // llama.attention.head_count
  int n_head_kv = 0;                // llama.attention.head_count_kv (GQA: divides n_head)
  int n_ff = 0;                     // llama.feed_forward_length
  int head_dim = 0;                 // n_embd / n_head (= llama.rope.dimension_count)
  float rms_eps = 1e-5f;            // llama.attention.layer_norm_rms_epsilon
  float rope_freq_base = 10000.0f;  // llama.rope.freq_base
  float kq_scale = 0.0f;            // 1/sqrt(head_dim) unless llama.attention.scale is set

  int n_embd_q() const { return head_dim * n_head; }
  int n_embd_kv() const { return head_dim * n_head_kv; }
};

// Weights of one transformer block; shapes in ggml order [ne0, ne1].
struct LayerWeights {
  ggml_tensor* attn_norm = nullptr;  // [n_embd]
  ggml_tensor* wq = nullptr;         // attn_q      [n_embd, n_embd_q]
  ggml_tensor* wk = nullptr;         // attn_k      [n_embd, n_embd_kv]
  ggml_tensor* wv = nullptr;         // attn_v      [n_embd, n_embd_kv]
  ggml_tensor* wo = nullptr;         // attn_output [n_embd_q, n_embd]
  ggml_tensor* ffn_norm = nullptr;   // [n_embd]
  ggml_tensor* ffn_gate = nullptr;   // [n_embd, n_ff]
  ggml_tensor* ffn_up = nullptr;     // [n_embd, n_ff]
  ggml_tensor* ffn_down = nullptr;   // [n_ff, n_embd]
};

// Thread-compatible; move-only. Every tensor is F32 and marked as a ggml parameter.
class Model {
 public:
  // Reads an init (or trained) llama GGUF with F32 or F16 tensors. Throws Error(Io) if the file
  // cannot be read, Error(Format) on missing keys/tensors or wrong shapes, Error(Unsupported) for
  // other architectures, extra tensors (biases, rope_freqs, MoE), tied embeddings or rope scaling.
  static Model load(const std::string& path);

  // Writes a GGUF with the loaded file's metadata and all weights as F32, atomically (temporary
  // file + rename). Throws Error(Io).
  void save(const std::string& path) const;

  const Hparams& hparams() const { return hparams_; }
  // All weights in the order of the source file.
  const std::vector<ggml_tensor*>& params() const { return params_; }
  ggml_tensor* tok_embd() const { return tok_embd_; }
  ggml_tensor* output_norm() const { return output_norm_; }
  ggml_tensor* output() const { return output_; }
  const std::vector<LayerWeights>& layers() const { return layers_; }
  // Metadata (KV pairs only) of the source file.
  const gguf_context* meta() const { return meta_.get(); }
  int64_t n_params() const;

 private:
  Model() = default;
  void bind_tensors(const std::string& path);

  Hparams hparams_;
  gguf_context_ptr meta_;
  ggml_context_ptr ctx_;
  ggml_backend_buffer_ptr buf_;
  std::vector<ggml_tensor*> params_;
  ggml_tensor* tok_embd_ = nullptr;
  ggml_tensor* output_norm_ = nullptr;
  ggml_tensor* output_ = nullptr;
  std::vector<LayerWeights> layers_;
};

// Builds a GGUF context with the model's metadata and all weights (F32; tensor data points into
// the model's buffer, so the model must outlive the returned context).
gguf_context_ptr make_weights_gguf(const Model& model);

// Writes `gguf` to `path` through a temporary file in the same folder, fsync and rename, so that
// readers never see a half-written file. Throws Error(Io).
void write_gguf_atomically(const gguf_context* gguf, const std::string& path);

}  // namespace kvsteer::train
