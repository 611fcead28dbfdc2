// A conversation written as JSON, as `kvsteer generate --messages` files and the message sides of
// a pairs file hold it: a non-empty array of {"role": "system"|"user"|"assistant", "content":
// string}. Tool roles and content parts are not read (the reference templates render neither).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "kvsteer/types.h"

namespace kvsteer::eval {

// The roles a conversation may hold: system, user and assistant.
bool is_conversation_role(std::string_view role) noexcept;

// Throws Error(Format), its message beginning with `where` (for example "messages file 'c.json'"),
// for anything but such an array: naming the message (1-based) and what is wrong with it.
std::vector<ChatMessage> conversation_from_json(const nlohmann::json& list,
                                                const std::string& where);

}  // namespace kvsteer::eval
