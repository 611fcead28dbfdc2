// Model/cache configurations the model tier runs every property test on.
#pragma once

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "kvsteer/model.h"
#include "kvsteer/session.h"

namespace kvsteer::test {

struct ModelCase {
  std::string model;  // "stories260K" or a tiny fixture file name such as "llama-f32.gguf"
  KvType type_k = KvType::F16;
  KvType type_v = KvType::F16;
  FlashAttn flash_attn = FlashAttn::On;
  std::string name() const;  // for test names: letters, digits and '_' only
};
// gtest prints parameters with this instead of dumping bytes.
void PrintTo(const ModelCase& c, std::ostream* os);

std::string model_path(const std::string& model);
// Loads each model once per process.
std::shared_ptr<const Model> shared_model(const std::string& model);
SessionParams session_params(const ModelCase& c, std::uint32_t n_seq = 1);

// Every configuration the property tests must hold on: each fixture architecture and weight
// type, and each cache type with flash attention on and off where llama.cpp allows it.
std::vector<ModelCase> all_model_cases();

// A deterministic prompt of n tokens from the model's vocabulary (no special tokens).
std::vector<Token> sample_prompt(const Model& model, std::size_t n, unsigned salt = 0);

}  // namespace kvsteer::test
