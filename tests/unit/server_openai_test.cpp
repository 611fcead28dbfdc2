// The OpenAI request layer of `kvsteer serve`: what a body becomes, and every refusal's status,
// parameter and message.
#include <gtest/gtest.h>

#include "openai.h"

namespace kvsteer::server {
namespace {

using nlohmann::json;

ApiError refusal(const std::string& body, bool chat = true) {
  try {
    parse_request(body, chat, Limits{});
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "accepted: " << body;
  return ApiError(0, "");
}

TEST(ServerOpenAi, ChatRequestWithSteeringAndDefaults) {
  const ParsedRequest r = parse_request(R"({
    "model": "anything", "messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": [{"type": "text", "text": "Hi"},
                                                                   {"type": "text", "text": "!"}]}],
    "temperature": 0, "max_tokens": 32, "stop": ["\n\n"], "stream": true, "seed": 7,
    "user": "ignored", "frequency_penalty": 0,
    "steering": {"vector": "arc", "c_v": 6, "layers": "1-"}})",
                                        true, Limits{});
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[1].content, "Hi!");
  EXPECT_EQ(r.max_tokens, 32);
  EXPECT_EQ(r.sampling.temperature, 0.0f);
  EXPECT_EQ(r.sampling.seed, 7u);
  EXPECT_TRUE(r.stream);
  ASSERT_EQ(r.stop.size(), 1u);
  ASSERT_TRUE(r.steering.has_value());
  EXPECT_EQ(r.steering->vector, "arc");
  EXPECT_EQ(r.steering->c_v, 6.0f);
  EXPECT_EQ(r.steering->c_k, 0.0f);
  EXPECT_EQ(r.steering->offset, std::optional<std::string>("\n")) << "the paper's offset";

  const ParsedRequest plain = parse_request(R"({"prompt": "Once"})", false, Limits{});
  EXPECT_EQ(plain.prompt, "Once");
  EXPECT_EQ(plain.max_tokens, Limits{}.default_max_tokens);
  EXPECT_EQ(plain.sampling.temperature, 1.0f) << "OpenAI's default";
  EXPECT_FALSE(plain.steering.has_value());
  const ParsedRequest no_offset = parse_request(
      R"({"prompt": "Once", "steering": {"vector": "v", "offset": null}})", false, Limits{});
  EXPECT_FALSE(no_offset.steering->offset.has_value());
}

TEST(ServerOpenAi, EveryRefusalNamesItsParameter) {
  struct Case {
    const char* body;
    bool chat;
    const char* param;
  };
  const Case cases[] = {
      {R"({"messages": []})", true, "messages"},
      {R"({"messages": [{"role": "tool", "content": "x"}]})", true, "messages[0].role"},
      {R"({"messages": [{"role": "user"}]})", true, "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": 3}]})", true, "messages[0].content"},
      {R"({"prompt": ["a", "b"]})", false, "prompt"},
      {R"({"prompt": ""})", false, "prompt"},
      {R"({"prompt": "x", "max_tokens": 0})", false, "max_tokens"},
      {R"({"prompt": "x", "max_tokens": 1000000})", false, "max_tokens"},
      {R"({"prompt": "x", "max_tokens": 2.5})", false, "max_tokens"},
      {R"({"prompt": "x", "temperature": "hot"})", false, "temperature"},
      {R"({"prompt": "x", "temperature": 3})", false, "temperature"},
      {R"({"prompt": "x", "n": 2})", false, "n"},
      {R"({"prompt": "x", "logprobs": 6})", false, "logprobs"},
      {R"({"prompt": "x", "logprobs": true})", false, "logprobs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logprobs": 2})", true, "logprobs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", true,
       "top_logprobs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true,
          "top_logprobs": 21})",
       true, "top_logprobs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true,
          "top_logprobs": 1.5})",
       true, "top_logprobs"},
      {R"({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]})", false, "stop"},
      {R"({"prompt": "x", "stop": [""]})", false, "stop"},
      {R"({"prompt": "x", "stop": 5})", false, "stop"},
      {R"({"prompt": "x", "stream": "yes"})", false, "stream"},
      {R"({"prompt": "x", "seed": 1.5})", false, "seed"},
      {R"({"prompt": "x", "ignore_eos": 1})", false, "ignore_eos"},
      {R"({"prompt": "x", "steering": "arc"})", false, "steering"},
      {R"({"prompt": "x", "steering": {"c_v": 1}})", false, "steering.vector"},
      {R"({"prompt": "x", "steering": {"vector": "v", "c_v": 1e9}})", false, "c_v"},
      {R"({"prompt": "x", "steering": {"vector": "v", "c_k": "1"}})", false, "c_k"},
      {R"({"prompt": "x", "steering": {"vector": "v", "layers": 3}})", false, "steering.layers"},
      {R"({"prompt": "x", "steering": {"vector": "v", "offset": 10}})", false, "steering.offset"},
      {R"({"prompt": "x", "steering": {"vector": "v", "cv": 6}})", false, "steering.cv"},
  };
  for (const Case& c : cases) {
    const ApiError e = refusal(c.body, c.chat);
    EXPECT_EQ(e.status(), 400) << c.body;
    EXPECT_EQ(e.param(), c.param) << c.body << ": " << e.what();
    EXPECT_EQ(e.body()["error"]["type"], "invalid_request_error");
  }
  // NaN and infinity cannot be written in JSON; the parser refuses the body as a whole.
  EXPECT_EQ(refusal(R"({"prompt": "x", "steering": {"vector": "v", "c_v": NaN}})", false).status(),
            400);
  EXPECT_EQ(refusal("{not json", false).status(), 400);
  EXPECT_EQ(refusal("[1, 2]", false).status(), 400);
}

TEST(ServerOpenAi, ResponsesHaveTheShapesClientsParse) {
  const json chat =
      completion_response(true, "chatcmpl-1", 100, "m", "Hello", StopReason::Eog, {5, 2});
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], "Hello");
  EXPECT_EQ(chat["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(chat["usage"]["total_tokens"], 7);
  const json text =
      completion_response(false, "cmpl-1", 100, "m", "Hi", StopReason::Length, {5, 9});
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "Hi");
  EXPECT_EQ(text["choices"][0]["finish_reason"], "length");

  const json first = stream_chunk(true, "c", 1, "m", "He", std::nullopt, true);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(first["choices"][0]["delta"]["content"], "He");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  const json last = stream_chunk(true, "c", 1, "m", "", StopReason::StopString, false);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(last["choices"][0]["delta"].empty());
}

TEST(ServerOpenAi, TextThatIsNotUtf8BecomesReplacementCharacters) {
  // Byte-fallback tokens can produce bytes that are no UTF-8; the response must still serialize
  // (a throw while a stream is written would end the server).
  const std::string bytes = "a\xff b\xe2\x82";
  const std::string replaced = "a\xef\xbf\xbd b\xef\xbf\xbd";
  const json chat = completion_response(true, "c", 1, "m", bytes, StopReason::Length, {1, 2});
  EXPECT_EQ(chat["choices"][0]["message"]["content"], replaced);
  EXPECT_NO_THROW((void)chat.dump());
  const json text = completion_response(false, "c", 1, "m", bytes, StopReason::Length, {1, 2});
  EXPECT_EQ(text["choices"][0]["text"], replaced);
  const json delta = stream_chunk(true, "c", 1, "m", bytes, std::nullopt, false);
  EXPECT_EQ(delta["choices"][0]["delta"]["content"], replaced);
  const json piece = stream_chunk(false, "c", 1, "m", bytes, std::nullopt, false);
  EXPECT_EQ(piece["choices"][0]["text"], replaced);
  EXPECT_NO_THROW((void)piece.dump());
}

TEST(ServerOpenAi, LogprobsAreParsedPerEndpoint) {
  const Limits limits;
  EXPECT_EQ(parse_request(R"({"prompt": "x"})", false, limits).logprobs, -1);
  EXPECT_EQ(parse_request(R"({"prompt": "x", "logprobs": 0})", false, limits).logprobs, 0);
  EXPECT_EQ(parse_request(R"({"prompt": "x", "logprobs": 5})", false, limits).logprobs, 5);
  const std::string m = R"("messages": [{"role": "user", "content": "x"}])";
  EXPECT_EQ(parse_request("{" + m + "}", true, limits).logprobs, -1);
  EXPECT_EQ(parse_request("{" + m + R"(, "logprobs": false})", true, limits).logprobs, -1);
  EXPECT_EQ(parse_request("{" + m + R"(, "logprobs": true})", true, limits).logprobs, 0);
  EXPECT_EQ(
      parse_request("{" + m + R"(, "logprobs": true, "top_logprobs": 20})", true, limits).logprobs,
      20);
}

TEST(ServerOpenAi, LogprobsHaveTheShapesClientsParse) {
  // "\xC3" is the first byte of a two-byte character: a token may end inside one.
  const std::vector<LogprobEntry> entries{{"Hi", -0.25f, {{"Hi", -0.25f}, {"Hello", -1.5f}}, 0},
                                          {"\xC3", -2.0f, {{"\xC3", -2.0f}}, 2}};
  const json chat = completion_response(true, "c", 1, "m", "Hi\xC3\xA9", StopReason::Length, {3, 2},
                                        &entries)["choices"][0]["logprobs"];
  ASSERT_EQ(chat["content"].size(), 2u);
  EXPECT_EQ(chat["content"][0]["token"], "Hi");
  EXPECT_FLOAT_EQ(chat["content"][0]["logprob"].get<float>(), -0.25f);
  EXPECT_EQ(chat["content"][0]["bytes"], json::array({72, 105}));
  EXPECT_EQ(chat["content"][0]["top_logprobs"][1]["token"], "Hello");
  EXPECT_EQ(chat["content"][1]["token"], "\xEF\xBF\xBD") << "U+FFFD for the partial character";
  EXPECT_EQ(chat["content"][1]["bytes"], json::array({0xC3}));
  EXPECT_NO_THROW((void)chat.dump());

  const json text = completion_response(false, "c", 1, "m", "Hi\xC3\xA9", StopReason::Length,
                                        {3, 2}, &entries)["choices"][0]["logprobs"];
  EXPECT_EQ(text["tokens"], json::array({"Hi", "\xEF\xBF\xBD"}));
  EXPECT_EQ(text["text_offset"], json::array({0, 2}));
  EXPECT_FLOAT_EQ(text["top_logprobs"][0]["Hello"].get<float>(), -1.5f);
  EXPECT_FLOAT_EQ(text["token_logprobs"][1].get<float>(), -2.0f);

  const json none = completion_response(true, "c", 1, "m", "Hi", StopReason::Length, {3, 1});
  EXPECT_TRUE(none["choices"][0]["logprobs"].is_null());
  const json chunk = stream_chunk(true, "c", 1, "m", "Hi", std::nullopt, true, &entries);
  EXPECT_EQ(chunk["choices"][0]["logprobs"]["content"].size(), 2u);
}

TEST(ServerOpenAi, KeysCompareWholly) {
  EXPECT_TRUE(keys_equal("secret", "secret"));
  EXPECT_FALSE(keys_equal("secreT", "secret"));
  EXPECT_FALSE(keys_equal("secret-and-more", "secret"));
  EXPECT_FALSE(keys_equal("", "secret"));
  EXPECT_FALSE(keys_equal("secret", ""));
}

}  // namespace
}  // namespace kvsteer::server
