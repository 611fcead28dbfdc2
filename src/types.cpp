#include "kvsteer/types.h"

#include <array>
#include <string>
#include <utility>

#include "kvsteer/error.h"

namespace kvsteer {
namespace {

constexpr std::array<std::pair<KvType, const char*>, 5> kKvTypeNames = {{
    {KvType::F32, "f32"},
    {KvType::F16, "f16"},
    {KvType::BF16, "bf16"},
    {KvType::Q8_0, "q8_0"},
    {KvType::Q4_0, "q4_0"},
}};

}  // namespace

KvType parse_kv_type(const std::string& name) {
  for (const auto& [type, text] : kKvTypeNames) {
    if (name == text) {
      return type;
    }
  }
  throw Error(ErrorCode::InvalidArgument,
              "unknown KV cache type '" + name + "'; expected one of f32, f16, bf16, q8_0, q4_0");
}

const char* kv_type_name(KvType type) noexcept {
  for (const auto& [t, text] : kKvTypeNames) {
    if (t == type) {
      return text;
    }
  }
  return "?";
}

std::string ModelFingerprint::mismatch(const ModelFingerprint& other) const {
  auto differ = [](const char* field, const auto& mine, const auto& theirs) -> std::string {
    if (mine == theirs) {
      return {};
    }
    std::string a;
    std::string b;
    if constexpr (std::is_same_v<std::decay_t<decltype(mine)>, std::string>) {
      a = mine;
      b = theirs;
    } else {
      a = std::to_string(mine);
      b = std::to_string(theirs);
    }
    return std::string(field) + " is " + a + " in the vector but " + b + " in the model";
  };
  for (std::string m :
       {differ("architecture", arch, other.arch), differ("n_layer", n_layer, other.n_layer),
        differ("n_head_kv", n_head_kv, other.n_head_kv),
        differ("n_embd_head_k", n_embd_head_k, other.n_embd_head_k),
        differ("n_embd_head_v", n_embd_head_v, other.n_embd_head_v),
        differ("n_embd_k_gqa", n_embd_k_gqa, other.n_embd_k_gqa),
        differ("n_embd_v_gqa", n_embd_v_gqa, other.n_embd_v_gqa),
        differ("rope type", rope_type, other.rope_type),
        differ("vocabulary size", n_vocab, other.n_vocab),
        differ("vocabulary hash", vocab_hash, other.vocab_hash),
        differ("n_head", n_head, other.n_head), differ("n_embd", n_embd, other.n_embd)}) {
    if (!m.empty()) {
      return m;
    }
  }
  return {};
}

}  // namespace kvsteer
