// A loaded GGUF model: weights, vocabulary and chat template.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvsteer/types.h"

namespace kvsteer {

struct ModelParams {
  std::int32_t n_gpu_layers = 0;  // layers offloaded to a GPU backend, if libllama has one
  bool use_mmap = true;           // map the file instead of reading it
  bool vocab_only = false;        // load only the vocabulary (tokenize, templates; no Session)
  // Let libllama repack weights into its extra CPU buffer types (AMX tiles, AVX2/NEON
  // interleaved Q4_0). Off by default: on CPUs with AMX, llama.cpp v0.4.0's AMX kernel for Q4_1
  // weights stops with SIGILL/SIGSEGV on any batch of more than 32 tokens (its own llama-simple
  // does too, with SmolLM2-135M-Instruct Q4_1 and a 34-token prompt). Without repacking the same
  // weights run through the ordinary quantized matmul.
  bool use_extra_bufts = false;
};

// Immutable after loading. Thread-safe: const methods may be called from several threads, and
// several Sessions may share one Model.
class Model {
 public:
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const std::string& path() const;
  // Layout identity of the model's KV cache (see ModelFingerprint).
  const ModelFingerprint& fingerprint() const;
  std::int32_t n_layer() const { return fingerprint().n_layer; }
  std::int32_t n_vocab() const { return fingerprint().n_vocab; }
  std::int32_t n_ctx_train() const;
  std::uint64_t n_params() const;
  std::uint64_t size_bytes() const;
  // One-line description from libllama, e.g. "llama 1B Q8_0".
  std::string description() const;
  bool vocab_only() const;

  // A GGUF metadata value as text, or nullopt when the key is absent.
  std::optional<std::string> try_meta(const std::string& key) const;

  // For iSWA models (gemma2/3, ...): true for the layers that use the sliding window, which
  // llama.cpp caches in a separate block. All false for other models. [n_layer]
  const std::vector<bool>& swa_layers() const;

  // Tokenizes text. add_special adds BOS/EOS as the vocabulary asks; parse_special turns
  // special-token text such as "<|im_start|>" into its single token (always wanted for
  // chat-templated text).
  std::vector<Token> tokenize(std::string_view text, bool add_special,
                              bool parse_special = true) const;
  // Tokenizes a prompt, with the project's one BOS rule: special-token text is parsed, the
  // tokenizer adds nothing (no BOS, no EOS), and BOS is put first when the vocabulary asks for it
  // (adds_bos()) and the text does not already begin with it (templates such as Llama-3's render
  // "<|begin_of_text|>" themselves; ChatML templates do not, and SmolLM2's vocabulary asks for no
  // BOS). Every prompt kvsteer decodes (generate, kv-dump, extract, eval, sweep, diagnose) goes
  // through here, so a contrastive prompt and the steered prompt of the same question begin alike.
  // This departs from the reference on Llama-3 only, whose extraction prompts carry a doubled
  // BOS (method.md §6 item 7).
  std::vector<Token> tokenize_prompt(std::string_view text) const;
  // Text of one token; special tokens render as their text when render_special is true.
  std::string token_to_piece(Token token, bool render_special = true) const;
  std::string detokenize(std::span<const Token> tokens, bool render_special = true) const;
  // Throws Error(InvalidArgument) unless 0 <= token < n_vocab.
  void check_token(Token token) const;

  bool is_eog(Token token) const;  // end of generation (EOS, EOT, <|im_end|>, ...)
  std::optional<Token> bos() const;
  bool adds_bos() const;  // whether tokenize(add_special = true) prepends BOS

  // The model's own chat template (tokenizer.chat_template), or "" when the GGUF has none.
  std::string chat_template() const;
  // Renders messages with the model's template, or with template_override when it is non-empty
  // (a built-in name such as "chatml" or "llama3", or template text). add_generation_prompt ends
  // the text with the assistant header. Throws Error(Unsupported) for a template libllama cannot
  // render, and Error(InvalidArgument) when the model has none and no override is given.
  std::string apply_chat_template(std::span<const ChatMessage> messages, bool add_generation_prompt,
                                  const std::string& template_override = "") const;

  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  friend std::shared_ptr<const Model> load_model(const std::string& path,
                                                 const ModelParams& params);
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Loads a GGUF file. Throws Error(NotFound) for a missing file, Error(Format) for a file libllama
// cannot load (the message quotes libllama's reason), Error(Unsupported) for architectures whose
// cache kvsteer cannot steer (recurrent, hybrid, MLA).
std::shared_ptr<const Model> load_model(const std::string& path, const ModelParams& params = {});

}  // namespace kvsteer
