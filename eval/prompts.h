// Reference chat-template renders (method.md §1.5, §1.2, §6 item 9), byte for byte as the
// Hugging Face Jinja templates the reference used produce them. llama.cpp's built-in templates
// differ (its llama3 template omits <|begin_of_text|> and the system block; its chatml omits
// Qwen2's default system prompt), so the harness renders these families itself.
//
// Sources: method.md §1.5 (verbatim renders from the result files); the reference's Llama-3.2
// override LLAMA_CHAT_TEMPLATE (cache-steering `src/utils/constants.py`); the stock templates of
// Llama-3.1-8B-Instruct, Qwen2-0.5B-Instruct, SmolLM2-360M-Instruct and Phi-4-mini-instruct.
// Tool calls, tool roles and custom dates are not supported.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "kvsteer/model.h"
#include "kvsteer/types.h"

namespace kvsteer::eval {

enum class PromptFamily {
  Llama32,   // "llama32": Llama-3.2 with the reference's date-less override; content trimmed
  Llama31,   // "llama31": stock Llama-3.1 ("Today Date: 26 Jul 2024"); content trimmed
  Qwen2,     // "qwen2": ChatML + default system "You are a helpful assistant."
  SmolLM2,   // "smollm2": ChatML + default system "You are a helpful AI assistant named SmolLM..."
  Phi4Mini,  // "phi4mini": <|role|>content<|end|>, no newlines, no default system
  ChatMl,    // "chatml": plain ChatML, no default system
};

// Parses the names above; throws Error(InvalidArgument) naming the valid ones otherwise.
PromptFamily parse_prompt_family(const std::string& name);
const char* prompt_family_name(PromptFamily family) noexcept;

// The family whose stock Hugging Face template a GGUF's tokenizer.chat_template is, for the
// families llama.cpp renders differently (its built-in ChatML drops their default system
// message): SmolLM2 (system "You are a helpful AI assistant named SmolLM, trained by Hugging
// Face") and Qwen2 ("You are a helpful assistant."). nullopt for any other template, which is
// then rendered by llama.cpp as it is. kvsteer's commands use the detected family unless a
// --prompt-family or --chat-template is given, so that SmolLM2 sees the prompt it was tuned on.
std::optional<PromptFamily> detect_prompt_family(std::string_view chat_template);

// Zero-shot CoT text, appended right after the generation prompt (no space or newline).
inline constexpr std::string_view kCotPrefix = "Let's think step by step.";

// Renders `messages` as apply_chat_template(..., tokenize=False) would:
// - Llama32/Llama31: "<|begin_of_text|>", then always a system block
//   "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
//   [+ "Today Date: 26 Jul 2024\n" for Llama31] + "\n" + trimmed system content (if the first
//   message is "system", it is consumed here) + "<|eot_id|>"; then per message
//   "<|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>"; generation prompt
//   "<|start_header_id|>assistant<|end_header_id|>\n\n".
// - Qwen2/SmolLM2/ChatMl: "<|im_start|>{role}\n{content}<|im_end|>\n" per message, content as is;
//   Qwen2 and SmolLM2 put their default system message first when the first message is not
//   "system" (and only when there is at least one message); generation prompt
//   "<|im_start|>assistant\n".
// - Phi4Mini: "<|{role}|>{content}<|end|>" per message; generation prompt "<|assistant|>", and
//   without it the eos token "<|endoftext|>" is appended instead.
// Special tokens are text here: tokenize with parse_special=true and, for evaluation prompts,
// add_special=false (method.md §6 item 7).
std::string render_reference_prompt(PromptFamily family, std::span<const ChatMessage> messages,
                                    bool add_generation_prompt);

// The family every frontend (CLI, server, Python) renders with: the one named (empty: none); else
// the one detected from the model's template, unless a template override is given, which then
// renders through llama.cpp.
std::optional<PromptFamily> resolve_prompt_family(const std::string& name,
                                                  const std::string& chat_template,
                                                  const Model& model);

// A conversation rendered with resolve_prompt_family's family or else the model's template (or
// chat_template), with the generation prompt: the text the frontends tokenize for a list of
// messages (a pairs file's sides, Python's conversation prompts).
std::string render_conversation(const Model& model, std::span<const ChatMessage> messages,
                                const std::string& prompt_family, const std::string& chat_template);

// One user turn, after an optional system message, rendered as render_conversation renders it:
// the text the frontends tokenize for `generate` and `extract`.
std::string render_user_turn(const Model& model, const std::string& user, const std::string& system,
                             const std::string& prompt_family, const std::string& chat_template);

}  // namespace kvsteer::eval
