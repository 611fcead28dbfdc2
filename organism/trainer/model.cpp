#include "organism/trainer/model.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

#include "base/durable.h"
#include "ggml-backend.h"
#include "gguf.h"
#include "kvsteer/error.h"

namespace kvsteer::train {
namespace {

[[noreturn]] void fail(ErrorCode code, const std::string& path, const std::string& what) {
  throw Error(code, "model " + path + ": " + what);
}

// Integer value of a KV pair of any integer type; -1 if absent and optional.
int64_t get_int(const gguf_context* g, const std::string& key, bool required,
                const std::string& path) {
  const int64_t id = gguf_find_key(g, key.c_str());
  if (id < 0) {
    if (required) {
      fail(ErrorCode::Format, path, "missing key " + key);
    }
    return -1;
  }
  switch (gguf_get_kv_type(g, id)) {
    case GGUF_TYPE_UINT8:
      return gguf_get_val_u8(g, id);
    case GGUF_TYPE_INT8:
      return gguf_get_val_i8(g, id);
    case GGUF_TYPE_UINT16:
      return gguf_get_val_u16(g, id);
    case GGUF_TYPE_INT16:
      return gguf_get_val_i16(g, id);
    case GGUF_TYPE_UINT32:
      return gguf_get_val_u32(g, id);
    case GGUF_TYPE_INT32:
      return gguf_get_val_i32(g, id);
    case GGUF_TYPE_UINT64:
      return static_cast<int64_t>(gguf_get_val_u64(g, id));
    case GGUF_TYPE_INT64:
      return gguf_get_val_i64(g, id);
    default:
      fail(ErrorCode::Format, path, "key " + key + " is not an integer");
  }
}

// Float value of an F32/F64 KV pair; `fallback` if absent.
float get_float(const gguf_context* g, const std::string& key, float fallback,
                const std::string& path) {
  const int64_t id = gguf_find_key(g, key.c_str());
  if (id < 0) {
    return fallback;
  }
  switch (gguf_get_kv_type(g, id)) {
    case GGUF_TYPE_FLOAT32:
      return gguf_get_val_f32(g, id);
    case GGUF_TYPE_FLOAT64:
      return static_cast<float>(gguf_get_val_f64(g, id));
    default:
      fail(ErrorCode::Format, path, "key " + key + " is not a float");
  }
}

void check_architecture(const gguf_context* g, const std::string& path) {
  const int64_t id = gguf_find_key(g, "general.architecture");
  if (id < 0 || gguf_get_kv_type(g, id) != GGUF_TYPE_STRING) {
    fail(ErrorCode::Format, path, "missing general.architecture");
  }
  const std::string arch = gguf_get_val_str(g, id);
  if (arch != "llama") {
    fail(ErrorCode::Unsupported, path, "architecture \"" + arch + "\", expected \"llama\"");
  }
  const int64_t scaling = gguf_find_key(g, "llama.rope.scaling.type");
  if (scaling >= 0 && std::string(gguf_get_val_str(g, scaling)) != "none") {
    fail(ErrorCode::Unsupported, path, "RoPE scaling is not supported by the trainer");
  }
  if (get_int(g, "llama.expert_count", false, path) > 0) {
    fail(ErrorCode::Unsupported, path, "mixture-of-experts models are not supported");
  }
}

int64_t vocab_size(const gguf_context* g, const std::string& path) {
  const int64_t n = get_int(g, "llama.vocab_size", false, path);
  if (n > 0) {
    return n;
  }
  const int64_t id = gguf_find_key(g, "tokenizer.ggml.tokens");
  if (id < 0) {
    fail(ErrorCode::Format, path, "neither llama.vocab_size nor tokenizer.ggml.tokens is set");
  }
  return static_cast<int64_t>(gguf_get_arr_n(g, id));
}

Hparams read_hparams(const gguf_context* g, const std::string& path) {
  check_architecture(g, path);
  Hparams hp;
  hp.n_vocab = static_cast<int>(vocab_size(g, path));
  hp.n_ctx_train = static_cast<int>(get_int(g, "llama.context_length", true, path));
  hp.n_embd = static_cast<int>(get_int(g, "llama.embedding_length", true, path));
  hp.n_layer = static_cast<int>(get_int(g, "llama.block_count", true, path));
  hp.n_head = static_cast<int>(get_int(g, "llama.attention.head_count", true, path));
  hp.n_ff = static_cast<int>(get_int(g, "llama.feed_forward_length", true, path));
  const int64_t n_head_kv = get_int(g, "llama.attention.head_count_kv", false, path);
  hp.n_head_kv = n_head_kv > 0 ? static_cast<int>(n_head_kv) : hp.n_head;
  if (hp.n_head <= 0 || hp.n_embd % hp.n_head != 0 || hp.n_head % hp.n_head_kv != 0) {
    fail(ErrorCode::Format, path,
         "head counts n_head=" + std::to_string(hp.n_head) + " n_head_kv=" +
             std::to_string(hp.n_head_kv) + " do not divide n_embd=" + std::to_string(hp.n_embd));
  }
  hp.head_dim = hp.n_embd / hp.n_head;
  for (const char* key : {"llama.rope.dimension_count", "llama.attention.key_length",
                          "llama.attention.value_length"}) {
    const int64_t v = get_int(g, key, false, path);
    if (v >= 0 && v != hp.head_dim) {
      fail(ErrorCode::Unsupported, path,
           std::string(key) + " = " + std::to_string(v) +
               ", the trainer needs n_embd/n_head = " + std::to_string(hp.head_dim));
    }
  }
  if (gguf_find_key(g, "llama.attention.layer_norm_rms_epsilon") < 0) {
    fail(ErrorCode::Format, path, "missing key llama.attention.layer_norm_rms_epsilon");
  }
  hp.rms_eps = get_float(g, "llama.attention.layer_norm_rms_epsilon", 1e-5f, path);
  hp.rope_freq_base = get_float(g, "llama.rope.freq_base", 10000.0f, path);
  const float scale = get_float(g, "llama.attention.scale", 0.0f, path);
  hp.kq_scale = scale != 0.0f ? scale : 1.0f / std::sqrt(static_cast<float>(hp.head_dim));
  return hp;
}

// Copies one tensor of the source file into the F32 tensor `dst`.
void copy_weight(const ggml_tensor* src, ggml_tensor* dst, const std::string& path) {
  const int64_t n = ggml_nelements(src);
  if (src->type == GGML_TYPE_F32) {
    ggml_backend_tensor_set(dst, src->data, 0, ggml_nbytes(dst));
  } else if (src->type == GGML_TYPE_F16) {
    std::vector<float> tmp(static_cast<size_t>(n));
    ggml_fp16_to_fp32_row(static_cast<const ggml_fp16_t*>(src->data), tmp.data(), n);
    ggml_backend_tensor_set(dst, tmp.data(), 0, ggml_nbytes(dst));
  } else {
    fail(ErrorCode::Unsupported, path,
         std::string("tensor ") + src->name + " has type " + ggml_type_name(src->type) +
             " (F32 or F16 expected)");
  }
}

void check_shape(const ggml_tensor* t, int64_t ne0, int64_t ne1, const std::string& path) {
  if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1) {
    fail(ErrorCode::Format, path,
         std::string("tensor ") + t->name + " has shape [" + std::to_string(t->ne[0]) + ", " +
             std::to_string(t->ne[1]) + ", ...], expected [" + std::to_string(ne0) + ", " +
             std::to_string(ne1) + "]");
  }
}

}  // namespace

Model Model::load(const std::string& path) {
  ggml_context* raw_src = nullptr;
  gguf_context_ptr src(gguf_init_from_file(path.c_str(), {/*no_alloc=*/false, &raw_src}));
  ggml_context_ptr src_ctx(raw_src);
  if (!src) {
    throw Error(ErrorCode::Io, "cannot read GGUF " + path + " (missing file or not a GGUF)");
  }
  Model m;
  m.hparams_ = read_hparams(src.get(), path);
  m.meta_.reset(gguf_init_empty());
  gguf_set_kv(m.meta_.get(), src.get());

  // Iterate the GGUF's tensor list: the ggml context also holds a binary-blob tensor.
  const int64_t n_tensors = gguf_get_n_tensors(src.get());
  m.ctx_.reset(ggml_init({static_cast<size_t>(n_tensors + 1) * ggml_tensor_overhead(), nullptr,
                          /*no_alloc=*/true}));
  std::vector<std::pair<const ggml_tensor*, ggml_tensor*>> copies;
  for (int64_t i = 0; i < n_tensors; ++i) {
    const ggml_tensor* s = ggml_get_tensor(src_ctx.get(), gguf_get_tensor_name(src.get(), i));
    ggml_tensor* d = ggml_new_tensor(m.ctx_.get(), GGML_TYPE_F32, ggml_n_dims(s), s->ne);
    ggml_set_name(d, s->name);
    m.params_.push_back(d);
    copies.emplace_back(s, d);
  }
  m.buf_.reset(
      ggml_backend_alloc_ctx_tensors_from_buft(m.ctx_.get(), ggml_backend_cpu_buffer_type()));
  if (!m.buf_) {
    fail(ErrorCode::Format, path, "no tensors");
  }
  for (auto& [s, d] : copies) {
    copy_weight(s, d, path);
  }
  m.bind_tensors(path);
  for (ggml_tensor* t : m.params_) {
    ggml_set_param(t);
  }
  return m;
}

void Model::bind_tensors(const std::string& path) {
  const Hparams& hp = hparams_;
  layers_.assign(hp.n_layer, LayerWeights{});
  std::map<std::string, ggml_tensor*> by_name;
  for (ggml_tensor* t : params_) {
    by_name[t->name] = t;
  }
  auto take = [&](const std::string& name, int64_t ne0, int64_t ne1) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      if (name == "output.weight") {
        fail(ErrorCode::Unsupported, path,
             "no output.weight (tied embeddings); the trainer needs an untied output.weight");
      }
      fail(ErrorCode::Format, path, "missing tensor " + name);
    }
    check_shape(it->second, ne0, ne1, path);
    ggml_tensor* t = it->second;
    by_name.erase(it);
    return t;
  };
  tok_embd_ = take("token_embd.weight", hp.n_embd, hp.n_vocab);
  output_norm_ = take("output_norm.weight", hp.n_embd, 1);
  output_ = take("output.weight", hp.n_embd, hp.n_vocab);
  for (int il = 0; il < hp.n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    LayerWeights& l = layers_[il];
    l.attn_norm = take(p + "attn_norm.weight", hp.n_embd, 1);
    l.wq = take(p + "attn_q.weight", hp.n_embd, hp.n_embd_q());
    l.wk = take(p + "attn_k.weight", hp.n_embd, hp.n_embd_kv());
    l.wv = take(p + "attn_v.weight", hp.n_embd, hp.n_embd_kv());
    l.wo = take(p + "attn_output.weight", hp.n_embd_q(), hp.n_embd);
    l.ffn_norm = take(p + "ffn_norm.weight", hp.n_embd, 1);
    l.ffn_gate = take(p + "ffn_gate.weight", hp.n_embd, hp.n_ff);
    l.ffn_up = take(p + "ffn_up.weight", hp.n_embd, hp.n_ff);
    l.ffn_down = take(p + "ffn_down.weight", hp.n_ff, hp.n_embd);
  }
  if (!by_name.empty()) {
    fail(ErrorCode::Unsupported, path,
         "tensor " + by_name.begin()->first +
             " is not trained by the trainer (llama without "
             "biases, rope_freqs or experts expected)");
  }
}

int64_t Model::n_params() const {
  int64_t n = 0;
  for (const ggml_tensor* t : params_) {
    n += ggml_nelements(t);
  }
  return n;
}

void Model::save(const std::string& path) const {
  write_gguf_atomically(make_weights_gguf(*this).get(), path);
}

gguf_context_ptr make_weights_gguf(const Model& model) {
  gguf_context_ptr out(gguf_init_empty());
  gguf_set_kv(out.get(), model.meta());
  gguf_set_val_u32(out.get(), "general.file_type", 0);  // LLAMA_FTYPE_ALL_F32
  for (const ggml_tensor* t : model.params()) {
    gguf_add_tensor(out.get(), t);
  }
  return out;
}

void write_gguf_atomically(const gguf_context* gguf, const std::string& path) {
  kvsteer::detail::AtomicFile file(path);
  FILE* f = std::fopen(file.tmp().c_str(), "wb");
  if (!f) {
    throw Error(ErrorCode::Io, "cannot write " + path + ": " + std::strerror(errno));
  }
  bool ok = gguf_write_to_file_ptr(gguf, f, /*only_meta=*/false);
  ok = std::fclose(f) == 0 && ok;
  if (!ok) {
    throw Error(ErrorCode::Io, "cannot write " + path + ": " + std::strerror(errno));
  }
  file.commit();
}

}  // namespace kvsteer::train
