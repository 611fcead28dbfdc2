#include "recipes.h"

#include <filesystem>
#include <sstream>

#include "base/fnv1a64.h"
#include "gguf.h"
#include "kvsteer/error.h"
#include "llama.h"
#include "vocab.h"

namespace kvsteer::tinymodel {
namespace {

// The three files of the main fixtures: F32 written directly, F16 and Q8_0 made from it with
// llama_model_quantize, as a user of llama.cpp would make them.
std::vector<OutputFile> f32_f16_q8(const std::string& name) {
  return {{name + "-f32.gguf", GGML_TYPE_F32, false},
          {name + "-f16.gguf", GGML_TYPE_F16, true},
          {name + "-q8_0.gguf", GGML_TYPE_Q8_0, true}};
}

// The default fixtures on the small vocabulary: 4 layers, n_embd 128, n_ff 384, GQA 4/2.
void add_small_fixtures(std::vector<Recipe>& out) {
  // head_dim 64 with n_embd 128 (query width 256, as in
  // Mistral-Nemo) keeps the F32 file under 5 MB while K rows are 2 x 64 wide, so quantized K
  // caches are Hadamard-rotated (head_dim % 64 == 0) and the KV geometry equals the prototype's.
  Recipe llama;
  llama.name = "llama";
  llama.model_name = "kvsteer-tiny-" + llama.name;
  llama.arch = "llama";
  llama.purpose = "dense llama, GQA 4/2, head_dim 64 (Hadamard-rotated quantized K), untied output";
  llama.head_dim = 64;
  llama.files = f32_f16_q8(llama.name);
  out.push_back(llama);

  Recipe qwen2;
  qwen2.name = "qwen2";
  qwen2.model_name = "kvsteer-tiny-" + qwen2.name;
  qwen2.arch = "qwen2";
  qwen2.purpose =
      "qwen2: random non-zero Q/K/V biases added before RoPE, GQA 4/2, head_dim 32, "
      "tied output";
  qwen2.rope_freq_base = 1000000.0f;
  qwen2.rms_eps = 1e-6f;
  qwen2.tied_output = true;
  qwen2.qkv_bias = true;
  qwen2.files = f32_f16_q8(qwen2.name);
  out.push_back(qwen2);

  Recipe phi3;
  phi3.name = "phi3";
  phi3.arch = "phi3";
  // Not "...phi3": the small vocab has no <|endoftext|> and ChatML needs no RSTRIP.
  phi3.model_name = "kvsteer-tiny-phi";
  phi3.purpose = "phi3: fused attn_qkv (Q/K/V are views of one matmul), GQA 4/2, head_dim 32";
  phi3.fused_qkv = true;
  phi3.files = f32_f16_q8(phi3.name);
  out.push_back(phi3);

  // gemma2 puts even layers in the sliding-window cache (pattern 2): blobs have two blocks.
  Recipe gemma2;
  gemma2.name = "gemma2";
  gemma2.model_name = "kvsteer-tiny-" + gemma2.name;
  gemma2.arch = "gemma2";
  gemma2.purpose =
      "gemma2 iSWA: window 16, layers 0,2 sliding / 1,3 global (two KV blocks), "
      "softcapping, head_dim 64 (query width 256 != n_embd 128)";
  gemma2.head_dim = 64;
  gemma2.rms_eps = 1e-6f;
  gemma2.tied_output = true;  // gemma2 always reuses token_embd
  gemma2.n_swa = 16;
  gemma2.attn_softcap = 50.0f;
  gemma2.final_softcap = 30.0f;
  gemma2.files = f32_f16_q8(gemma2.name);
  out.push_back(gemma2);
}

// Real tokenizers with tiny bodies: MQA 2/1, head_dim 32, 2 layers, tied output.
void add_vocab_fixtures(std::vector<Recipe>& out) {
  Recipe real_vocab;
  real_vocab.n_layer = 2;
  real_vocab.n_embd = 64;
  real_vocab.n_head = 2;
  real_vocab.n_head_kv = 1;
  real_vocab.head_dim = 32;
  real_vocab.n_ff = 128;
  real_vocab.tied_output = true;

  Recipe llama3 = real_vocab;
  llama3.name = "llama3vocab";
  llama3.model_name = "kvsteer-tiny-" + llama3.name;
  llama3.arch = "llama";
  llama3.purpose =
      "Llama-3 BPE vocabulary (128256 tokens) and chat template, rope_freqs, tiny body";
  llama3.rope_freq_base = 500000.0f;
  llama3.rope_freqs = true;
  llama3.vocab_file = "ggml-vocab-llama-bpe.gguf";
  llama3.fallback_template = kLlama3Template;
  llama3.files = {{"llama3vocab-f16.gguf", GGML_TYPE_F16, false}};
  out.push_back(llama3);

  Recipe qwen2v = real_vocab;
  qwen2v.name = "qwen2vocab";
  qwen2v.model_name = "kvsteer-tiny-" + qwen2v.name;
  qwen2v.arch = "qwen2";
  qwen2v.purpose = "Qwen2 BPE vocabulary (151936 tokens) and ChatML template, Q/K/V biases";
  qwen2v.rope_freq_base = 1000000.0f;
  qwen2v.rms_eps = 1e-6f;
  qwen2v.qkv_bias = true;
  qwen2v.vocab_file = "ggml-vocab-qwen2.gguf";
  qwen2v.fallback_template = kChatmlTemplate;
  qwen2v.files = {{"qwen2vocab-f16.gguf", GGML_TYPE_F16, false}};
  out.push_back(qwen2v);

  Recipe phi3v = real_vocab;
  phi3v.name = "phi3vocab";
  phi3v.model_name = "kvsteer-tiny-" + phi3v.name;
  phi3v.arch = "phi3";
  phi3v.purpose = "Phi-3 SPM vocabulary (32064 tokens) and chat template, fused attn_qkv, MHA 2/2";
  phi3v.n_head_kv = 2;
  phi3v.fused_qkv = true;
  phi3v.vocab_file = "ggml-vocab-phi-3.gguf";
  phi3v.files = {{"phi3vocab-f16.gguf", GGML_TYPE_F16, false}};
  out.push_back(phi3v);
}

// Benchmark shapes: real layer geometry, small vocabulary, Q8_0 written directly (an F32
// intermediate would be 1.3 GB / 3.9 GB).
void add_bench_fixtures(std::vector<Recipe>& out) {
  Recipe smollm2;
  smollm2.name = "bench-smollm2-360m";
  smollm2.model_name = "kvsteer-tiny-" + smollm2.name;
  smollm2.arch = "llama";
  smollm2.purpose = "SmolLM2-360M shape: 32 layers, n_embd 960, GQA 15/5, head_dim 64, n_ff 2560";
  smollm2.n_layer = 32;
  smollm2.n_embd = 960;
  smollm2.n_head = 15;
  smollm2.n_head_kv = 5;
  smollm2.head_dim = 64;
  smollm2.n_ff = 2560;
  smollm2.n_ctx_train = 8192;
  smollm2.rope_freq_base = 100000.0f;
  smollm2.tied_output = true;
  smollm2.bench = true;
  smollm2.files = {{"bench-smollm2-360m-q8_0.gguf", GGML_TYPE_Q8_0, false}};
  out.push_back(smollm2);

  Recipe llama32;
  llama32.name = "bench-llama32-1b";
  llama32.model_name = "kvsteer-tiny-" + llama32.name;
  llama32.arch = "llama";
  llama32.purpose = "Llama-3.2-1B shape: 16 layers, n_embd 2048, GQA 32/8, head_dim 64, n_ff 8192";
  llama32.n_layer = 16;
  llama32.n_embd = 2048;
  llama32.n_head = 32;
  llama32.n_head_kv = 8;
  llama32.head_dim = 64;
  llama32.n_ff = 8192;
  llama32.n_ctx_train = 8192;
  llama32.rope_freq_base = 500000.0f;
  llama32.tied_output = true;
  llama32.rope_freqs = true;
  llama32.bench = true;
  llama32.files = {{"bench-llama32-1b-q8_0.gguf", GGML_TYPE_Q8_0, false}};
  out.push_back(llama32);
}

std::vector<Recipe> make_recipes() {
  std::vector<Recipe> out;
  add_small_fixtures(out);
  add_vocab_fixtures(out);
  add_bench_fixtures(out);
  return out;
}

}  // namespace

const std::vector<Recipe>& all_recipes() {
  static const std::vector<Recipe> recipes = make_recipes();
  return recipes;
}

namespace {

void add_hparams(const Recipe& r, gguf_context* m) {
  const std::string a = r.arch + ".";
  gguf_set_val_str(m, "general.architecture", r.arch.c_str());
  gguf_set_val_str(m, "general.name", r.model_name.c_str());
  gguf_set_val_u32(m, (a + "context_length").c_str(), r.n_ctx_train);
  gguf_set_val_u32(m, (a + "embedding_length").c_str(), r.n_embd);
  gguf_set_val_u32(m, (a + "block_count").c_str(), r.n_layer);
  gguf_set_val_u32(m, (a + "feed_forward_length").c_str(), r.n_ff);
  gguf_set_val_u32(m, (a + "attention.head_count").c_str(), r.n_head);
  gguf_set_val_u32(m, (a + "attention.head_count_kv").c_str(), r.n_head_kv);
  gguf_set_val_u32(m, (a + "attention.key_length").c_str(), r.head_dim);
  gguf_set_val_u32(m, (a + "attention.value_length").c_str(), r.head_dim);
  gguf_set_val_f32(m, (a + "attention.layer_norm_rms_epsilon").c_str(), r.rms_eps);
  gguf_set_val_u32(m, (a + "rope.dimension_count").c_str(), r.head_dim);
  gguf_set_val_f32(m, (a + "rope.freq_base").c_str(), r.rope_freq_base);
  if (r.n_swa > 0) {
    gguf_set_val_u32(m, (a + "attention.sliding_window").c_str(), r.n_swa);
  }
  if (r.attn_softcap > 0.0f) {
    gguf_set_val_f32(m, (a + "attn_logit_softcapping").c_str(), r.attn_softcap);
  }
  if (r.final_softcap > 0.0f) {
    gguf_set_val_f32(m, (a + "final_logit_softcapping").c_str(), r.final_softcap);
  }
}

}  // namespace

gguf_context_ptr build_metadata(const Recipe& r, const std::string& vocab_dir) {
  gguf_context_ptr meta(gguf_init_empty());
  gguf_context* m = meta.get();
  add_hparams(r, m);
  uint32_t n_vocab = 0;
  if (r.vocab_file.empty()) {
    n_vocab = add_small_vocab(m);
  } else {
    const std::string path = (std::filesystem::path(vocab_dir) / r.vocab_file).string();
    n_vocab = copy_vocab_from_file(m, path, r.fallback_template);
  }
  gguf_set_val_u32(m, (r.arch + ".vocab_size").c_str(), n_vocab);
  return meta;
}

gguf_context_ptr build_shape_metadata(const Recipe& r, uint32_t n_vocab) {
  gguf_context_ptr meta(gguf_init_empty());
  add_hparams(r, meta.get());
  gguf_set_val_str(meta.get(), "tokenizer.ggml.model", "no_vocab");
  gguf_set_val_u32(meta.get(), (r.arch + ".vocab_size").c_str(), n_vocab);
  return meta;
}

uint32_t vocab_size(const Recipe& r, const gguf_context* meta) {
  const int64_t id = gguf_find_key(meta, (r.arch + ".vocab_size").c_str());
  return id < 0 ? 0 : gguf_get_val_u32(meta, id);
}

std::string recipe_stamp(const Recipe& r, uint64_t seed, const std::string& vocab_dir) {
  std::ostringstream s;
  s << "generator=" << kGeneratorVersion << ";llama=" << llama_version() << ";seed=" << seed
    << ";name=" << r.name << ";model_name=" << r.model_name << ";arch=" << r.arch
    << ";n_layer=" << r.n_layer << ";n_embd=" << r.n_embd << ";n_head=" << r.n_head
    << ";n_head_kv=" << r.n_head_kv << ";head_dim=" << r.head_dim << ";n_ff=" << r.n_ff
    << ";n_ctx_train=" << r.n_ctx_train << ";rope_freq_base=" << r.rope_freq_base
    << ";rms_eps=" << r.rms_eps << ";tied_output=" << r.tied_output << ";qkv_bias=" << r.qkv_bias
    << ";fused_qkv=" << r.fused_qkv << ";rope_freqs=" << r.rope_freqs << ";n_swa=" << r.n_swa
    << ";attn_softcap=" << r.attn_softcap << ";final_softcap=" << r.final_softcap;
  if (r.vocab_file.empty()) {
    s << ";vocab=" << kSmallVocabVersion;
  } else {
    const std::string path = (std::filesystem::path(vocab_dir) / r.vocab_file).string();
    if (!std::filesystem::is_regular_file(path)) {
      throw Error(ErrorCode::NotFound, "fixture '" + r.name + "': no vocabulary file '" + path +
                                           "'; hint: --vocab-dir must be llama.cpp's models/ "
                                           "folder holding ggml-vocab-*.gguf");
    }
    s << ";vocab=" << r.vocab_file << ":" << hash_file(path) << ";fallback_template=" << std::hex
      << base::fnv1a64(r.fallback_template) << std::dec;
  }
  return s.str();
}

}  // namespace kvsteer::tinymodel
