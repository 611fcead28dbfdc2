// The fixture models kvsteer-make-tiny-models writes: shapes, vocabulary and output files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ggml-cpp.h"
#include "ggml.h"

namespace kvsteer::tinymodel {

// Bump whenever the bytes written for an unchanged recipe change (initialisation, tensor
// selection, metadata). It is part of the recipe stamp, so old files are rewritten.
inline constexpr int kGeneratorVersion = 6;

// GGUF key holding the recipe stamp; files whose stamp and general.file_type match are kept.
inline constexpr const char* kRecipeKey = "kvsteer.tinymodel.recipe";

// One file of a fixture.
struct OutputFile {
  std::string file_name;           // inside --out, e.g. "llama-q8_0.gguf"
  ggml_type type = GGML_TYPE_F32;  // type of every tensor with >= 2 dims; 1-d stay F32
  bool quantized_copy = false;     // made by llama_model_quantize from files[0] (F32)
};

// A fixture: one random-init model written in one or more types.
struct Recipe {
  std::string name;  // --only name, e.g. "llama"
  std::string arch;  // general.architecture
  // general.name. libllama's vocab loader keys hacks on it: a name containing "phi3" or "phi-3"
  // sets RSTRIP on every special token and requires an <|endoftext|> token.
  std::string model_name;
  std::string purpose;  // one line, for --list and the README
  uint32_t n_layer = 4;
  uint32_t n_embd = 128;
  uint32_t n_head = 4;
  uint32_t n_head_kv = 2;
  uint32_t head_dim = 32;  // attention.key_length = value_length = rope.dimension_count
  uint32_t n_ff = 384;
  uint32_t n_ctx_train = 4096;
  float rope_freq_base = 10000.0f;
  float rms_eps = 1e-5f;
  bool tied_output = false;       // no output.weight: the loader reuses token_embd
  bool qkv_bias = false;          // attn_{q,k,v}.bias (qwen2)
  bool fused_qkv = false;         // one attn_qkv.weight instead of attn_{q,k,v} (phi3)
  bool rope_freqs = false;        // rope_freqs.weight, all ones (Llama 3 style factors)
  uint32_t n_swa = 0;             // attention.sliding_window (gemma2); 0 = key not written
  float attn_softcap = 0.0f;      // attn_logit_softcapping (gemma2); 0 = key not written
  float final_softcap = 0.0f;     // final_logit_softcapping (gemma2); 0 = key not written
  std::string vocab_file;         // ggml-vocab-*.gguf in --vocab-dir; empty = small vocab
  std::string fallback_template;  // chat template to set when vocab_file has none
  bool bench = false;             // written only with --bench-shapes or --only
  std::vector<OutputFile> files;  // files[0] is the source of quantized copies
};

// Every fixture, default ones first.
const std::vector<Recipe>& all_recipes();

// Builds the model metadata of `recipe`: general.architecture, general.name, the architecture's
// hyperparameters, <arch>.vocab_size and the tokenizer. `vocab_dir` is used only when
// recipe.vocab_file is set. Throws Error(NotFound/Format) when the vocabulary file is missing or
// malformed.
gguf_context_ptr build_metadata(const Recipe& recipe, const std::string& vocab_dir);

// The same hyperparameters with a "no_vocab" tokenizer of `n_vocab` dummy tokens: enough for
// libllama to create the tensors, without the cost of loading a 128k-token BPE vocabulary.
gguf_context_ptr build_shape_metadata(const Recipe& recipe, uint32_t n_vocab);

// <arch>.vocab_size of metadata made by build_metadata().
uint32_t vocab_size(const Recipe& recipe, const gguf_context* meta);

// The stamp stored under kRecipeKey: every input that determines the bytes of files[0] (all
// recipe fields, seed, generator version, libllama version, vocabulary file hash).
std::string recipe_stamp(const Recipe& recipe, uint64_t seed, const std::string& vocab_dir);

}  // namespace kvsteer::tinymodel
