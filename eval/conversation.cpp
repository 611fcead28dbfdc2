#include "eval/conversation.h"

#include "kvsteer/error.h"

namespace kvsteer::eval {
namespace {

ChatMessage message(const nlohmann::json& m, const std::string& at) {
  const auto refuse = [&at](const std::string& what) {
    throw Error(ErrorCode::Format, at + " " + what);
  };
  if (!m.is_object()) {
    refuse("is not an object {\"role\", \"content\"}");
  }
  if (!m.contains("role") || !m["role"].is_string()) {
    refuse("has no string 'role'");
  }
  const auto role = m["role"].get<std::string>();
  if (!is_conversation_role(role)) {
    refuse("has role '" + role + "'; roles are system, user and assistant");
  }
  if (!m.contains("content") || !m["content"].is_string()) {
    refuse("has no string 'content'");
  }
  return {role, m["content"].get<std::string>()};
}

}  // namespace

bool is_conversation_role(std::string_view role) noexcept {
  return role == "system" || role == "user" || role == "assistant";
}

std::vector<ChatMessage> conversation_from_json(const nlohmann::json& list,
                                                const std::string& where) {
  if (!list.is_array()) {
    throw Error(ErrorCode::Format, where + " is not a list of {\"role\", \"content\"} messages");
  }
  if (list.empty()) {
    throw Error(ErrorCode::Format, where + " is an empty message list");
  }
  std::vector<ChatMessage> out;
  out.reserve(list.size());
  for (const auto& m : list) {
    out.push_back(message(m, where + " message " + std::to_string(out.size() + 1)));
  }
  return out;
}

}  // namespace kvsteer::eval
