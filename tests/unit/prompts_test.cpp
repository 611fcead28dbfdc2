// Reference prompt renders, byte for byte against method.md §1.5 (zero-shot) and §1.2
// (contrastive prompts).
#include "eval/prompts.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "eval/contrastive.h"
#include "kvsteer/error.h"

namespace kvsteer::eval {
namespace {

const std::string kQ = "Which gas do plants take in?\n\nChoices:\nA: oxygen\nB: carbon dioxide";

std::string zero_shot(PromptFamily family, const std::string& q = kQ) {
  const std::vector<ChatMessage> messages = {{"user", q}};
  return render_reference_prompt(family, messages, true);
}

// Verbatim renders of method.md §1.5 with {q} substituted.
const std::string kLlama32Head =
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
    "December 2023\n\n<|eot_id|>";
const std::string kLlama31Head =
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
    "December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>";
const std::string kQwenSystem = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n";
const std::string kSmolSystem =
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n";

std::string llama_turn(const std::string& role, const std::string& content) {
  return "<|start_header_id|>" + role + "<|end_header_id|>\n\n" + content + "<|eot_id|>";
}
std::string chatml_turn(const std::string& role, const std::string& content) {
  return "<|im_start|>" + role + "\n" + content + "<|im_end|>\n";
}
const std::string kLlamaGen = "<|start_header_id|>assistant<|end_header_id|>\n\n";
const std::string kChatMlGen = "<|im_start|>assistant\n";

TEST(Prompts, ZeroShotLlama32) {
  EXPECT_EQ(
      zero_shot(PromptFamily::Llama32),
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
      "December 2023\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n" +
          kQ + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(Prompts, ZeroShotLlama31) {
  EXPECT_EQ(zero_shot(PromptFamily::Llama31), kLlama31Head + llama_turn("user", kQ) + kLlamaGen);
}

TEST(Prompts, ZeroShotQwen2) {
  EXPECT_EQ(zero_shot(PromptFamily::Qwen2),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + kQ +
                "<|im_end|>\n<|im_start|>assistant\n");
}

TEST(Prompts, ZeroShotSmolLM2) {
  EXPECT_EQ(zero_shot(PromptFamily::SmolLM2), kSmolSystem + chatml_turn("user", kQ) + kChatMlGen);
}

TEST(Prompts, ZeroShotPhi4Mini) {
  EXPECT_EQ(zero_shot(PromptFamily::Phi4Mini), "<|user|>" + kQ + "<|end|><|assistant|>");
}

TEST(Prompts, ZeroShotChatMl) {
  EXPECT_EQ(zero_shot(PromptFamily::ChatMl), chatml_turn("user", kQ) + kChatMlGen);
}

TEST(Prompts, LlamaTrimsContentChatMlAndPhiKeepIt) {
  const std::string padded = "  \n" + kQ + " \n";
  EXPECT_EQ(zero_shot(PromptFamily::Llama32, padded), zero_shot(PromptFamily::Llama32));
  EXPECT_EQ(zero_shot(PromptFamily::Llama31, padded), zero_shot(PromptFamily::Llama31));
  EXPECT_EQ(zero_shot(PromptFamily::Qwen2, padded),
            kQwenSystem + chatml_turn("user", padded) + kChatMlGen);
  EXPECT_EQ(zero_shot(PromptFamily::Phi4Mini, padded),
            "<|user|>" + padded + "<|end|><|assistant|>");
}

TEST(Prompts, ZeroShotCotSuffixFollowsGenerationPrompt) {
  EXPECT_EQ(zero_shot(PromptFamily::Llama32) + std::string(kCotPrefix),
            kLlama32Head + llama_turn("user", kQ) + kLlamaGen + "Let's think step by step.");
  EXPECT_EQ(
      zero_shot(PromptFamily::Qwen2) + std::string(kCotPrefix),
      kQwenSystem + chatml_turn("user", kQ) + "<|im_start|>assistant\nLet's think step by step.");
  EXPECT_EQ(zero_shot(PromptFamily::Phi4Mini) + std::string(kCotPrefix),
            "<|user|>" + kQ + "<|end|><|assistant|>Let's think step by step.");
}

// Two-shot contrastive prompts built by contrastive_messages (method.md §1.2).
struct TwoShot {
  std::vector<ChatMessage> positive;
  std::vector<ChatMessage> negative;
};

TwoShot two_shot() {
  const std::vector<TraceRow> rows = {
      {"r0", "Q0?", {"Step one.", "Step two."}, "A"},
      {"r1", "Q1?", {"Only step."}, "B"},
      {"r2", "Q2?", {"x"}, "C"},
  };
  const std::vector<std::size_t> neighbours = {0, 1};
  return {contrastive_messages(rows, neighbours, 2, true),
          contrastive_messages(rows, neighbours, 2, false)};
}

TEST(Prompts, TwoShotLlama) {
  const TwoShot ts = two_shot();
  for (PromptFamily family : {PromptFamily::Llama32, PromptFamily::Llama31}) {
    const std::string head = family == PromptFamily::Llama32 ? kLlama32Head : kLlama31Head;
    EXPECT_EQ(render_reference_prompt(family, ts.positive, true),
              head + llama_turn("user", "Q0?") +
                  llama_turn("assistant", "Step one. Step two. The answer is A.") +
                  llama_turn("user", "Q1?") +
                  llama_turn("assistant", "Only step. The answer is B.") +
                  llama_turn("user", "Q2?") + kLlamaGen);
    // The negative answer's leading space is trimmed away.
    EXPECT_EQ(render_reference_prompt(family, ts.negative, true),
              head + llama_turn("user", "Q0?") + llama_turn("assistant", "The answer is A.") +
                  llama_turn("user", "Q1?") + llama_turn("assistant", "The answer is B.") +
                  llama_turn("user", "Q2?") + kLlamaGen);
  }
}

TEST(Prompts, TwoShotChatMlFamilies) {
  const TwoShot ts = two_shot();
  const std::pair<PromptFamily, std::string> cases[] = {{PromptFamily::Qwen2, kQwenSystem},
                                                        {PromptFamily::SmolLM2, kSmolSystem},
                                                        {PromptFamily::ChatMl, ""}};
  for (const auto& [family, system] : cases) {
    EXPECT_EQ(render_reference_prompt(family, ts.positive, true),
              system + chatml_turn("user", "Q0?") +
                  chatml_turn("assistant", "Step one. Step two. The answer is A.") +
                  chatml_turn("user", "Q1?") +
                  chatml_turn("assistant", "Only step. The answer is B.") +
                  chatml_turn("user", "Q2?") + kChatMlGen);
    // ChatML keeps the leading space: "<|im_start|>assistant\n The answer is A.<|im_end|>".
    EXPECT_EQ(render_reference_prompt(family, ts.negative, true),
              system + chatml_turn("user", "Q0?") +
                  "<|im_start|>assistant\n The answer is A.<|im_end|>\n" +
                  chatml_turn("user", "Q1?") + chatml_turn("assistant", " The answer is B.") +
                  chatml_turn("user", "Q2?") + kChatMlGen);
  }
}

TEST(Prompts, TwoShotPhi4Mini) {
  const TwoShot ts = two_shot();
  EXPECT_EQ(render_reference_prompt(PromptFamily::Phi4Mini, ts.positive, true),
            "<|user|>Q0?<|end|><|assistant|>Step one. Step two. The answer is A.<|end|>"
            "<|user|>Q1?<|end|><|assistant|>Only step. The answer is B.<|end|>"
            "<|user|>Q2?<|end|><|assistant|>");
  EXPECT_EQ(render_reference_prompt(PromptFamily::Phi4Mini, ts.negative, true),
            "<|user|>Q0?<|end|><|assistant|> The answer is A.<|end|>"
            "<|user|>Q1?<|end|><|assistant|> The answer is B.<|end|>"
            "<|user|>Q2?<|end|><|assistant|>");
}

TEST(Prompts, TwoShotWithCotPrefix) {
  const TwoShot ts = two_shot();
  const std::string text =
      render_reference_prompt(PromptFamily::SmolLM2, ts.negative, true) + std::string(kCotPrefix);
  const std::string tail = "<|im_end|>\n<|im_start|>assistant\nLet's think step by step.";
  ASSERT_GE(text.size(), tail.size());
  EXPECT_EQ(text.substr(text.size() - tail.size()), tail);
}

TEST(Prompts, ExplicitSystemMessage) {
  const std::vector<ChatMessage> messages = {{"system", " Be brief. "}, {"user", "Hi"}};
  EXPECT_EQ(
      render_reference_prompt(PromptFamily::Llama32, messages, true),
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
      "December 2023\n\nBe brief.<|eot_id|>" +
          llama_turn("user", "Hi") + kLlamaGen);
  // Qwen2's default system is replaced, not added.
  EXPECT_EQ(render_reference_prompt(PromptFamily::Qwen2, messages, true),
            chatml_turn("system", " Be brief. ") + chatml_turn("user", "Hi") + kChatMlGen);
  EXPECT_EQ(render_reference_prompt(PromptFamily::Phi4Mini, messages, true),
            "<|system|> Be brief. <|end|><|user|>Hi<|end|><|assistant|>");
}

TEST(Prompts, WithoutGenerationPrompt) {
  const std::vector<ChatMessage> messages = {{"user", "Hi"}, {"assistant", "Hello"}};
  EXPECT_EQ(render_reference_prompt(PromptFamily::Llama31, messages, false),
            kLlama31Head + llama_turn("user", "Hi") + llama_turn("assistant", "Hello"));
  EXPECT_EQ(render_reference_prompt(PromptFamily::ChatMl, messages, false),
            chatml_turn("user", "Hi") + chatml_turn("assistant", "Hello"));
  // Phi-4-mini's template appends its eos token when there is no generation prompt.
  EXPECT_EQ(render_reference_prompt(PromptFamily::Phi4Mini, messages, false),
            "<|user|>Hi<|end|><|assistant|>Hello<|end|><|endoftext|>");
}

TEST(Prompts, NoMessages) {
  // The ChatML default system sits inside the message loop, so it needs a message.
  EXPECT_EQ(render_reference_prompt(PromptFamily::Qwen2, {}, true), kChatMlGen);
  EXPECT_EQ(render_reference_prompt(PromptFamily::Llama32, {}, true), kLlama32Head + kLlamaGen);
}

TEST(Prompts, ParseFamily) {
  for (const char* name : {"llama32", "llama31", "qwen2", "smollm2", "phi4mini", "chatml"}) {
    EXPECT_STREQ(prompt_family_name(parse_prompt_family(name)), name);
  }
  try {
    parse_prompt_family("llama3");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("llama3"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("phi4mini"), std::string::npos);
  }
}

}  // namespace
}  // namespace kvsteer::eval
