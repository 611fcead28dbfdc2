#include "openai.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <string_view>
#include <utility>

namespace kvsteer::server {

using nlohmann::json;

ApiError::ApiError(int status, const std::string& message, std::string type, std::string param)
    : std::runtime_error(message),
      status_(status),
      type_(std::move(type)),
      param_(std::move(param)) {}

json ApiError::body() const {
  return {{"error",
           {{"message", what()},
            {"type", type_},
            {"param", param_.empty() ? json(nullptr) : json(param_)},
            {"code", nullptr}}}};
}

namespace {

ApiError bad(const std::string& param, const std::string& message) {
  return ApiError(400, message, "invalid_request_error", param);
}

// A finite number within [lo, hi], or the default when the field is absent or null.
double number(const json& body, const char* key, double fallback, double lo, double hi) {
  const auto it = body.find(key);
  if (it == body.end() || it->is_null()) {
    return fallback;
  }
  if (!it->is_number()) {
    throw bad(key, std::string("'") + key + "' must be a number");
  }
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi) {
    throw bad(key, std::string("'") + key + "' must be between " + json(lo).dump() + " and " +
                       json(hi).dump() + ", got " + it->dump());
  }
  return v;
}

// number() restricted to integers.
std::int64_t integer(const json& body, const char* key, std::int64_t fallback, std::int64_t lo,
                     std::int64_t hi) {
  const auto it = body.find(key);
  if (it != body.end() && !it->is_null() && !it->is_number_integer()) {
    throw bad(key, std::string("'") + key + "' must be an integer");
  }
  return static_cast<std::int64_t>(number(body, key, static_cast<double>(fallback),
                                          static_cast<double>(lo), static_cast<double>(hi)));
}

// Text that JSON can carry: a token may end inside a UTF-8 character, and a model may produce
// bytes that are no UTF-8 at all (byte-fallback tokens); invalid bytes become U+FFFD, as
// llama-server does (the raw bytes of a logprob token travel in "bytes").
std::string displayable(const std::string& text) {
  return json::parse(json(text).dump(-1, ' ', false, json::error_handler_t::replace))
      .get<std::string>();
}

json bytes_of(const std::string& text) {
  json out = json::array();
  for (const char c : text) {
    out.push_back(static_cast<int>(static_cast<unsigned char>(c)));
  }
  return out;
}

std::string text_field(const json& j, const char* key, const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_string()) {
    throw bad(where, "'" + where + "' must be a string");
  }
  return it->get<std::string>();
}

// Message content: a string, or OpenAI's array of {"type": "text", "text": ...} parts.
std::string content_text(const json& content, const std::string& where) {
  if (content.is_string()) {
    return content.get<std::string>();
  }
  if (content.is_array()) {
    std::string text;
    for (const auto& part : content) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
          !part["text"].is_string()) {
        throw bad(where, "'" + where + "' parts must be {\"type\": \"text\", \"text\": ...}");
      }
      text += part["text"].get<std::string>();
    }
    return text;
  }
  throw bad(where, "'" + where + "' must be a string or an array of text parts");
}

std::optional<SteeringSpec> parse_steering(const json& body, const Limits& limits) {
  const auto it = body.find("steering");
  if (it == body.end() || it->is_null()) {
    return std::nullopt;
  }
  if (!it->is_object()) {
    throw bad("steering", "'steering' must be an object");
  }
  const json& s = *it;
  // kvsteer's own object, unlike the body around it: a misspelt key ("cv") would steer with the
  // default silently, so every key must be one of these.
  static constexpr std::array<std::string_view, 7> kKeys = {
      "vector", "c_k", "c_v", "layers", "layers_k", "layers_v", "offset"};
  for (const auto& [key, value] : s.items()) {
    if (std::find(kKeys.begin(), kKeys.end(), key) == kKeys.end()) {
      throw bad("steering." + key,
                "'steering." + key +
                    "' is not a steering setting (vector, c_k, c_v, layers, layers_k, layers_v, "
                    "offset)");
    }
  }
  SteeringSpec spec;
  spec.vector = text_field(s, "vector", "steering.vector");
  const double m = limits.max_abs_coef;
  spec.c_k = static_cast<float>(number(s, "c_k", 0.0, -m, m));
  spec.c_v = static_cast<float>(number(s, "c_v", 1.0, -m, m));
  for (auto [key, field] :
       {std::pair{"layers", &spec.layers}, std::pair{"layers_k", &spec.layers_k},
        std::pair{"layers_v", &spec.layers_v}}) {
    if (s.contains(key) && !s[key].is_null()) {
      *field = text_field(s, key, std::string("steering.") + key);
    }
  }
  if (s.contains("offset")) {
    if (s["offset"].is_null()) {
      spec.offset.reset();
    } else {
      spec.offset = text_field(s, "offset", "steering.offset");
    }
  }
  return spec;
}

}  // namespace

ParsedRequest parse_request(const std::string& body_text, bool chat, const Limits& limits) {
  json body;
  try {
    body = json::parse(body_text);
  } catch (const json::parse_error& e) {
    throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) {
    throw ApiError(400, "the request body must be a JSON object");
  }
  ParsedRequest r;
  r.chat = chat;
  if (chat) {
    const auto it = body.find("messages");
    if (it == body.end() || !it->is_array() || it->empty()) {
      throw bad("messages", "'messages' must be a non-empty array");
    }
    for (std::size_t i = 0; i < it->size(); ++i) {
      const json& m = (*it)[i];
      const std::string where = "messages[" + std::to_string(i) + "]";
      if (!m.is_object()) {
        throw bad(where, "'" + where + "' must be an object");
      }
      const std::string role = text_field(m, "role", where + ".role");
      if (role != "system" && role != "user" && role != "assistant" && role != "developer") {
        throw bad(where + ".role", "unsupported role '" + role + "'");
      }
      if (!m.contains("content")) {
        throw bad(where + ".content", "'" + where + ".content' is required");
      }
      r.messages.push_back(
          {role == "developer" ? "system" : role, content_text(m["content"], where + ".content")});
    }
  } else {
    const auto it = body.find("prompt");
    if (it == body.end() || !it->is_string()) {
      throw bad("prompt", "'prompt' must be a string (token arrays and batches are not served)");
    }
    r.prompt = it->get<std::string>();
    if (r.prompt.empty()) {
      throw bad("prompt", "'prompt' is empty");
    }
  }
  const char* tokens_key =
      chat && body.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  r.max_tokens = static_cast<std::int32_t>(
      number(body, tokens_key, limits.default_max_tokens, 1, limits.max_tokens));
  if (body.contains(tokens_key) && body[tokens_key].is_number_float()) {
    throw bad(tokens_key, std::string("'") + tokens_key + "' must be an integer");
  }
  r.sampling.temperature = static_cast<float>(number(body, "temperature", 1.0, 0.0, 2.0));
  r.sampling.top_p = static_cast<float>(number(body, "top_p", 1.0, 0.0, 1.0));
  if (body.contains("seed") && !body["seed"].is_null()) {
    if (!body["seed"].is_number_integer()) {
      throw bad("seed", "'seed' must be an integer");
    }
    r.sampling.seed = static_cast<std::uint32_t>(body["seed"].get<std::int64_t>());
  }
  if (number(body, "n", 1, 1, 1) != 1) {
    throw bad("n", "only n = 1 is served");
  }
  if (chat) {
    const bool wanted = body.contains("logprobs") && !body["logprobs"].is_null();
    if (wanted && !body["logprobs"].is_boolean()) {
      throw bad("logprobs", "'logprobs' must be a boolean");
    }
    const bool on = wanted && body["logprobs"].get<bool>();
    const bool top = body.contains("top_logprobs") && !body["top_logprobs"].is_null();
    if (top && !on) {
      throw bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    }
    if (on) {
      r.logprobs = static_cast<std::int32_t>(integer(body, "top_logprobs", 0, 0, 20));
    }
  } else if (body.contains("logprobs") && !body["logprobs"].is_null()) {
    r.logprobs = static_cast<std::int32_t>(integer(body, "logprobs", 0, 0, 5));
  }
  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& stop = body["stop"];
    if (stop.is_string()) {
      r.stop.push_back(stop.get<std::string>());
    } else if (stop.is_array()) {
      for (const auto& s : stop) {
        if (!s.is_string()) {
          throw bad("stop", "'stop' must be a string or an array of strings");
        }
        r.stop.push_back(s.get<std::string>());
      }
    } else {
      throw bad("stop", "'stop' must be a string or an array of strings");
    }
    if (r.stop.size() > limits.max_stop) {
      throw bad("stop", "at most " + std::to_string(limits.max_stop) + " stop sequences");
    }
    for (const auto& s : r.stop) {
      if (s.empty()) {
        throw bad("stop", "stop sequences must not be empty");
      }
    }
  }
  if (body.contains("stream") && !body["stream"].is_null()) {
    if (!body["stream"].is_boolean()) {
      throw bad("stream", "'stream' must be a boolean");
    }
    r.stream = body["stream"].get<bool>();
  }
  if (body.contains("ignore_eos") && !body["ignore_eos"].is_null()) {
    if (!body["ignore_eos"].is_boolean()) {
      throw bad("ignore_eos", "'ignore_eos' must be a boolean");
    }
    r.ignore_eos = body["ignore_eos"].get<bool>();
  }
  r.steering = parse_steering(body, limits);
  return r;
}

const char* finish_reason(StopReason reason) noexcept {
  return reason == StopReason::Length ? "length" : "stop";
}

json logprobs_json(bool chat, const std::vector<LogprobEntry>& entries) {
  if (chat) {
    json content = json::array();
    for (const LogprobEntry& e : entries) {
      json top = json::array();
      for (const auto& [token, logprob] : e.top) {
        top.push_back(
            {{"token", displayable(token)}, {"logprob", logprob}, {"bytes", bytes_of(token)}});
      }
      content.push_back({{"token", displayable(e.token)},
                         {"logprob", e.logprob},
                         {"bytes", bytes_of(e.token)},
                         {"top_logprobs", top}});
    }
    return {{"content", content}, {"refusal", nullptr}};
  }
  json tokens = json::array();
  json token_logprobs = json::array();
  json top_logprobs = json::array();
  json text_offset = json::array();
  for (const LogprobEntry& e : entries) {
    tokens.push_back(displayable(e.token));
    token_logprobs.push_back(e.logprob);
    json top = json::object();
    for (const auto& [token, logprob] : e.top) {
      top[displayable(token)] = logprob;  // alternatives with the same text show once
    }
    top_logprobs.push_back(top);
    text_offset.push_back(e.text_offset);
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top_logprobs},
          {"text_offset", text_offset}};
}

json completion_response(bool chat, const std::string& id, std::int64_t created,
                         const std::string& model, const std::string& text, StopReason reason,
                         const Usage& usage, const std::vector<LogprobEntry>* logprobs) {
  json choice = {{"index", 0}, {"finish_reason", finish_reason(reason)}};
  if (chat) {
    choice["message"] = {{"role", "assistant"}, {"content", displayable(text)}};
  } else {
    choice["text"] = displayable(text);
  }
  choice["logprobs"] = logprobs ? logprobs_json(chat, *logprobs) : json(nullptr);
  return {{"id", id},
          {"object", chat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})},
          {"usage",
           {{"prompt_tokens", usage.prompt_tokens},
            {"completion_tokens", usage.completion_tokens},
            {"total_tokens", usage.prompt_tokens + usage.completion_tokens}}}};
}

json stream_chunk(bool chat, const std::string& id, std::int64_t created, const std::string& model,
                  const std::string& piece, std::optional<StopReason> finish, bool first,
                  const std::vector<LogprobEntry>* logprobs) {
  json choice = {{"index", 0},
                 {"finish_reason", finish ? json(finish_reason(*finish)) : json(nullptr)}};
  if (chat) {
    json delta = json::object();
    if (first) {
      delta["role"] = "assistant";
    }
    if (!piece.empty() || !finish) {
      delta["content"] = displayable(piece);
    }
    choice["delta"] = delta;
  } else {
    choice["text"] = displayable(piece);
  }
  choice["logprobs"] = logprobs ? logprobs_json(chat, *logprobs) : json(nullptr);
  return {{"id", id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})}};
}

bool keys_equal(const std::string& presented, const std::string& expected) noexcept {
  // Every byte of the longer string is visited whatever the contents, so the time taken does
  // not tell an attacker how much of a guess was right.
  const std::size_t n = std::max(presented.size(), expected.size());
  unsigned diff = presented.size() == expected.size() ? 0U : 1U;
  for (std::size_t i = 0; i < n; ++i) {
    const auto a = static_cast<unsigned char>(i < presented.size() ? presented[i] : 0);
    const auto b = static_cast<unsigned char>(i < expected.size() ? expected[i] : 0);
    diff |= static_cast<unsigned>(a ^ b);
  }
  return diff == 0U;
}

}  // namespace kvsteer::server
