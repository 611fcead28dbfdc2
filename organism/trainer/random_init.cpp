#include "organism/trainer/random_init.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "ggml-cpp.h"
#include "kvsteer/error.h"
#include "organism/trainer/model.h"

namespace kvsteer::train {
namespace {

// Token types of llama_token_type (llama.h).
constexpr int32_t kTypeNormal = 1;
constexpr int32_t kTypeUnknown = 2;
constexpr int32_t kTypeControl = 3;
constexpr int32_t kTypeByte = 6;

void set_vocab(gguf_context* g, int n_vocab) {
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
  std::vector<int32_t> types = {kTypeUnknown, kTypeControl, kTypeControl};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    pieces.emplace_back(buf);
    types.push_back(kTypeByte);
  }
  pieces.emplace_back("\xe2\x96\x81");  // "▁"
  types.push_back(kTypeNormal);
  for (int i = 0; static_cast<int>(pieces.size()) < n_vocab; ++i) {
    pieces.push_back("\xe2\x96\x81t" + std::to_string(i));
    types.push_back(kTypeNormal);
  }
  std::vector<const char*> ptrs;
  std::vector<float> scores;
  for (size_t i = 0; i < pieces.size(); ++i) {
    ptrs.push_back(pieces[i].c_str());
    scores.push_back(-static_cast<float>(i));
  }
  gguf_set_val_str(g, "tokenizer.ggml.model", "llama");
  gguf_set_arr_str(g, "tokenizer.ggml.tokens", ptrs.data(), ptrs.size());
  gguf_set_arr_data(g, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores.data(), scores.size());
  gguf_set_arr_data(g, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types.data(), types.size());
  gguf_set_val_u32(g, "tokenizer.ggml.unknown_token_id", 0);
  gguf_set_val_u32(g, "tokenizer.ggml.bos_token_id", 1);
  gguf_set_val_u32(g, "tokenizer.ggml.eos_token_id", 2);
  gguf_set_val_bool(g, "tokenizer.ggml.add_bos_token", true);
}

void set_tokenizer(gguf_context* g, const SpmTokenizer& t) {
  const size_t n = t.tokens.size();
  if (t.scores.size() != n || t.types.size() != n) {
    throw Error(ErrorCode::InvalidArgument,
                "random init: tokens, scores and types differ in length");
  }
  std::vector<const char*> ptrs;
  ptrs.reserve(n);
  for (const std::string& piece : t.tokens) ptrs.push_back(piece.c_str());
  gguf_set_val_str(g, "tokenizer.ggml.model", "llama");
  gguf_set_arr_str(g, "tokenizer.ggml.tokens", ptrs.data(), n);
  gguf_set_arr_data(g, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, t.scores.data(), n);
  gguf_set_arr_data(g, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, t.types.data(), n);
  gguf_set_val_u32(g, "tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(t.unk_id));
  gguf_set_val_u32(g, "tokenizer.ggml.bos_token_id", static_cast<uint32_t>(t.bos_id));
  gguf_set_val_u32(g, "tokenizer.ggml.eos_token_id", static_cast<uint32_t>(t.eos_id));
  if (t.eot_id >= 0)
    gguf_set_val_u32(g, "tokenizer.ggml.eot_token_id", static_cast<uint32_t>(t.eot_id));
  gguf_set_val_bool(g, "tokenizer.ggml.add_bos_token", t.add_bos);
  gguf_set_val_bool(g, "tokenizer.ggml.add_eos_token", false);
  gguf_set_val_bool(g, "tokenizer.ggml.add_space_prefix", t.add_space_prefix);
  if (!t.chat_template.empty())
    gguf_set_val_str(g, "tokenizer.chat_template", t.chat_template.c_str());
}

void set_hparams(gguf_context* g, const RandomInitSpec& s) {
  gguf_set_val_str(g, "general.architecture", "llama");
  gguf_set_val_str(g, "general.name", s.name.c_str());
  gguf_set_val_u32(g, "general.file_type", 0);
  gguf_set_val_u32(g, "llama.vocab_size", s.n_vocab);
  gguf_set_val_u32(g, "llama.context_length", s.n_ctx_train);
  gguf_set_val_u32(g, "llama.embedding_length", s.n_embd);
  gguf_set_val_u32(g, "llama.block_count", s.n_layer);
  gguf_set_val_u32(g, "llama.feed_forward_length", s.n_ff);
  gguf_set_val_u32(g, "llama.attention.head_count", s.n_head);
  gguf_set_val_u32(g, "llama.attention.head_count_kv", s.n_head_kv);
  gguf_set_val_u32(g, "llama.rope.dimension_count", s.n_embd / s.n_head);
  gguf_set_val_f32(g, "llama.rope.freq_base", 10000.0f);
  gguf_set_val_f32(g, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
}

class TensorWriter {
 public:
  TensorWriter(gguf_context* g, size_t n_tensors, uint64_t seed)
      : g_(g), ctx_(ggml_init({n_tensors * ggml_tensor_overhead(), nullptr, true})), rng_(seed) {}

  // Adds tensor `name` [ne0, ne1] filled with N(0, std^2), or with 1 if std is 0.
  void add(const std::string& name, int64_t ne0, int64_t ne1, float std) {
    ggml_tensor* t = ne1 > 1 ? ggml_new_tensor_2d(ctx_.get(), GGML_TYPE_F32, ne0, ne1)
                             : ggml_new_tensor_1d(ctx_.get(), GGML_TYPE_F32, ne0);
    ggml_set_name(t, name.c_str());
    std::vector<float>& data = data_.emplace_back(static_cast<size_t>(ne0 * ne1), 1.0f);
    if (std > 0.0f) {
      std::normal_distribution<float> dist(0.0f, std);
      for (float& x : data) {
        x = dist(rng_);
      }
    }
    t->data = data.data();
    gguf_add_tensor(g_, t);
  }

 private:
  gguf_context* g_;
  ggml_context_ptr ctx_;
  std::mt19937_64 rng_;
  std::vector<std::vector<float>> data_;
};

}  // namespace

int64_t count_params(const RandomInitSpec& s) {
  const int64_t hd = s.n_embd / s.n_head;
  const int64_t kv = hd * s.n_head_kv;
  const int64_t per_layer = 2 * s.n_embd + 2 * int64_t(s.n_embd) * s.n_embd +
                            2 * int64_t(s.n_embd) * kv + 3 * int64_t(s.n_embd) * s.n_ff;
  return 2 * int64_t(s.n_embd) * s.n_vocab + s.n_embd + s.n_layer * per_layer;
}

void write_random_init(const std::string& path, const RandomInitSpec& s) {
  if (s.n_vocab < 260 || s.n_head <= 0 || s.n_embd % s.n_head != 0 || s.n_head_kv <= 0 ||
      s.n_head % s.n_head_kv != 0 || s.n_layer <= 0 || s.n_ff <= 0) {
    throw Error(ErrorCode::InvalidArgument,
                "random init: n_vocab >= 260, n_head | n_embd, n_head_kv | n_head expected");
  }
  gguf_context_ptr g(gguf_init_empty());
  set_hparams(g.get(), s);
  if (s.tokenizer) {
    if (s.tokenizer->tokens.size() != static_cast<size_t>(s.n_vocab)) {
      throw Error(ErrorCode::InvalidArgument,
                  "random init: n_vocab differs from the tokenizer's size");
    }
    set_tokenizer(g.get(), *s.tokenizer);
  } else {
    set_vocab(g.get(), s.n_vocab);
  }
  const int64_t kv = int64_t(s.n_embd / s.n_head) * s.n_head_kv;
  const float std_res = s.init_std / std::sqrt(2.0f * static_cast<float>(s.n_layer));
  TensorWriter w(g.get(), 3 + 9 * size_t(s.n_layer), s.seed);
  w.add("token_embd.weight", s.n_embd, s.n_vocab, s.init_std);
  w.add("output_norm.weight", s.n_embd, 1, 0.0f);
  w.add("output.weight", s.n_embd, s.n_vocab, s.init_std);
  for (int il = 0; il < s.n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    w.add(p + "attn_norm.weight", s.n_embd, 1, 0.0f);
    w.add(p + "attn_q.weight", s.n_embd, s.n_embd, s.init_std);
    w.add(p + "attn_k.weight", s.n_embd, kv, s.init_std);
    w.add(p + "attn_v.weight", s.n_embd, kv, s.init_std);
    w.add(p + "attn_output.weight", s.n_embd, s.n_embd, std_res);
    w.add(p + "ffn_norm.weight", s.n_embd, 1, 0.0f);
    w.add(p + "ffn_gate.weight", s.n_embd, s.n_ff, s.init_std);
    w.add(p + "ffn_up.weight", s.n_embd, s.n_ff, s.init_std);
    w.add(p + "ffn_down.weight", s.n_ff, s.n_embd, std_res);
  }
  write_gguf_atomically(g.get(), path);
}

}  // namespace kvsteer::train
