#include "vocab.h"

#include <cstdio>
#include <fstream>
#include <set>
#include <vector>

#include "base/fnv1a64.h"
#include "gguf.h"
#include "kvsteer/error.h"
#include "llama.h"

namespace kvsteer::tinymodel {

const char* const kChatmlTemplate =
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const char* const kLlama3Template =
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}";

namespace {

// U+2581 LOWER ONE EIGHTH BLOCK: SentencePiece's marker for a preceding space.
constexpr const char* kSpace = "\xe2\x96\x81";

// Words whose merge chains are in the vocabulary, so that prompts in tests tokenize into a few
// pieces each. Roles first (chat templates), then short content words for steering prompts.
constexpr const char* kWords[] = {
    "user", "assistant", "system", "hello", "world", "the",    "is",       "and",
    "good", "bad",       "happy",  "sad",   "love",  "hate",   "cat",      "dog",
    "yes",  "no",        "you",    "it",    "what",  "answer", "question",
};

struct PieceList {
  std::vector<std::string> text;
  std::vector<float> score;
  std::vector<int32_t> type;
  std::set<std::string> seen;

  void add(const std::string& piece, int32_t token_type) {
    if (!seen.insert(piece).second) {
      return;
    }
    // SPM merges the adjacent pair with the highest score first; earlier pieces win.
    score.push_back(token_type == LLAMA_TOKEN_TYPE_NORMAL ? -static_cast<float>(text.size())
                                                          : 0.0f);
    text.push_back(piece);
    type.push_back(token_type);
  }
  // Adds every prefix of `word` with at least two characters (ASCII only), so that SPM can merge
  // the word character by character.
  void add_chain(const std::string& lead, const std::string& word) {
    for (size_t n = 1; n <= word.size(); ++n) {
      if (lead.size() + n >= 2) {
        add(lead + word.substr(0, n), LLAMA_TOKEN_TYPE_NORMAL);
      }
    }
  }
};

void set_str_array(gguf_context* meta, const char* key, const std::vector<std::string>& values) {
  std::vector<const char*> ptrs;
  ptrs.reserve(values.size());
  for (const std::string& v : values) {
    ptrs.push_back(v.c_str());
  }
  gguf_set_arr_str(meta, key, ptrs.data(), ptrs.size());
}

}  // namespace

uint32_t add_small_vocab(gguf_context* meta) {
  PieceList p;
  p.add("<unk>", LLAMA_TOKEN_TYPE_UNKNOWN);
  p.add("<s>", LLAMA_TOKEN_TYPE_CONTROL);
  p.add("</s>", LLAMA_TOKEN_TYPE_CONTROL);
  p.add("<|im_start|>", LLAMA_TOKEN_TYPE_CONTROL);
  p.add("<|im_end|>", LLAMA_TOKEN_TYPE_CONTROL);
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    p.add(buf, LLAMA_TOKEN_TYPE_BYTE);
  }
  p.add(kSpace, LLAMA_TOKEN_TYPE_NORMAL);
  for (char c = 'a'; c <= 'z'; ++c) {
    p.add(std::string(kSpace) + c, LLAMA_TOKEN_TYPE_NORMAL);
  }
  for (const char* word : kWords) {
    p.add_chain(kSpace, word);
    p.add_chain("", word);
  }
  for (int c = 0x21; c <= 0x7e; ++c) {
    p.add(std::string(1, static_cast<char>(c)), LLAMA_TOKEN_TYPE_NORMAL);
  }

  gguf_set_val_str(meta, "tokenizer.ggml.model", "llama");
  set_str_array(meta, "tokenizer.ggml.tokens", p.text);
  gguf_set_arr_data(meta, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, p.score.data(),
                    p.score.size());
  gguf_set_arr_data(meta, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, p.type.data(),
                    p.type.size());
  gguf_set_val_u32(meta, "tokenizer.ggml.unknown_token_id", 0);
  gguf_set_val_u32(meta, "tokenizer.ggml.bos_token_id", 1);
  gguf_set_val_u32(meta, "tokenizer.ggml.eos_token_id", 2);
  gguf_set_val_bool(meta, "tokenizer.ggml.add_bos_token", true);
  gguf_set_val_bool(meta, "tokenizer.ggml.add_eos_token", false);
  // SPM's default space prefix would also go after every special token, so ChatML's
  // "<|im_end|>\n" would become <|im_end|> "▁" "\n". Without it, chat prompts tokenize as with
  // the BPE vocabularies of ChatML models (SmolLM2, Qwen2) and detokenize to the same text.
  gguf_set_val_bool(meta, "tokenizer.ggml.add_space_prefix", false);
  gguf_set_val_str(meta, "tokenizer.chat_template", kChatmlTemplate);
  return static_cast<uint32_t>(p.text.size());
}

uint32_t copy_vocab_from_file(gguf_context* meta, const std::string& path,
                              const std::string& fallback_template) {
  gguf_init_params params = {/*no_alloc=*/true, /*ctx=*/nullptr};
  gguf_context* src = gguf_init_from_file(path.c_str(), params);
  if (src == nullptr) {
    throw Error(ErrorCode::NotFound,
                "cannot read vocabulary GGUF '" + path +
                    "'; hint: --vocab-dir must be llama.cpp's models/ folder holding "
                    "ggml-vocab-*.gguf");
  }
  // Copy everything, then drop what is not tokenizer.* (general.*, <arch>.* of the donor model).
  gguf_context* tmp = gguf_init_empty();
  gguf_set_kv(tmp, src);
  gguf_free(src);
  for (int64_t i = gguf_get_n_kv(tmp) - 1; i >= 0; --i) {
    const std::string key = gguf_get_key(tmp, i);
    if (key.rfind("tokenizer.", 0) != 0) {
      gguf_remove_key(tmp, key.c_str());
    }
  }
  const int64_t tokens_id = gguf_find_key(tmp, "tokenizer.ggml.tokens");
  if (tokens_id < 0 || gguf_get_kv_type(tmp, tokens_id) != GGUF_TYPE_ARRAY) {
    gguf_free(tmp);
    throw Error(ErrorCode::Format, "vocabulary GGUF '" + path +
                                       "' has no tokenizer.ggml.tokens array; expected a "
                                       "llama.cpp ggml-vocab-*.gguf file");
  }
  const auto n_tokens = static_cast<uint32_t>(gguf_get_arr_n(tmp, tokens_id));
  gguf_set_kv(meta, tmp);
  gguf_free(tmp);
  if (gguf_find_key(meta, "tokenizer.chat_template") < 0 && !fallback_template.empty()) {
    gguf_set_val_str(meta, "tokenizer.chat_template", fallback_template.c_str());
  }
  return n_tokens;
}

std::string hash_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(ErrorCode::NotFound, "cannot read '" + path + "'");
  }
  uint64_t hash = base::kFnv1a64Basis;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    hash = base::fnv1a64(buf.data(), static_cast<size_t>(in.gcount()), hash);
  }
  char out[17];
  std::snprintf(out, sizeof(out), "%016llx", static_cast<unsigned long long>(hash));
  return out;
}

}  // namespace kvsteer::tinymodel
