// The edit protocol that generate(), the batcher and the diagnosis share: which tokens are
// prefilled before the edit and which one is decoded after it.
#include <gtest/gtest.h>

#include <vector>

#include "kvsteer/error.h"
#include "steer/protocol.h"

namespace kvsteer::detail {
namespace {

std::vector<Token> span_tokens(std::span<const Token> s) { return {s.begin(), s.end()}; }

TEST(SteerProtocol, AnOffsetTokenFollowsTheWholePrompt) {
  const std::vector<Token> prompt{5, 6, 7};
  const ProtocolSplit s = split_prompt(prompt, Token{198}, true);
  EXPECT_EQ(span_tokens(s.prefill), prompt);
  EXPECT_EQ(s.tail, 198);
  // A one-token prompt can be steered: its only cell is edited, then the offset is decoded.
  const std::vector<Token> one{5};
  EXPECT_EQ(span_tokens(split_prompt(one, Token{198}, true).prefill), one);
}

TEST(SteerProtocol, WithoutAnOffsetTheLastPromptTokenFollowsTheEdit) {
  const std::vector<Token> prompt{5, 6, 7};
  const ProtocolSplit s = split_prompt(prompt, std::nullopt, true);
  EXPECT_EQ(span_tokens(s.prefill), (std::vector<Token>{5, 6}));
  EXPECT_EQ(s.tail, 7);
  // Unsteered, a one-token prompt is simply decoded; steered, there is no cell to edit.
  const std::vector<Token> one{5};
  EXPECT_TRUE(split_prompt(one, std::nullopt, false).prefill.empty());
  EXPECT_EQ(split_prompt(one, std::nullopt, false).tail, 5);
  EXPECT_THROW(split_prompt(one, std::nullopt, true), Error);
}

TEST(SteerProtocol, AnEmptyPromptIsRefused) {
  const std::vector<Token> none;
  for (const auto& offset : {std::optional<Token>{}, std::optional<Token>{198}}) {
    for (bool steered : {false, true}) {
      try {
        (void)split_prompt(none, offset, steered);
        FAIL() << "expected a refusal";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
        EXPECT_STREQ(e.what(), "the prompt is empty");
      }
    }
  }
}

}  // namespace
}  // namespace kvsteer::detail
