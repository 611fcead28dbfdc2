// The one BOS rule (Model::tokenize_prompt) on every model family the project meets: the
// organism (SPM vocabulary that asks for BOS, ChatML template without it), SmolLM2-135M-Instruct
// (BPE, asks for none, its BOS id is <|im_start|>), and the real Llama-3, Qwen2 and Phi-3
// vocabularies. The extraction prompt of a question (eval::build_contrastive_pairs) and the
// prompt the CLI steers for it (kv-dump, generate) must begin with the same token, and that token
// is BOS exactly when the vocabulary asks for one.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "eval/contrastive.h"
#include "eval/prompts.h"
#include "support/model_cases.h"
#include "support/run_command.h"
#include "support/test_env.h"

namespace kvsteer {
namespace {

struct BosCase {
  std::string name;
  bool expect_bos;          // the first prompt token is the vocabulary's BOS
  Token first_of_template;  // the first token of the rendered template when no BOS is added
};

void PrintTo(const BosCase& c, std::ostream* os) { *os << c.name; }

// Cases are listed at registration time; paths are resolved when a test runs.
std::vector<BosCase> bos_cases() {
  return {
      {"organism", true, -1}, {"smollm2", false, 1},     // <|im_start|> (also its BOS id)
      {"llama3", true, -1},   {"qwen2", false, 151644},  // <|im_start|>
      {"phi3", true, -1},
  };
}

std::string path_of(const std::string& name) {
  if (name == "organism") return test::organism_model_path();
  if (name == "smollm2") return test::smollm2_model_path();
  return test::model_path(name + "vocab-f16.gguf");
}

class PromptBos : public ::testing::TestWithParam<BosCase> {};

TEST_P(PromptBos, ExtractionAndSteeredPromptsBeginAlike) {
  const BosCase& c = GetParam();
  const std::string path = path_of(c.name);
  const auto model = load_model(path);
  const std::vector<eval::TraceRow> rows = {
      {"a", "What is 2 + 3?", {"2 + 3 = 5."}, "5"},
      {"b", "What is 7 - 4?", {"Start with 7.", "7 - 4 = 3."}, "3"},
      {"c", "What is 1 + 1?", {"1 + 1 = 2."}, "2"},
  };
  // Rendered as the commands do by default: the detected reference family, else the model's
  // template as llama.cpp renders it.
  eval::ContrastiveOptions options;
  options.family = eval::detect_prompt_family(model->chat_template());
  const auto pairs =
      eval::build_contrastive_pairs(*model, rows, eval::lexical_neighbours(rows, 1), options);
  const std::vector<ChatMessage> question = {{"user", rows[0].question}};
  const std::vector<Token> steered = model->tokenize_prompt(
      options.family ? eval::render_reference_prompt(*options.family, question, true)
                     : model->apply_chat_template(question, true));

  // What `kvsteer kv-dump` (and so generate) tokenizes for the same question.
  const auto r = test::run_command(
      {test::cli_path(), "kv-dump", "-m", path, "-t", "1", "-c", "512", "-p", rows[0].question});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto dumped = nlohmann::json::parse(r.out)["prompt_tokens"].get<std::vector<Token>>();
  EXPECT_EQ(dumped, steered);

  const Token first = steered.front();
  if (c.expect_bos) {
    ASSERT_TRUE(model->bos().has_value());
    EXPECT_EQ(first, *model->bos());
    EXPECT_NE(steered.at(1), *model->bos()) << "BOS doubled";
  } else {
    EXPECT_FALSE(model->adds_bos());
    EXPECT_EQ(first, c.first_of_template);
  }
  for (const auto& p : pairs) {
    EXPECT_EQ(p.positive.front(), first);
    EXPECT_EQ(p.negative.front(), first);
    EXPECT_EQ(p.positive.back(), steered.back());
    EXPECT_EQ(p.negative.back(), steered.back());
  }
}

// A template that renders BOS itself (the reference's Llama-3.2 text) gets no second one, and a
// raw prompt on a vocabulary that asks for BOS gets exactly one.
TEST(PromptBosRule, TextThatBeginsWithBosKeepsOne) {
  const auto model = load_model(test::model_path("llama3vocab-f16.gguf"));
  const std::vector<ChatMessage> messages = {{"user", "Hi?"}};
  const std::string reference =
      eval::render_reference_prompt(eval::PromptFamily::Llama32, messages, true);
  ASSERT_EQ(reference.rfind("<|begin_of_text|>", 0), 0u);
  const auto ids = model->tokenize_prompt(reference);
  EXPECT_EQ(ids.at(0), 128000);
  EXPECT_NE(ids.at(1), 128000);
  // The model's own template (llama.cpp's llama3 rendering) omits the BOS text: the rule adds it,
  // so both renders begin the same way.
  EXPECT_EQ(model->tokenize_prompt(model->apply_chat_template(messages, true)).at(0), 128000);
  const auto raw = model->tokenize_prompt("plain text");
  EXPECT_EQ(raw.at(0), 128000);
  EXPECT_NE(raw.at(1), 128000);
  EXPECT_NE(raw.back(), 128001);  // no EOS either
}

INSTANTIATE_TEST_SUITE_P(Models, PromptBos, ::testing::ValuesIn(bos_cases()),
                         [](const auto& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace kvsteer

namespace kvsteer {
namespace {

// SmolLM2's GGUF template is its stock Hugging Face one, whose default system message llama.cpp's
// built-in ChatML drops: the commands detect it and render the reference's text.
TEST(PromptFamilyDetection, SmolLm2GetsItsDefaultSystemMessage) {
  const auto model = load_model(test::smollm2_model_path(), {.vocab_only = true});
  ASSERT_EQ(eval::detect_prompt_family(model->chat_template()), eval::PromptFamily::SmolLM2);
  const auto r = test::run_command({test::cli_path(), "kv-dump", "-m", test::smollm2_model_path(),
                                    "-t", "1", "-c", "256", "-p", "Hi?"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto ids = nlohmann::json::parse(r.out)["prompt_tokens"].get<std::vector<Token>>();
  const std::string text = model->detokenize(ids);
  EXPECT_EQ(text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n");
  // An explicit template override is rendered as given.
  const auto plain =
      test::run_command({test::cli_path(), "kv-dump", "-m", test::smollm2_model_path(), "-t", "1",
                         "-c", "256", "-p", "Hi?", "--chat-template", "chatml"});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_LT(nlohmann::json::parse(plain.out)["prompt_tokens"].size(), ids.size());
}

TEST(PromptFamilyDetection, OtherTemplatesAreLeftToLlamaCpp) {
  EXPECT_EQ(eval::detect_prompt_family(""), std::nullopt);
  EXPECT_EQ(eval::detect_prompt_family("{{ '<|im_start|>' + message['role'] }}"), std::nullopt);
  EXPECT_EQ(eval::detect_prompt_family(
                R"({{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }})"),
            eval::PromptFamily::Qwen2);
  const auto organism = load_model(test::organism_model_path(), {.vocab_only = true});
  EXPECT_EQ(eval::detect_prompt_family(organism->chat_template()), std::nullopt);
}

}  // namespace
}  // namespace kvsteer
