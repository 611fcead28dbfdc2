#include "eval/prompts.h"

#include <array>
#include <string>
#include <string_view>
#include <utility>

#include "kvsteer/error.h"

namespace kvsteer::eval {
namespace {

constexpr std::array<std::pair<const char*, PromptFamily>, 6> kFamilies = {{
    {"llama32", PromptFamily::Llama32},
    {"llama31", PromptFamily::Llama31},
    {"qwen2", PromptFamily::Qwen2},
    {"smollm2", PromptFamily::SmolLM2},
    {"phi4mini", PromptFamily::Phi4Mini},
    {"chatml", PromptFamily::ChatMl},
}};

// Jinja's `trim` is Python's str.strip(): ASCII whitespace plus \x1c-\x1f (Unicode spaces are
// not stripped here; they do not occur in the reference prompts).
bool is_strip_space(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u == ' ' || (u >= 0x09 && u <= 0x0d) || (u >= 0x1c && u <= 0x1f);
}

std::string trim(const std::string& s) {
  std::size_t b = 0;
  std::size_t e = s.size();
  while (b < e && is_strip_space(s[b])) {
    ++b;
  }
  while (e > b && is_strip_space(s[e - 1])) {
    --e;
  }
  return s.substr(b, e - b);
}

std::string render_llama(std::span<const ChatMessage> messages, bool add_generation_prompt,
                         bool stock_31) {
  std::string system_message;
  if (!messages.empty() && messages.front().role == "system") {
    system_message = trim(messages.front().content);
    messages = messages.subspan(1);
  }
  std::string out = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n";
  out += "Cutting Knowledge Date: December 2023\n";
  if (stock_31) {
    out += "Today Date: 26 Jul 2024\n";
  }
  out += "\n" + system_message + "<|eot_id|>";
  for (const auto& m : messages) {
    out +=
        "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + trim(m.content) + "<|eot_id|>";
  }
  if (add_generation_prompt) {
    out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  }
  return out;
}

std::string render_chatml(std::span<const ChatMessage> messages, bool add_generation_prompt,
                          const char* default_system) {
  std::string out;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (i == 0 && default_system != nullptr && messages[0].role != "system") {
      out += std::string("<|im_start|>system\n") + default_system + "<|im_end|>\n";
    }
    out += "<|im_start|>" + messages[i].role + "\n" + messages[i].content + "<|im_end|>\n";
  }
  if (add_generation_prompt) {
    out += "<|im_start|>assistant\n";
  }
  return out;
}

std::string render_phi4mini(std::span<const ChatMessage> messages, bool add_generation_prompt) {
  std::string out;
  for (const auto& m : messages) {
    out += "<|" + m.role + "|>" + m.content + "<|end|>";
  }
  out += add_generation_prompt ? "<|assistant|>" : "<|endoftext|>";
  return out;
}

}  // namespace

PromptFamily parse_prompt_family(const std::string& name) {
  for (const auto& [n, family] : kFamilies) {
    if (name == n) {
      return family;
    }
  }
  throw Error(ErrorCode::InvalidArgument,
              "unknown prompt family '" + name +
                  "'; expected one of llama32, llama31, qwen2, smollm2, phi4mini, chatml");
}

const char* prompt_family_name(PromptFamily family) noexcept {
  for (const auto& [n, f] : kFamilies) {
    if (f == family) {
      return n;
    }
  }
  return "unknown";
}

std::optional<PromptFamily> detect_prompt_family(std::string_view chat_template) {
  // Both stock templates write their default system block as one literal; tool-calling variants
  // (Qwen2.5 and later) use other system text and are left to llama.cpp. The GGUF keeps the Jinja
  // source, where the newline inside the literal is either a real newline or backslash-n.
  auto holds = [&](std::string_view literal) {
    std::string escaped;
    for (char c : literal) {
      escaped += c == '\n' ? std::string("\\n") : std::string(1, c);
    }
    return chat_template.find(literal) != std::string_view::npos ||
           chat_template.find(escaped) != std::string_view::npos;
  };
  if (holds("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>")) {
    return PromptFamily::SmolLM2;
  }
  if (holds("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")) {
    return PromptFamily::Qwen2;
  }
  return std::nullopt;
}

std::string render_reference_prompt(PromptFamily family, std::span<const ChatMessage> messages,
                                    bool add_generation_prompt) {
  switch (family) {
    case PromptFamily::Llama32:
      return render_llama(messages, add_generation_prompt, /*stock_31=*/false);
    case PromptFamily::Llama31:
      return render_llama(messages, add_generation_prompt, /*stock_31=*/true);
    case PromptFamily::Qwen2:
      return render_chatml(messages, add_generation_prompt, "You are a helpful assistant.");
    case PromptFamily::SmolLM2:
      return render_chatml(messages, add_generation_prompt,
                           "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    case PromptFamily::Phi4Mini:
      return render_phi4mini(messages, add_generation_prompt);
    case PromptFamily::ChatMl:
      return render_chatml(messages, add_generation_prompt, nullptr);
  }
  throw Error(ErrorCode::InvalidArgument, "invalid PromptFamily value");
}

std::optional<PromptFamily> resolve_prompt_family(const std::string& name,
                                                  const std::string& chat_template,
                                                  const Model& model) {
  if (!name.empty()) {
    return parse_prompt_family(name);
  }
  if (!chat_template.empty()) {
    return std::nullopt;
  }
  return detect_prompt_family(model.chat_template());
}

std::string render_user_turn(const Model& model, const std::string& user, const std::string& system,
                             const std::string& prompt_family, const std::string& chat_template) {
  std::vector<ChatMessage> messages;
  if (!system.empty()) {
    messages.push_back({"system", system});
  }
  messages.push_back({"user", user});
  return render_conversation(model, messages, prompt_family, chat_template);
}

std::string render_conversation(const Model& model, std::span<const ChatMessage> messages,
                                const std::string& prompt_family,
                                const std::string& chat_template) {
  const auto family = resolve_prompt_family(prompt_family, chat_template, model);
  return family ? render_reference_prompt(*family, messages, true)
                : model.apply_chat_template(messages, true, chat_template);
}

}  // namespace kvsteer::eval
