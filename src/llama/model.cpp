#include <cinttypes>
#include <cstdio>
#include <string>

#include "base/fnv1a64.h"
#include "kvsteer/error.h"
#include "kvsteer/file_io.h"
#include "kvsteer/llama_interop.h"
#include "llama/log.h"
#include "llama/model_impl.h"

namespace kvsteer {
namespace detail {

void throw_backend(const std::string& what) {
  const std::string reason = last_llama_error();
  throw Error(ErrorCode::Backend, what + (reason.empty() ? "" : ": " + reason));
}

}  // namespace detail

namespace {

std::optional<std::string> meta_value(const llama_model* model, const std::string& key) {
  std::string buf(256, '\0');
  int32_t n = llama_model_meta_val_str(model, key.c_str(), buf.data(), buf.size());
  if (n < 0) {
    return std::nullopt;
  }
  if (static_cast<std::size_t>(n) >= buf.size()) {
    buf.resize(static_cast<std::size_t>(n) + 1);
    n = llama_model_meta_val_str(model, key.c_str(), buf.data(), buf.size());
  }
  buf.resize(static_cast<std::size_t>(n));
  return buf;
}

std::int32_t meta_int(const llama_model* model, const std::string& key, std::int32_t fallback) {
  auto text = meta_value(model, key);
  if (!text) {
    return fallback;
  }
  try {
    return static_cast<std::int32_t>(std::stol(*text));
  } catch (const std::exception&) {
    return fallback;
  }
}

const char* rope_type_name(llama_rope_type type) {
  switch (type) {
    case LLAMA_ROPE_TYPE_NONE:
      return "none";
    case LLAMA_ROPE_TYPE_NORM:
      return "norm";
    case LLAMA_ROPE_TYPE_NEOX:
      return "neox";
    case LLAMA_ROPE_TYPE_MROPE:
      return "mrope";
    case LLAMA_ROPE_TYPE_IMROPE:
      return "imrope";
    case LLAMA_ROPE_TYPE_VISION:
      return "vision";
  }
  return "unknown";
}

// The vocabulary hash starts from this basis, which is FNV-1a's 14695981039346656037 with its last
// digit lost. Every vector file written so far records hashes made with it, and a vocabulary's
// hash must stay what those files say, so the basis stays; docs/vector-format.md says so.
constexpr std::uint64_t kVocabHashBasis = 1469598103934665603ULL;

// An FNV-1a (with the basis above) over every token's text and attributes: two vocabularies with
// the same hash tokenize alike, which is what makes token ids (and so prompts) comparable.
std::string vocab_hash(const llama_vocab* vocab) {
  std::uint64_t h = kVocabHashBasis;
  auto mix = [&h](const void* data, std::size_t n) { h = base::fnv1a64(data, n, h); };
  const int32_t n_tokens = llama_vocab_n_tokens(vocab);
  for (int32_t t = 0; t < n_tokens; ++t) {
    const char* text = llama_vocab_get_text(vocab, t);
    mix(text, std::char_traits<char>::length(text) + 1);
    const auto attr = static_cast<std::int32_t>(llama_vocab_get_attr(vocab, t));
    mix(&attr, sizeof(attr));
  }
  char out[17];
  std::snprintf(out, sizeof(out), "%016" PRIx64, h);
  return out;
}

// Sliding-window layer pattern of the iSWA architectures llama.cpp builds with two cache blocks
// (llama-model.cpp set_swa_pattern: layer il uses the window iff il % n < n - 1).
std::vector<bool> swa_layer_pattern(const llama_model* model, const std::string& arch,
                                    std::int32_t n_layer) {
  std::vector<bool> swa(static_cast<std::size_t>(n_layer), false);
  if (llama_model_n_swa(model) <= 0) {
    return swa;
  }
  std::int32_t period = meta_int(model, arch + ".attention.sliding_window_pattern", 0);
  if (period == 0) {
    if (arch == "gemma2") {
      period = 2;
    }
    if (arch == "gemma3") {
      period = 6;
    }
    if (arch == "cohere2") {
      period = 4;
    }
  }
  if (period <= 0) {
    throw Error(ErrorCode::Unsupported,
                "model architecture '" + arch +
                    "' uses a sliding-window cache whose layer pattern "
                    "kvsteer does not know; supported iSWA architectures: gemma2, gemma3, cohere2");
  }
  for (std::int32_t il = 0; il < n_layer; ++il) {
    swa[il] = il % period < period - 1;
  }
  return swa;
}

void check_steerable(const llama_model* model, const std::string& arch) {
  if (llama_model_is_recurrent(model) || llama_model_is_hybrid(model)) {
    throw Error(ErrorCode::Unsupported,
                "model architecture '" + arch +
                    "' keeps a recurrent state, which kvsteer cannot "
                    "steer; use a transformer (llama, qwen2, phi3, gemma2)");
  }
  if (meta_value(model, arch + ".attention.kv_lora_rank")) {
    throw Error(ErrorCode::Unsupported, "model architecture '" + arch +
                                            "' caches a compressed latent (MLA) instead of "
                                            "separate K and V rows, which kvsteer cannot steer");
  }
  const auto rope = llama_model_rope_type(model);
  if (rope == LLAMA_ROPE_TYPE_MROPE || rope == LLAMA_ROPE_TYPE_IMROPE ||
      rope == LLAMA_ROPE_TYPE_VISION) {
    throw Error(ErrorCode::Unsupported, "model architecture '" + arch +
                                            "' uses multi-axis RoPE (cells carry extra "
                                            "coordinates), which kvsteer does not support");
  }
}

ModelFingerprint make_fingerprint(const llama_model* model, const llama_vocab* vocab,
                                  const std::string& arch) {
  ModelFingerprint fp;
  fp.arch = arch;
  fp.n_layer = llama_model_n_layer(model);
  // A vocabulary-only load has no layers, and llama.cpp aborts when asked for their head counts.
  fp.n_head = fp.n_layer > 0 ? llama_model_n_head(model) : 0;
  fp.n_head_kv = fp.n_layer > 0 ? llama_model_n_head_kv(model) : 0;
  fp.n_embd = llama_model_n_embd(model);
  const std::int32_t head = fp.n_head > 0 ? fp.n_embd / fp.n_head : 0;
  fp.n_embd_head_k = meta_int(model, arch + ".attention.key_length", head);
  fp.n_embd_head_v = meta_int(model, arch + ".attention.value_length", head);
  fp.n_embd_k_gqa = fp.n_embd_head_k * fp.n_head_kv;
  fp.n_embd_v_gqa = fp.n_embd_head_v * fp.n_head_kv;
  fp.rope_type = rope_type_name(llama_model_rope_type(model));
  fp.n_vocab = llama_vocab_n_tokens(vocab);
  fp.vocab_hash = vocab_hash(vocab);
  return fp;
}

}  // namespace

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

std::shared_ptr<const Model> load_model(const std::string& path, const ModelParams& params) {
  require_regular_file(path, "model file");
  auto mp = llama_model_default_params();
  mp.n_gpu_layers = params.n_gpu_layers;
  if (!params.use_mmap) {
    mp.load_mode = LLAMA_LOAD_MODE_NONE;
  }
  mp.vocab_only = params.vocab_only;
  mp.use_extra_bufts = params.use_extra_bufts;
  detail::clear_last_llama_error();
  llama_model_ptr model(llama_model_load_from_file(path.c_str(), mp));
  if (!model) {
    const std::string reason = detail::last_llama_error();
    throw Error(ErrorCode::Format, "cannot load model '" + path + "'" +
                                       (reason.empty() ? "" : ": " + reason) +
                                       " (is it a GGUF file for this llama.cpp version?)");
  }
  auto impl = std::make_unique<Model::Impl>();
  impl->path = path;
  impl->vocab = llama_model_get_vocab(model.get());
  impl->vocab_only = params.vocab_only;
  const std::string arch = meta_value(model.get(), "general.architecture").value_or("unknown");
  if (!params.vocab_only) {
    check_steerable(model.get(), arch);
  }
  impl->fingerprint = make_fingerprint(model.get(), impl->vocab, arch);
  impl->swa_layers = params.vocab_only
                         ? std::vector<bool>(static_cast<std::size_t>(impl->fingerprint.n_layer))
                         : swa_layer_pattern(model.get(), arch, impl->fingerprint.n_layer);
  impl->model = std::move(model);
  return std::shared_ptr<const Model>(new Model(std::move(impl)));
}

const std::string& Model::path() const { return impl_->path; }
const ModelFingerprint& Model::fingerprint() const { return impl_->fingerprint; }
std::int32_t Model::n_ctx_train() const { return llama_model_n_ctx_train(impl_->model.get()); }
std::uint64_t Model::n_params() const { return llama_model_n_params(impl_->model.get()); }
std::uint64_t Model::size_bytes() const { return llama_model_size(impl_->model.get()); }
bool Model::vocab_only() const { return impl_->vocab_only; }
const std::vector<bool>& Model::swa_layers() const { return impl_->swa_layers; }

std::string Model::description() const {
  char buf[256];
  llama_model_desc(impl_->model.get(), buf, sizeof(buf));
  return buf;
}

std::optional<std::string> Model::try_meta(const std::string& key) const {
  return meta_value(impl_->model.get(), key);
}

const llama_model* raw_model(const Model& model) { return model.impl().model.get(); }

}  // namespace kvsteer
