// Writing random-init GGUF models: which tensors (asked from libllama), their initial values,
// the file itself (streamed tensor by tensor, written atomically) and quantized copies.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "ggml.h"
#include "llama.h"
#include "recipes.h"

struct gguf_context;

namespace kvsteer::tinymodel {

// Name and shape of one tensor of the model, ggml order (ne[0] is the row length).
struct TensorSpec {
  std::string name;
  int n_dims = 1;
  std::array<int64_t, 4> ne = {1, 1, 1, 1};

  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
};

// Asks libllama which tensors the architecture creates for `meta` (build_shape_metadata())
// (llama_model_init_from_user creates every tensor, optional ones included), then keeps those
// the recipe wants, in libllama's order: token_embd, output_norm, output (unless tied),
// rope_freqs (if recipe.rope_freqs), the per-layer norm/attention/FFN weights and Q/K/V biases
// (if recipe.qkv_bias); attn_{q,k,v}.weight become one attn_qkv.weight when recipe.fused_qkv.
// Throws Error(Backend) when libllama rejects the metadata. Dropped names go to stderr if verbose.
std::vector<TensorSpec> plan_tensors(const Recipe& recipe, gguf_context* meta, bool verbose);

// Fills `out` with the initial values of `spec` (out.size() == spec.n_elements()):
//   *norm*, rope_freqs  -> 1
//   *.bias              -> N(0, 0.5^2): qwen2's Q/K/V biases shift Q and K by about half the
//                          size of W*x, so a missing or misplaced bias changes the cache clearly
//   other (matrices)    -> N(0, 1/ne[0]): unit-variance activations per layer, so attention
//                          scores are O(1) and neither uniform nor one-hot
// Deterministic in (seed, spec.name) and independent of n_threads: the values come in chunks of
// 65536, each from its own std::mt19937_64 stream and Marsaglia's polar method.
void init_tensor(const TensorSpec& spec, uint64_t seed, int n_threads, std::vector<float>& out);

// The llama_ftype that describes a file whose matrices have type `type` (F32, F16 or Q8_0).
llama_ftype ftype_of(ggml_type type);

// Writes `meta` plus general.file_type, general.quantization_version (quantized types) and
// kRecipeKey = `stamp`, then every tensor of `tensors`: matrices converted to `type`, 1-d tensors
// F32. Writes PATH.tmp.PID and renames it onto `path`. Returns the file size in bytes.
// Throws Error(Io) when the file cannot be written.
uint64_t write_model(const std::string& path, const gguf_context* meta,
                     const std::vector<TensorSpec>& tensors, ggml_type type, uint64_t seed,
                     const std::string& stamp, int n_threads);

// Makes `dst` from the F32 model `src` with llama_model_quantize (matrices to `type`), through a
// temporary file and a rename. Returns the file size. Throws Error(Backend) when it fails.
uint64_t write_quantized_copy(const std::string& src, const std::string& dst, ggml_type type,
                              int n_threads);

// True when `path` is a complete GGUF whose kRecipeKey equals `stamp` and whose
// general.file_type is ftype_of(type). Never throws; a missing or unreadable file is not current.
bool is_up_to_date(const std::string& path, const std::string& stamp, ggml_type type);

}  // namespace kvsteer::tinymodel
