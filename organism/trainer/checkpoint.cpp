#include "organism/trainer/checkpoint.h"

#include <cstring>
#include <vector>

#include "ggml-backend.h"
#include "gguf.h"
#include "kvsteer/error.h"

namespace kvsteer::train {
namespace {

constexpr uint32_t kCheckpointVersion = 1;
constexpr const char* kKeyVersion = "kvsteer.ckpt.version";
constexpr const char* kKeyStep = "kvsteer.ckpt.step";

// Identity fields as (key, value) pairs; every value is stored as u64 (floats by bit pattern), so
// the comparison is exact.
std::vector<std::pair<std::string, uint64_t>> identity_fields(const RunIdentity& id) {
  auto bits = [](float f) {
    uint32_t u = 0;
    std::memcpy(&u, &f, sizeof(u));
    return uint64_t(u);
  };
  const AdamWOptions& a = id.adamw;
  return {{"seed", id.seed},
          {"steps", uint64_t(id.n_steps)},
          {"ctx", uint64_t(id.n_ctx)},
          {"batch", uint64_t(id.n_batch)},
          {"data_fingerprint", id.data_fingerprint},
          {"lr", bits(a.lr)},
          {"lr_min", bits(a.lr_min)},
          {"warmup", uint64_t(a.warmup)},
          {"weight_decay", bits(a.weight_decay)},
          {"beta1", bits(a.beta1)},
          {"beta2", bits(a.beta2)},
          {"eps", bits(a.eps)},
          {"grad_clip", bits(a.grad_clip)}};
}

[[noreturn]] void fail(ErrorCode code, const std::string& path, const std::string& what) {
  throw Error(code, "checkpoint " + path + ": " + what);
}

uint64_t get_u64(const gguf_context* g, const std::string& key, const std::string& path) {
  const int64_t id = gguf_find_key(g, key.c_str());
  if (id < 0 || gguf_get_kv_type(g, id) != GGUF_TYPE_UINT64) {
    fail(ErrorCode::Format, path, "missing key " + key);
  }
  return gguf_get_val_u64(g, id);
}

void restore_tensor(ggml_context* src, ggml_tensor* dst, const std::string& path) {
  const ggml_tensor* t = ggml_get_tensor(src, ggml_get_name(dst));
  if (!t || t->type != GGML_TYPE_F32 || !ggml_are_same_shape(t, dst)) {
    fail(ErrorCode::Format, path,
         std::string("tensor ") + ggml_get_name(dst) + " missing or of another shape/type");
  }
  ggml_backend_tensor_set(dst, t->data, 0, ggml_nbytes(dst));
}

}  // namespace

std::string checkpoint_path(const std::string& dir) { return dir + "/checkpoint.gguf"; }

std::string snapshot_path(const std::string& dir) { return dir + "/snapshot.gguf"; }

void save_checkpoint(const std::string& path, Trainer& trainer, const RunIdentity& id) {
  gguf_context_ptr g = make_weights_gguf(trainer.model());
  for (const ggml_tensor* m : trainer.adamw().m()) {
    gguf_add_tensor(g.get(), m);
  }
  for (const ggml_tensor* v : trainer.adamw().v()) {
    gguf_add_tensor(g.get(), v);
  }
  gguf_set_val_u32(g.get(), kKeyVersion, kCheckpointVersion);
  gguf_set_val_u64(g.get(), kKeyStep, uint64_t(trainer.step_index()));
  for (const auto& [key, value] : identity_fields(id)) {
    gguf_set_val_u64(g.get(), ("kvsteer.ckpt." + key).c_str(), value);
  }
  write_gguf_atomically(g.get(), path);
}

void load_checkpoint(const std::string& path, Trainer& trainer, const RunIdentity& id) {
  ggml_context* raw = nullptr;
  gguf_context_ptr g(gguf_init_from_file(path.c_str(), {/*no_alloc=*/false, &raw}));
  ggml_context_ptr ctx(raw);
  if (!g) {
    throw Error(ErrorCode::Io, "cannot read checkpoint " + path + " (missing file or not a GGUF)");
  }
  const int64_t vid = gguf_find_key(g.get(), kKeyVersion);
  if (vid < 0 || gguf_get_kv_type(g.get(), vid) != GGUF_TYPE_UINT32 ||
      gguf_get_val_u32(g.get(), vid) != kCheckpointVersion) {
    fail(ErrorCode::Format, path,
         "not a kvsteer checkpoint of version " + std::to_string(kCheckpointVersion));
  }
  for (const auto& [key, value] : identity_fields(id)) {
    if (get_u64(g.get(), "kvsteer.ckpt." + key, path) != value) {
      fail(ErrorCode::InvalidArgument, path,
           "written by a run with another " + key +
               " (resume with the same options, data and seed, or start a new run)");
    }
  }
  for (ggml_tensor* p : trainer.model().params()) {
    restore_tensor(ctx.get(), p, path);
  }
  for (ggml_tensor* m : trainer.adamw().m()) {
    restore_tensor(ctx.get(), m, path);
  }
  for (ggml_tensor* v : trainer.adamw().v()) {
    restore_tensor(ctx.get(), v, path);
  }
  trainer.set_step_index(static_cast<int64_t>(get_u64(g.get(), kKeyStep, path)));
}

}  // namespace kvsteer::train
