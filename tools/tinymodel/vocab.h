// Tokenizer metadata for the tiny test models: a small hand-written SentencePiece ("llama") vocab
// with ChatML control tokens, or the tokenizer of a real model family copied from one of
// llama.cpp's vocabulary-only GGUFs (models/ggml-vocab-*.gguf).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

struct gguf_context;

namespace kvsteer::tinymodel {

// ChatML, as used by Qwen2 and SmolLM2; llama_chat_apply_template detects it by "<|im_start|>".
extern const char* const kChatmlTemplate;
// Llama-3 instruct; llama_chat_apply_template detects it by "<|start_header_id|>".
extern const char* const kLlama3Template;

// Version tag of the small vocabulary; part of every recipe that uses it. Bump it whenever
// add_small_vocab() changes.
inline constexpr const char* kSmallVocabVersion = "small-chatml-v2";

// Writes the tokenizer.* keys of the small SPM vocabulary into `meta`:
//   0 <unk> (UNKNOWN), 1 <s>, 2 </s>, 3 <|im_start|>, 4 <|im_end|> (CONTROL),
//   5..260 byte-fallback tokens <0x00>..<0xFF> (BYTE), then "▁", printable ASCII characters,
//   "▁a".."▁z" and the merge chains of a few words (NORMAL), and a ChatML chat template;
//   add_bos_token true, add_space_prefix false.
// Returns the number of tokens.
uint32_t add_small_vocab(gguf_context* meta);

// Copies every tokenizer.* key of the vocabulary GGUF at `path` into `meta`. When the file has no
// tokenizer.chat_template, sets `fallback_template` instead (when non-empty). Returns the number
// of tokens. Throws Error(NotFound) if the file is missing, Error(Format) if it has no token list.
uint32_t copy_vocab_from_file(gguf_context* meta, const std::string& path,
                              const std::string& fallback_template);

// 64-bit FNV-1a of a file's bytes, as 16 hex digits; used to tie recipes to a vocabulary file.
// Throws Error(NotFound) if the file cannot be read.
std::string hash_file(const std::string& path);

}  // namespace kvsteer::tinymodel
