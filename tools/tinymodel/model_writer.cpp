#include "model_writer.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <utility>

#include "base/durable.h"
#include "base/fnv1a64.h"
#include "gguf.h"
#include "kvsteer/error.h"
#include "llama-cpp.h"
#include "llama_log.h"
#include "vocab.h"

namespace kvsteer::tinymodel {
namespace {

constexpr float kBiasStd = 0.5f;
constexpr int64_t kInitChunk = 1 << 16;

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Collects the tensors libllama creates; runs inside C code, so it must not throw.
struct OracleState {
  std::vector<TensorSpec> tensors;
  bool failed = false;
};

void record_tensor(ggml_tensor* tensor, void* user_data) noexcept {
  auto* state = static_cast<OracleState*>(user_data);
  try {
    TensorSpec spec;
    spec.name = ggml_get_name(tensor);
    spec.n_dims = ggml_n_dims(tensor);
    for (int i = 0; i < 4; ++i) {
      spec.ne[i] = tensor->ne[i];
    }
    state->tensors.push_back(spec);
  } catch (...) {
    state->failed = true;
  }
  // The data stay unwritten: the model is freed right away and never computes, and untouched
  // pages cost no memory (the 1B bench shape would need 3.9 GB otherwise).
}

// Whether the recipe keeps a tensor libllama created. A whitelist, because libllama also creates
// every optional tensor an architecture may have: biases, per-tensor quantization scales
// (*.scale, *.input_scale, which would multiply matmul outputs by random numbers), longrope
// factors, an untied output.
bool wanted(const Recipe& r, const std::string& name) {
  // Per-layer tensors kept by name "blk.<il>.<kind>.weight".
  static const std::set<std::string> kLayerWeights = {
      "attn_norm", "attn_q",   "attn_k", "attn_v",   "attn_output",  "post_attention_norm",
      "ffn_norm",  "ffn_gate", "ffn_up", "ffn_down", "post_ffw_norm"};
  static const std::set<std::string> kLayerBiases = {"attn_q", "attn_k", "attn_v"};
  if (name == "token_embd.weight" || name == "output_norm.weight") {
    return true;
  }
  if (name == "output.weight") {
    return !r.tied_output;
  }
  if (name == "rope_freqs.weight") {
    return r.rope_freqs;
  }
  // Split "blk.<il>.<kind>.<suffix>"; std::regex is avoided (GCC 12 warns inside it under ASan).
  const size_t il_end = name.find('.', 4);
  const size_t kind_end = name.rfind('.');
  if (name.rfind("blk.", 0) != 0 || il_end == std::string::npos || kind_end <= il_end ||
      name.find_first_not_of("0123456789", 4) != il_end) {
    return false;
  }
  const std::string kind = name.substr(il_end + 1, kind_end - il_end - 1);
  const std::string suffix = name.substr(kind_end + 1);
  return (suffix == "weight" && kLayerWeights.count(kind) != 0) ||
         (suffix == "bias" && r.qkv_bias && kLayerBiases.count(kind) != 0);
}

// Marsaglia's polar method: two normal values per accepted pair of uniforms in the unit disc,
// with one log and no sin/cos (1.4x faster than Box-Muller here; the bench shapes draw 1e9).
void fill_normal(float* out, int64_t n, uint64_t seed, float std_dev) {
  std::mt19937_64 gen(seed);
  constexpr double kScale = 1.0 / 4503599627370496.0;  // 2^-52: (gen() >> 11) * kScale in [0, 2)
  for (int64_t i = 0; i < n;) {
    const double u = static_cast<double>(gen() >> 11) * kScale - 1.0;
    const double v = static_cast<double>(gen() >> 11) * kScale - 1.0;
    const double s = u * u + v * v;
    if (s >= 1.0 || s == 0.0) {
      continue;
    }
    const double m = std::sqrt(-2.0 * std::log(s) / s) * std_dev;
    out[i++] = static_cast<float>(u * m);
    if (i < n) {
      out[i++] = static_cast<float>(v * m);
    }
  }
}

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};

void write_bytes(FILE* f, const void* data, size_t size, const std::string& path) {
  if (size > 0 && std::fwrite(data, 1, size, f) != size) {
    throw Error(ErrorCode::Io, "cannot write " + std::to_string(size) + " bytes to '" + path +
                                   "'; hint: check free disk space");
  }
}

// Converts F32 values to `type` rows of spec.ne[0] elements.
std::vector<uint8_t> convert(const std::vector<float>& values, const TensorSpec& spec,
                             ggml_type type) {
  const int64_t n_per_row = spec.ne[0];
  const int64_t n_rows = spec.n_elements() / n_per_row;
  std::vector<uint8_t> out(ggml_row_size(type, n_per_row) * n_rows);
  if (type == GGML_TYPE_F32) {
    std::copy_n(reinterpret_cast<const uint8_t*>(values.data()), out.size(), out.data());
  } else if (type == GGML_TYPE_F16) {
    ggml_fp32_to_fp16_row(values.data(), reinterpret_cast<ggml_fp16_t*>(out.data()),
                          spec.n_elements());
  } else {
    ggml_quantize_chunk(type, values.data(), out.data(), 0, n_rows, n_per_row, nullptr);
  }
  return out;
}

ggml_type tensor_type(const TensorSpec& spec, ggml_type type) {
  return spec.n_dims >= 2 ? type : GGML_TYPE_F32;
}

}  // namespace

std::vector<TensorSpec> plan_tensors(const Recipe& r, gguf_context* meta, bool verbose) {
  OracleState state;
  llama_model_params params = llama_model_default_params();
  params.n_gpu_layers = 0;
  clear_llama_errors();
  llama_model_ptr oracle(llama_model_init_from_user(meta, record_tensor, &state, params));
  if (!oracle || state.failed) {
    throw Error(ErrorCode::Backend, "libllama cannot create a '" + r.arch +
                                        "' model for fixture '" + r.name + "': " + llama_errors());
  }
  oracle.reset();

  std::map<std::string, TensorSpec> by_name;
  for (const TensorSpec& t : state.tensors) {
    by_name[t.name] = t;
  }
  std::vector<TensorSpec> out;
  std::set<std::string> seen;
  for (const TensorSpec& t : state.tensors) {
    // Shared tensors (rope_freqs, created with TENSOR_DUPLICATED for every layer) come once
    // per layer; GGUF holds them once.
    if (!seen.insert(t.name).second) {
      continue;
    }
    if (!wanted(r, t.name)) {
      if (verbose) {
        std::fprintf(stderr, "%s: not written: %s\n", r.name.c_str(), t.name.c_str());
      }
      continue;
    }
    if (r.fused_qkv &&
        (ends_with(t.name, ".attn_k.weight") || ends_with(t.name, ".attn_v.weight"))) {
      continue;  // folded into attn_qkv below
    }
    if (r.fused_qkv && ends_with(t.name, ".attn_q.weight")) {
      const std::string prefix =
          t.name.substr(0, t.name.size() - std::string("attn_q.weight").size());
      const auto k = by_name.find(prefix + "attn_k.weight");
      const auto v = by_name.find(prefix + "attn_v.weight");
      if (k == by_name.end() || v == by_name.end()) {
        throw Error(ErrorCode::Backend, "fixture '" + r.name + "': libllama created " + t.name +
                                            " without attn_k/attn_v; cannot fuse them");
      }
      TensorSpec qkv = t;
      qkv.name = prefix + "attn_qkv.weight";
      qkv.ne[1] = t.ne[1] + k->second.ne[1] + v->second.ne[1];  // rows: Q, then K, then V
      out.push_back(qkv);
      continue;
    }
    out.push_back(t);
  }
  return out;
}

void init_tensor(const TensorSpec& spec, uint64_t seed, int n_threads, std::vector<float>& out) {
  const int64_t n = spec.n_elements();
  out.resize(static_cast<size_t>(n));
  const std::string& name = spec.name;
  if (name.find("norm") != std::string::npos || name.rfind("rope_freqs", 0) == 0) {
    std::fill(out.begin(), out.end(), 1.0f);
    return;
  }
  const float std_dev =
      ends_with(name, ".bias") ? kBiasStd : 1.0f / std::sqrt(static_cast<float>(spec.ne[0]));
  const uint64_t tensor_seed = splitmix64(seed ^ splitmix64(base::fnv1a64(name)));
  const int64_t n_chunks = (n + kInitChunk - 1) / kInitChunk;
  auto work = [&](int64_t first_chunk, int64_t stride) {
    for (int64_t c = first_chunk; c < n_chunks; c += stride) {
      const int64_t begin = c * kInitChunk;
      fill_normal(out.data() + begin, std::min(kInitChunk, n - begin),
                  splitmix64(tensor_seed + static_cast<uint64_t>(c)), std_dev);
    }
  };
  const int64_t n_workers = std::clamp<int64_t>(n_threads, 1, n_chunks);
  std::vector<std::thread> threads;
  for (int64_t t = 1; t < n_workers; ++t) {
    threads.emplace_back(work, t, n_workers);
  }
  work(0, n_workers);
  for (std::thread& t : threads) {
    t.join();
  }
}

llama_ftype ftype_of(ggml_type type) {
  switch (type) {
    case GGML_TYPE_F32:
      return LLAMA_FTYPE_ALL_F32;
    case GGML_TYPE_F16:
      return LLAMA_FTYPE_MOSTLY_F16;
    case GGML_TYPE_Q8_0:
      return LLAMA_FTYPE_MOSTLY_Q8_0;
    default:
      throw Error(ErrorCode::InvalidArgument, std::string("unsupported fixture type ") +
                                                  ggml_type_name(type) +
                                                  "; expected f32, f16 or q8_0");
  }
}

uint64_t write_model(const std::string& path, const gguf_context* meta,
                     const std::vector<TensorSpec>& tensors, ggml_type type, uint64_t seed,
                     const std::string& stamp, int n_threads) {
  gguf_context_ptr out(gguf_init_empty());
  gguf_set_kv(out.get(), meta);
  gguf_set_val_u32(out.get(), "general.file_type", static_cast<uint32_t>(ftype_of(type)));
  if (ggml_is_quantized(type)) {
    gguf_set_val_u32(out.get(), "general.quantization_version", GGML_QNT_VERSION);
  }
  gguf_set_val_str(out.get(), kRecipeKey, stamp.c_str());

  // Tensor infos only; the data are generated and written one tensor at a time below.
  ggml_init_params params = {tensors.size() * ggml_tensor_overhead(), nullptr, true};
  ggml_context_ptr ctx(ggml_init(params));
  for (const TensorSpec& t : tensors) {
    ggml_tensor* info = ggml_new_tensor(ctx.get(), tensor_type(t, type), t.n_dims, t.ne.data());
    ggml_set_name(info, t.name.c_str());
    gguf_add_tensor(out.get(), info);
  }

  kvsteer::detail::AtomicFile file(path);
  std::unique_ptr<FILE, FileCloser> f(std::fopen(file.tmp().c_str(), "wb"));
  if (!f) {
    throw Error(ErrorCode::Io, "cannot create '" + file.tmp() + "'");
  }
  if (!gguf_write_to_file_ptr(out.get(), f.get(), /*only_meta=*/true)) {
    throw Error(ErrorCode::Io, "cannot write the GGUF header of '" + file.tmp() + "'");
  }
  const size_t alignment = gguf_get_alignment(out.get());
  const std::vector<uint8_t> zeros(alignment, 0);
  std::vector<float> values;
  for (const TensorSpec& t : tensors) {
    init_tensor(t, seed, n_threads, values);
    const std::vector<uint8_t> bytes = convert(values, t, tensor_type(t, type));
    write_bytes(f.get(), bytes.data(), bytes.size(), file.tmp());
    write_bytes(f.get(), zeros.data(), GGML_PAD(bytes.size(), alignment) - bytes.size(),
                file.tmp());
  }
  if (std::fclose(f.release()) != 0) {
    throw Error(ErrorCode::Io, "cannot close '" + file.tmp() + "'; hint: check free disk space");
  }
  file.commit();
  return std::filesystem::file_size(path);
}

uint64_t write_quantized_copy(const std::string& src, const std::string& dst, ggml_type type,
                              int n_threads) {
  kvsteer::detail::AtomicFile file(dst);
  llama_model_quantize_params params = llama_model_quantize_default_params();
  params.nthread = n_threads;
  params.ftype = ftype_of(type);
  clear_llama_errors();
  if (llama_model_quantize(src.c_str(), file.tmp().c_str(), &params) != 0) {
    throw Error(ErrorCode::Backend, "llama_model_quantize '" + src + "' -> " +
                                        ggml_type_name(type) + " failed: " + llama_errors());
  }
  file.commit();
  return std::filesystem::file_size(dst);
}

bool is_up_to_date(const std::string& path, const std::string& stamp, ggml_type type) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) {
    return false;
  }
  gguf_init_params params = {/*no_alloc=*/true, /*ctx=*/nullptr};
  const QuietLlamaLog quiet;  // a foreign or damaged file is an answer here, not an error
  gguf_context_ptr ctx(gguf_init_from_file(path.c_str(), params));
  if (!ctx) {
    return false;
  }
  const int64_t stamp_id = gguf_find_key(ctx.get(), kRecipeKey);
  const int64_t ftype_id = gguf_find_key(ctx.get(), "general.file_type");
  if (stamp_id < 0 || ftype_id < 0 || gguf_get_kv_type(ctx.get(), stamp_id) != GGUF_TYPE_STRING ||
      gguf_get_kv_type(ctx.get(), ftype_id) != GGUF_TYPE_UINT32) {
    return false;
  }
  if (stamp != gguf_get_val_str(ctx.get(), stamp_id) ||
      gguf_get_val_u32(ctx.get(), ftype_id) != static_cast<uint32_t>(ftype_of(type))) {
    return false;
  }
  // A truncated file (killed writer) still has a valid header; check the data section too.
  const int64_t n_tensors = gguf_get_n_tensors(ctx.get());
  if (n_tensors == 0) {
    return false;
  }
  const uint64_t end = gguf_get_data_offset(ctx.get()) +
                       gguf_get_tensor_offset(ctx.get(), n_tensors - 1) +
                       gguf_get_tensor_size(ctx.get(), n_tensors - 1);
  return end <= size;
}

}  // namespace kvsteer::tinymodel
