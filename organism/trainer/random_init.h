// Random-init llama GGUFs for the trainer's tests and throughput benchmark (the project's model
// fixtures come from the fixture writer in tools/tinymodel/; this one exists so that the trainer
// can be tested on its own). Written with gguf.h only, as llama-internals.md §4.2 describes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvsteer::train {

// A SentencePiece ("llama") tokenizer given in full, e.g. the reasoning organism's vocabulary.
struct SpmTokenizer {
  std::vector<std::string> tokens;  // piece text by id ("▁" for spaces, "<0x0A>" for bytes)
  std::vector<float> scores;        // merge priority by id
  std::vector<int32_t> types;       // llama_token_type by id
  int32_t unk_id = 0, bos_id = 1, eos_id = 2;
  int32_t eot_id = -1;  // end-of-turn token (tokenizer.ggml.eot_token_id); -1: none
  bool add_bos = true;
  bool add_space_prefix = false;
  std::string chat_template;  // tokenizer.chat_template; empty: none
};

// Shape of the random model. The vocabulary is SentencePiece-style ("llama"): <unk>, <s>, </s>,
// 256 byte tokens <0x00>..<0xFF>, "▁" and filler pieces "▁t<i>" up to n_vocab (>= 260).
struct RandomInitSpec {
  int n_vocab = 320;
  int n_ctx_train = 256;
  int n_embd = 64;
  int n_layer = 2;
  int n_head = 4;
  int n_head_kv = 2;
  int n_ff = 128;
  float init_std = 0.02f;  // weight std (GPT-2); residual projections use std / sqrt(2 n_layer)
  uint64_t seed = 1;
  std::string name = "kvsteer-trainer random init";  // general.name
  // When set, the vocabulary to store instead of the filler one; n_vocab must equal its size.
  std::optional<SpmTokenizer> tokenizer;
};

// Writes the model to `path` (F32, untied output.weight, norms 1). Throws Error(InvalidArgument)
// on an impossible shape, Error(Io) if the file cannot be written.
void write_random_init(const std::string& path, const RandomInitSpec& spec);

// Parameter count of a model of this shape.
int64_t count_params(const RandomInitSpec& spec);

}  // namespace kvsteer::train
