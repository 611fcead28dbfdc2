// Tokenization and chat templates of Model.
#include <algorithm>
#include <climits>
#include <string>
#include <vector>

#include "kvsteer/error.h"
#include "llama/model_impl.h"

namespace kvsteer {

std::vector<Token> Model::tokenize(std::string_view text, bool add_special,
                                   bool parse_special) const {
  if (text.size() > static_cast<std::size_t>(INT32_MAX / 2)) {
    throw Error(ErrorCode::InvalidArgument,
                "text of " + std::to_string(text.size()) + " bytes is too long to tokenize");
  }
  const auto len = static_cast<std::int32_t>(text.size());
  std::vector<Token> tokens(static_cast<std::size_t>(len) + 2);
  std::int32_t n =
      llama_tokenize(impl_->vocab, text.data(), len, tokens.data(),
                     static_cast<std::int32_t>(tokens.size()), add_special, parse_special);
  if (n < 0) {
    tokens.resize(static_cast<std::size_t>(-n));
    n = llama_tokenize(impl_->vocab, text.data(), len, tokens.data(),
                       static_cast<std::int32_t>(tokens.size()), add_special, parse_special);
  }
  if (n < 0) {
    detail::throw_backend("tokenization failed");
  }
  tokens.resize(static_cast<std::size_t>(n));
  return tokens;
}

std::vector<Token> Model::tokenize_prompt(std::string_view text) const {
  std::vector<Token> tokens = tokenize(text, false, true);
  const std::optional<Token> first = bos();
  if (adds_bos() && first && (tokens.empty() || tokens.front() != *first)) {
    tokens.insert(tokens.begin(), *first);
  }
  return tokens;
}

void Model::check_token(Token token) const {
  if (token < 0 || token >= fingerprint().n_vocab) {
    throw Error(ErrorCode::InvalidArgument, "token id " + std::to_string(token) +
                                                " is outside the vocabulary [0, " +
                                                std::to_string(fingerprint().n_vocab) + ")");
  }
}

std::string Model::token_to_piece(Token token, bool render_special) const {
  check_token(token);
  std::string piece(16, '\0');
  std::int32_t n = llama_token_to_piece(impl_->vocab, token, piece.data(),
                                        static_cast<std::int32_t>(piece.size()), 0, render_special);
  if (n < 0) {
    piece.resize(static_cast<std::size_t>(-n));
    n = llama_token_to_piece(impl_->vocab, token, piece.data(),
                             static_cast<std::int32_t>(piece.size()), 0, render_special);
  }
  piece.resize(static_cast<std::size_t>(std::max(n, 0)));
  return piece;
}

std::string Model::detokenize(std::span<const Token> tokens, bool render_special) const {
  for (Token t : tokens) {
    check_token(t);
  }
  std::string text(tokens.size() * 8 + 16, '\0');
  auto run = [&] {
    return llama_detokenize(impl_->vocab, tokens.data(), static_cast<std::int32_t>(tokens.size()),
                            text.data(), static_cast<std::int32_t>(text.size()), false,
                            render_special);
  };
  std::int32_t n = run();
  if (n < 0) {
    text.resize(static_cast<std::size_t>(-n));
    n = run();
  }
  text.resize(static_cast<std::size_t>(std::max(n, 0)));
  return text;
}

bool Model::is_eog(Token token) const { return llama_vocab_is_eog(impl_->vocab, token); }

std::optional<Token> Model::bos() const {
  const Token t = llama_vocab_bos(impl_->vocab);
  if (t < 0) {
    return std::nullopt;
  }
  return t;
}

bool Model::adds_bos() const { return llama_vocab_get_add_bos(impl_->vocab); }

std::string Model::chat_template() const {
  const char* tmpl = llama_model_chat_template(impl_->model.get(), nullptr);
  return tmpl == nullptr ? std::string() : std::string(tmpl);
}

std::string Model::apply_chat_template(std::span<const ChatMessage> messages,
                                       bool add_generation_prompt,
                                       const std::string& template_override) const {
  const std::string tmpl = template_override.empty() ? chat_template() : template_override;
  if (tmpl.empty()) {
    throw Error(ErrorCode::InvalidArgument,
                "model '" + impl_->path +
                    "' has no chat template; pass one (e.g. --chat-template "
                    "chatml) or use a raw prompt");
  }
  std::vector<llama_chat_message> chat;
  std::size_t total = 0;
  for (const auto& m : messages) {
    chat.push_back({m.role.c_str(), m.content.c_str()});
    total += m.role.size() + m.content.size();
  }
  std::string out(total * 2 + 256, '\0');
  auto run = [&] {
    return llama_chat_apply_template(tmpl.c_str(), chat.data(), chat.size(), add_generation_prompt,
                                     out.data(), static_cast<std::int32_t>(out.size()));
  };
  std::int32_t n = run();
  if (n > static_cast<std::int32_t>(out.size())) {
    out.resize(static_cast<std::size_t>(n));
    n = run();
  }
  if (n < 0) {
    throw Error(ErrorCode::Unsupported,
                "chat template is not one libllama can render (it supports the built-in "
                "families: chatml, llama3, phi3, gemma, ...); template starts with '" +
                    tmpl.substr(0, 60) + "'");
  }
  out.resize(static_cast<std::size_t>(n));
  return out;
}

}  // namespace kvsteer
