// Steering-vector files as GGUF (docs/vector-format.md), through ggml's gguf API.
#include "kvsteer/vector_file.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "base/durable.h"
#include "ggml.h"
#include "gguf.h"
#include "kvsteer/error.h"
#include "kvsteer/file_io.h"

namespace kvsteer {
namespace {

struct GgufDeleter {
  void operator()(gguf_context* c) const { gguf_free(c); }
};
struct GgmlDeleter {
  void operator()(ggml_context* c) const { ggml_free(c); }
};
using GgufPtr = std::unique_ptr<gguf_context, GgufDeleter>;
using GgmlPtr = std::unique_ptr<ggml_context, GgmlDeleter>;

constexpr const char* kType = "kvsteer.steering_vector";

std::string tensor_name(char half, std::size_t il) {
  return std::string("kvsteer.") + half + "." + std::to_string(il);
}

// Reading: every key is checked for presence and type.
class Reader {
 public:
  Reader(const gguf_context* ctx, std::string path) : ctx_(ctx), path_(std::move(path)) {}

  std::int64_t key(const std::string& name, gguf_type want) const {
    const std::int64_t id = gguf_find_key(ctx_, name.c_str());
    if (id < 0) {
      fail("key '" + name + "' is missing");
    }
    if (gguf_get_kv_type(ctx_, id) != want) {
      fail("key '" + name + "' has type " + gguf_type_name(gguf_get_kv_type(ctx_, id)) +
           ", expected " + gguf_type_name(want));
    }
    return id;
  }
  std::string str(const std::string& name) const {
    return gguf_get_val_str(ctx_, key(name, GGUF_TYPE_STRING));
  }
  std::int32_t i32(const std::string& name) const {
    return gguf_get_val_i32(ctx_, key(name, GGUF_TYPE_INT32));
  }
  std::uint32_t u32(const std::string& name) const {
    return gguf_get_val_u32(ctx_, key(name, GGUF_TYPE_UINT32));
  }
  bool boolean(const std::string& name) const {
    return gguf_get_val_bool(ctx_, key(name, GGUF_TYPE_BOOL));
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(ErrorCode::Format, "steering vector file '" + path_ + "': " + what);
  }

 private:
  const gguf_context* ctx_;
  std::string path_;
};

void set_fingerprint(gguf_context* g, const ModelFingerprint& fp) {
  gguf_set_val_str(g, "kvsteer.model.arch", fp.arch.c_str());
  gguf_set_val_i32(g, "kvsteer.model.n_layer", fp.n_layer);
  gguf_set_val_i32(g, "kvsteer.model.n_head", fp.n_head);
  gguf_set_val_i32(g, "kvsteer.model.n_head_kv", fp.n_head_kv);
  gguf_set_val_i32(g, "kvsteer.model.n_embd", fp.n_embd);
  gguf_set_val_i32(g, "kvsteer.model.n_embd_head_k", fp.n_embd_head_k);
  gguf_set_val_i32(g, "kvsteer.model.n_embd_head_v", fp.n_embd_head_v);
  gguf_set_val_i32(g, "kvsteer.model.n_embd_k_gqa", fp.n_embd_k_gqa);
  gguf_set_val_i32(g, "kvsteer.model.n_embd_v_gqa", fp.n_embd_v_gqa);
  gguf_set_val_str(g, "kvsteer.model.rope_type", fp.rope_type.c_str());
  gguf_set_val_i32(g, "kvsteer.model.n_vocab", fp.n_vocab);
  gguf_set_val_str(g, "kvsteer.model.vocab_hash", fp.vocab_hash.c_str());
}

ModelFingerprint get_fingerprint(const Reader& in) {
  ModelFingerprint fp;
  fp.arch = in.str("kvsteer.model.arch");
  fp.n_layer = in.i32("kvsteer.model.n_layer");
  fp.n_head = in.i32("kvsteer.model.n_head");
  fp.n_head_kv = in.i32("kvsteer.model.n_head_kv");
  fp.n_embd = in.i32("kvsteer.model.n_embd");
  fp.n_embd_head_k = in.i32("kvsteer.model.n_embd_head_k");
  fp.n_embd_head_v = in.i32("kvsteer.model.n_embd_head_v");
  fp.n_embd_k_gqa = in.i32("kvsteer.model.n_embd_k_gqa");
  fp.n_embd_v_gqa = in.i32("kvsteer.model.n_embd_v_gqa");
  fp.rope_type = in.str("kvsteer.model.rope_type");
  fp.n_vocab = in.i32("kvsteer.model.n_vocab");
  fp.vocab_hash = in.str("kvsteer.model.vocab_hash");
  if (fp.n_layer <= 0 || fp.n_layer > 4096 || fp.n_embd_k_gqa <= 0 || fp.n_embd_v_gqa <= 0 ||
      fp.n_embd_k_gqa > (1 << 20) || fp.n_embd_v_gqa > (1 << 20)) {
    in.fail("model shape n_layer " + std::to_string(fp.n_layer) + ", n_embd_k_gqa " +
            std::to_string(fp.n_embd_k_gqa) + ", n_embd_v_gqa " + std::to_string(fp.n_embd_v_gqa) +
            " is not plausible");
  }
  return fp;
}

void set_info(gguf_context* g, const ExtractionInfo& info) {
  gguf_set_val_i32(g, "kvsteer.extraction.position", info.position);
  gguf_set_val_u32(g, "kvsteer.extraction.n_pairs", info.n_pairs);
  gguf_set_val_u32(g, "kvsteer.extraction.n_shots", info.n_shots);
  gguf_set_val_str(g, "kvsteer.extraction.traces_sha256", info.traces_sha256.c_str());
  gguf_set_val_str(g, "kvsteer.extraction.chat_template", info.chat_template.c_str());
  gguf_set_val_str(g, "kvsteer.extraction.kv_type_k", info.kv_type_k.c_str());
  gguf_set_val_bool(g, "kvsteer.extraction.k_rotated", info.k_rotated);
  gguf_set_val_str(g, "kvsteer.extraction.source", info.source.c_str());
}

ExtractionInfo get_info(const Reader& in) {
  ExtractionInfo info;
  info.position = in.i32("kvsteer.extraction.position");
  info.n_pairs = in.u32("kvsteer.extraction.n_pairs");
  info.n_shots = in.u32("kvsteer.extraction.n_shots");
  info.traces_sha256 = in.str("kvsteer.extraction.traces_sha256");
  info.chat_template = in.str("kvsteer.extraction.chat_template");
  info.kv_type_k = in.str("kvsteer.extraction.kv_type_k");
  info.k_rotated = in.boolean("kvsteer.extraction.k_rotated");
  info.source = in.str("kvsteer.extraction.source");
  return info;
}

}  // namespace

void save_steering_vector(const std::string& path, const SteeringVector& vector) {
  const auto& fp = vector.model;
  if (vector.k.size() != static_cast<std::size_t>(fp.n_layer) ||
      vector.v.size() != static_cast<std::size_t>(fp.n_layer)) {
    throw Error(ErrorCode::InvalidArgument,
                "steering vector has " + std::to_string(vector.k.size()) + "/" +
                    std::to_string(vector.v.size()) + " K/V layers, its model has " +
                    std::to_string(fp.n_layer));
  }
  std::size_t floats = 0;
  std::size_t n_tensors = 0;
  for (std::size_t il = 0; il < vector.k.size(); ++il) {
    for (const auto* row : {&vector.k[il], &vector.v[il]}) {
      floats += row->size();
      n_tensors += row->empty() ? 0 : 1;
    }
  }
  ggml_init_params params{floats * sizeof(float) + (n_tensors + 1) * ggml_tensor_overhead(),
                          nullptr, false};
  GgmlPtr tensors(ggml_init(params));
  GgufPtr g(gguf_init_empty());
  if (!tensors || !g) {
    throw Error(ErrorCode::Io, "out of memory writing '" + path + "'");
  }
  gguf_set_val_str(g.get(), "general.type", kType);
  gguf_set_val_u32(g.get(), "kvsteer.format_version", kVectorFormatVersion);
  set_fingerprint(g.get(), fp);
  set_info(g.get(), vector.info);
  for (std::size_t il = 0; il < vector.k.size(); ++il) {
    for (const auto& [half, row, width] : {std::tuple{'k', &vector.k[il], fp.n_embd_k_gqa},
                                           std::tuple{'v', &vector.v[il], fp.n_embd_v_gqa}}) {
      if (row->empty()) {
        continue;
      }
      if (row->size() != static_cast<std::size_t>(width)) {
        throw Error(ErrorCode::InvalidArgument, std::string("steering vector ") + half +
                                                    " row of layer " + std::to_string(il) +
                                                    " has " + std::to_string(row->size()) +
                                                    " values, expected " + std::to_string(width));
      }
      for (float x : *row) {
        if (!std::isfinite(x)) {
          throw Error(ErrorCode::InvalidArgument, std::string("steering vector ") + half +
                                                      " row of layer " + std::to_string(il) +
                                                      " holds " + std::to_string(x) +
                                                      " (not finite); the file would not load");
        }
      }
      ggml_tensor* t =
          ggml_new_tensor_1d(tensors.get(), GGML_TYPE_F32, static_cast<std::int64_t>(row->size()));
      ggml_set_name(t, tensor_name(half, il).c_str());
      std::memcpy(t->data, row->data(), row->size() * sizeof(float));
      gguf_add_tensor(g.get(), t);
    }
  }
  const std::string tmp = detail::temporary_path_beside(path);
  std::error_code ec;
  if (!gguf_write_to_file(g.get(), tmp.c_str(), false)) {
    const int err = errno;
    std::filesystem::remove(tmp, ec);
    throw Error(ErrorCode::Io, "cannot write steering vector file '" + path +
                                   "': " + (err != 0 ? std::strerror(err) : "the write failed"));
  }
  try {
    detail::sync_file(tmp, path);
  } catch (const Error&) {
    std::filesystem::remove(tmp, ec);
    throw;
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    const std::string reason = ec.message();  // before remove() overwrites ec
    std::filesystem::remove(tmp, ec);
    throw Error(ErrorCode::Io, "cannot write steering vector file '" + path + "': " + reason);
  }
  detail::sync_parent_folder(path);
}

SteeringVector load_steering_vector(const std::string& path) {
  require_regular_file(path, "steering vector file");
  // Metadata only (no_alloc): ggml would otherwise allocate the data section the header declares
  // before checking it against the file, and a few bytes claiming petabytes of tensors abort in
  // ggml_init (found by fuzz/fuzz_vector_file.cpp). The rows are read below, each checked
  // against the file's size first.
  ggml_context* raw_meta = nullptr;
  gguf_init_params params{true, &raw_meta};
  GgufPtr g(gguf_init_from_file(path.c_str(), params));
  GgmlPtr meta(raw_meta);
  Reader in(g.get(), path);
  if (!g) {
    in.fail("not a GGUF file, or it is corrupt or truncated");
  }
  if (in.str("general.type") != kType) {
    in.fail("general.type is not '" + std::string(kType) + "'");
  }
  const std::uint32_t version = in.u32("kvsteer.format_version");
  if (version > kVectorFormatVersion) {
    in.fail("format version " + std::to_string(version) + " is newer than this kvsteer reads (" +
            std::to_string(kVectorFormatVersion) + "); upgrade kvsteer");
  }
  SteeringVector vec;
  vec.model = get_fingerprint(in);
  vec.info = get_info(in);
  const auto n_layer = static_cast<std::size_t>(vec.model.n_layer);
  vec.k.resize(n_layer);
  vec.v.resize(n_layer);
  std::ifstream file(path, std::ios::binary);
  std::error_code ec;
  const std::uintmax_t file_size = std::filesystem::file_size(path, ec);
  if (!file || ec) {
    throw Error(ErrorCode::Io, "cannot read steering vector file '" + path + "'");
  }
  const auto data_offset = static_cast<std::uintmax_t>(gguf_get_data_offset(g.get()));
  std::size_t found = 0;
  for (std::size_t il = 0; il < n_layer; ++il) {
    for (const auto& [half, row, width] : {std::tuple{'k', &vec.k[il], vec.model.n_embd_k_gqa},
                                           std::tuple{'v', &vec.v[il], vec.model.n_embd_v_gqa}}) {
      const std::string name = tensor_name(half, il);
      const std::int64_t id = gguf_find_tensor(g.get(), name.c_str());
      if (id < 0) {
        continue;
      }
      const ggml_tensor* t = ggml_get_tensor(meta.get(), name.c_str());
      if (t == nullptr || t->type != GGML_TYPE_F32 || ggml_n_dims(t) != 1 || t->ne[0] != width) {
        in.fail("tensor '" + name + "' must be F32 with " + std::to_string(width) + " values" +
                (t == nullptr ? "" : ", it has " + std::to_string(ggml_nelements(t))));
      }
      const std::uintmax_t bytes = static_cast<std::uintmax_t>(width) * sizeof(float);
      const auto at =
          data_offset + static_cast<std::uintmax_t>(gguf_get_tensor_offset(g.get(), id));
      if (at < data_offset || at > file_size || bytes > file_size - at) {
        in.fail("tensor '" + name + "' lies beyond the end of the file (truncated?)");
      }
      row->resize(static_cast<std::size_t>(width));
      file.seekg(static_cast<std::streamoff>(at));
      file.read(reinterpret_cast<char*>(row->data()), static_cast<std::streamsize>(bytes));
      if (!file) {
        std::string message = "cannot read tensor '" + name;
        message += "' of '" + path + "'";
        throw Error(ErrorCode::Io, message);
      }
      for (float x : *row) {
        if (!std::isfinite(x)) {
          in.fail("tensor '" + name + "' contains NaN or infinite values");
        }
      }
      ++found;
    }
  }
  if (found != static_cast<std::size_t>(gguf_get_n_tensors(g.get()))) {
    in.fail(std::to_string(gguf_get_n_tensors(g.get()) - static_cast<std::int64_t>(found)) +
            " tensor(s) do not belong to a layer of the model (n_layer " + std::to_string(n_layer) +
            ")");
  }
  if (found == 0) {
    in.fail("holds no layer tensors");
  }
  return vec;
}

}  // namespace kvsteer
