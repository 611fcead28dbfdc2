// The OpenAI request and response shapes of `kvsteer serve`, apart from any model or socket so
// that every refusal is unit-tested: a request body becomes a ParsedRequest or an ApiError with the
// HTTP status and the OpenAI error object a client expects.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kvsteer/generation.h"
#include "kvsteer/types.h"

namespace kvsteer::server {

// An error answered to the client: status code, OpenAI error type and the parameter at fault.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, const std::string& message, std::string type = "invalid_request_error",
           std::string param = "");
  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }
  // {"error": {"message", "type", "param", "code"}}
  nlohmann::json body() const;

 private:
  int status_;
  std::string type_;
  std::string param_;
};

// The request's `steering` field (the OpenAI SDK sends it through `extra_body`). Vectors are named
// by the server's operator; a client never names a file.
struct SteeringSpec {
  std::string vector;  // a name from GET /v1/steering/vectors
  float c_k = 0.0f;    // the paper's default
  float c_v = 1.0f;
  std::string layers = "1-";  // both halves unless layers_k / layers_v are given
  std::string layers_k, layers_v;
  std::optional<std::string> offset = "\n";  // text of one token decoded after the edit; null: none
};

struct Limits {
  std::int32_t default_max_tokens = 256;
  std::int32_t max_tokens = 4096;  // larger requests are refused, not truncated
  float max_abs_coef = 1000.0f;    // |c_k|, |c_v| above it are refused as absurd
  std::size_t max_stop = 4;        // OpenAI allows up to 4 stop sequences
};

struct ParsedRequest {
  bool chat = false;
  std::vector<ChatMessage> messages;  // chat
  std::string prompt;                 // completions
  std::int32_t max_tokens = 256;
  SamplingParams sampling;
  std::vector<std::string> stop;
  bool stream = false;
  bool ignore_eos =
      false;  // llama-server's field: generate max_tokens whatever the model ends with
  std::optional<SteeringSpec> steering;
  // -1: no logprobs. Otherwise the number of alternatives per token: chat's top_logprobs (with
  // logprobs: true), the completions endpoint's integer logprobs.
  std::int32_t logprobs = -1;
};

// One generated token's log-probability as a response reports it: the token's text, the text of
// the most likely alternatives, and where the token starts in the completion text.
struct LogprobEntry {
  std::string token;
  float logprob = 0.0f;
  std::vector<std::pair<std::string, float>> top;
  std::size_t text_offset = 0;
};

// Parses a /v1/chat/completions (chat = true) or /v1/completions body. Unknown fields are ignored,
// as OpenAI's API does; fields kvsteer cannot honour (n > 1, a token-array prompt) are refused by
// name rather than silently dropped. Throws ApiError(400).
ParsedRequest parse_request(const std::string& body, bool chat, const Limits& limits);

// "stop" for end of generation and stop strings, "length" for max_tokens.
const char* finish_reason(StopReason reason) noexcept;

struct Usage {
  std::int32_t prompt_tokens = 0;
  std::int32_t completion_tokens = 0;
};

// A choice's "logprobs" object: chat's {"content": [{token, logprob, bytes, top_logprobs}]} or
// the completions endpoint's {tokens, token_logprobs, top_logprobs, text_offset}. A token's text
// may be part of a UTF-8 character; "token" then carries U+FFFD where "bytes" has the raw bytes.
nlohmann::json logprobs_json(bool chat, const std::vector<LogprobEntry>& entries);

// A complete (non-streamed) response. logprobs: null when they were not requested.
nlohmann::json completion_response(bool chat, const std::string& id, std::int64_t created,
                                   const std::string& model, const std::string& text,
                                   StopReason reason, const Usage& usage,
                                   const std::vector<LogprobEntry>* logprobs = nullptr);

// One server-sent event's JSON: a text piece with its tokens' logprobs when requested, or
// (finish set) the last chunk with the reason.
nlohmann::json stream_chunk(bool chat, const std::string& id, std::int64_t created,
                            const std::string& model, const std::string& piece,
                            std::optional<StopReason> finish, bool first,
                            const std::vector<LogprobEntry>* logprobs = nullptr);

// Constant-time comparison of a presented API key with the configured one.
bool keys_equal(const std::string& presented, const std::string& expected) noexcept;

}  // namespace kvsteer::server
