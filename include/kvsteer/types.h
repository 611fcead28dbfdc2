// Small value types shared by the public headers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvsteer {

using Token = std::int32_t;  // a llama_token
using SeqId = std::int32_t;  // a llama_seq_id
using Pos = std::int32_t;    // a llama_pos (position of a token in its sequence)

// One chat turn, rendered by the model's chat template.
struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// Storage type of a KV cache (llama_context_params.type_k / type_v).
enum class KvType { F32, F16, BF16, Q8_0, Q4_0 };

// Parses "f32", "f16", "bf16", "q8_0", "q4_0"; throws Error(InvalidArgument) otherwise.
KvType parse_kv_type(const std::string& name);
const char* kv_type_name(KvType type) noexcept;

// What identifies the cache layout of a model: a steering vector is only valid for models whose
// fingerprints match (see ModelFingerprint::mismatch).
struct ModelFingerprint {
  std::string arch;                // general.architecture, e.g. "llama", "qwen2"
  std::int32_t n_layer = 0;        // decoder layers
  std::int32_t n_head = 0;         // query heads
  std::int32_t n_head_kv = 0;      // key/value heads (GQA)
  std::int32_t n_embd = 0;         // residual width
  std::int32_t n_embd_head_k = 0;  // key head dimension
  std::int32_t n_embd_head_v = 0;  // value head dimension
  std::int32_t n_embd_k_gqa = 0;   // n_embd_head_k * n_head_kv: one cached K row
  std::int32_t n_embd_v_gqa = 0;   // n_embd_head_v * n_head_kv: one cached V row
  std::string rope_type;           // "none", "norm", "neox", "mrope", "vision", "imrope"
  std::int32_t n_vocab = 0;
  std::string vocab_hash;  // FNV-1a 64 of every token's text and type, hex

  // Empty when the two fingerprints describe the same cache layout; otherwise a sentence naming
  // the first field that differs, with both values.
  std::string mismatch(const ModelFingerprint& other) const;
};

// K and V of one cache cell, dequantized to float, indexed by model layer.
// Layers whose cache does not hold the cell (a sliding-window layer with the cell outside its
// window) have empty k and v.
struct KvCell {
  Pos pos = -1;
  // [n_layer]; each k is [n_embd_k_gqa] and each v is [n_embd_v_gqa], head-major
  // ([h0 d0..d(hd-1), h1 d0 ...]) as llama.cpp stores them. Quantized K caches are stored
  // Hadamard-rotated, and k is in that stored domain.
  std::vector<std::vector<float>> k;
  std::vector<std::vector<float>> v;
};

}  // namespace kvsteer
