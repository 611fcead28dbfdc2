#include "support/model_cases.h"

#include <cctype>
#include <map>
#include <mutex>

#include "support/test_env.h"

namespace kvsteer::test {

std::string ModelCase::name() const {
  std::string n = model + "_k" + kv_type_name(type_k) + "_v" + kv_type_name(type_v) +
                  (flash_attn == FlashAttn::On ? "_fa" : "_nofa");
  for (char& c : n) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return n;
}

void PrintTo(const ModelCase& c, std::ostream* os) { *os << c.name(); }

std::string model_path(const std::string& model) {
  return model == "stories260K" ? stories_model_path() : tiny_model_path(model);
}

std::shared_ptr<const Model> shared_model(const std::string& model) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<const Model>> cache;
  std::lock_guard lock(mutex);
  auto& slot = cache[model];
  if (!slot) slot = load_model(model_path(model));
  return slot;
}

SessionParams session_params(const ModelCase& c, std::uint32_t n_seq) {
  SessionParams p;
  p.n_ctx = 512;
  p.n_batch = 64;
  p.n_seq = n_seq;
  p.n_threads = 1;
  p.type_k = c.type_k;
  p.type_v = c.type_v;
  p.flash_attn = c.flash_attn;
  return p;
}

std::vector<ModelCase> all_model_cases() {
  std::vector<ModelCase> cases;
  // A real pretrained model (head size 8: below the Q8_0 block, so float caches only).
  for (auto fa : {FlashAttn::On, FlashAttn::Off}) {
    cases.push_back({"stories260K", KvType::F16, KvType::F16, fa});
    cases.push_back({"stories260K", KvType::F32, KvType::F32, fa});
  }
  cases.push_back({"stories260K", KvType::BF16, KvType::BF16, FlashAttn::On});
  // Random-init fixtures of each cache layout (tools/tinymodel): GQA llama (head size 64, so a
  // quantized K cache is Hadamard-rotated), qwen2 with QKV biases, phi3 with fused QKV, and gemma2
  // with a sliding-window second cache block.
  for (const char* arch : {"llama", "qwen2", "phi3", "gemma2"}) {
    const std::string f32 = std::string(arch) + "-f32.gguf";
    cases.push_back({f32, KvType::F16, KvType::F16, FlashAttn::On});
    cases.push_back({f32, KvType::F16, KvType::F16, FlashAttn::Off});
    cases.push_back({f32, KvType::F32, KvType::F32, FlashAttn::On});
    cases.push_back({f32, KvType::Q8_0, KvType::Q8_0, FlashAttn::On});
    cases.push_back({std::string(arch) + "-f16.gguf", KvType::F16, KvType::F16, FlashAttn::On});
    cases.push_back({std::string(arch) + "-q8_0.gguf", KvType::F16, KvType::F16, FlashAttn::On});
  }
  cases.push_back({"llama-f32.gguf", KvType::Q8_0, KvType::F16, FlashAttn::Off});
  cases.push_back({"llama-f32.gguf", KvType::BF16, KvType::F32, FlashAttn::Off});
  return cases;
}

std::vector<Token> sample_prompt(const Model& model, std::size_t n, unsigned salt) {
  std::vector<Token> out;
  const auto n_vocab = static_cast<unsigned>(model.n_vocab());
  unsigned x = 2166136261u ^ salt;
  while (out.size() < n) {
    x = x * 1664525u + 1013904223u;
    const auto t = static_cast<Token>((x >> 8) % n_vocab);
    if (model.is_eog(t) || (model.bos() && t == *model.bos())) continue;
    out.push_back(t);
  }
  return out;
}

}  // namespace kvsteer::test
