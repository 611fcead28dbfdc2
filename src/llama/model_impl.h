// Model::Impl, shared by the files of src/llama/.
#pragma once

#include <string>
#include <vector>

#include "kvsteer/model.h"
#include "llama-cpp.h"

namespace kvsteer {

struct Model::Impl {
  std::string path;
  llama_model_ptr model;
  const llama_vocab* vocab = nullptr;
  ModelFingerprint fingerprint;
  std::vector<bool> swa_layers;  // [n_layer]
  bool vocab_only = false;
};

namespace detail {
// Throws Error(Backend) quoting libllama's last error line.
[[noreturn]] void throw_backend(const std::string& what);
}  // namespace detail

}  // namespace kvsteer
