// Tokenization, chat templates and prompt construction on real vocabularies (Llama-3, Qwen2 and
// Phi-3 tokenizers from llama.cpp's models/ggml-vocab-*.gguf, in random-weight fixtures).
#include <gtest/gtest.h>

#include "eval/contrastive.h"
#include "kvsteer/steering.h"
#include "support/model_cases.h"
#include "support/test_env.h"

namespace kvsteer {
namespace {

const std::vector<ChatMessage> kShots = {
    {"user", "Q1?"}, {"assistant", " The answer is A."}, {"user", "Q2?"}};

TEST(RealVocab, Llama3TemplateTrimsAndTokenizerAddsBos) {
  auto m = test::shared_model("llama3vocab-f16.gguf");
  const std::string text = m->apply_chat_template(kShots, true);
  // Llama-3 trims message content: the negative answer loses its leading space (method.md §1.2).
  EXPECT_NE(text.find("<|end_header_id|>\n\nThe answer is A.<|eot_id|>"), std::string::npos)
      << text;
  const std::string tail = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
  EXPECT_EQ(text.substr(text.size() - tail.size()), tail);
  const auto eval_ids = m->tokenize(text, false);
  const auto extract_ids = m->tokenize(text, true);
  // Evaluation prompts get no BOS from the tokenizer; extraction prompts (reference: default
  // add_special_tokens) get one.
  EXPECT_EQ(extract_ids.size(), eval_ids.size() + 1);
  EXPECT_EQ(extract_ids.front(), 128000);  // <|begin_of_text|>
  EXPECT_EQ(eval_ids.front(), 128006);     // <|start_header_id|>, parsed as one special token
  EXPECT_EQ(eval_ids.back(), 271);         // "\n\n": the last prompt token the paper steers
  EXPECT_EQ(m->tokenize("\n", false, false), (std::vector<Token>{198}));  // the offset token
  EXPECT_TRUE(m->is_eog(128009));                                         // <|eot_id|>
}

TEST(RealVocab, ChatMlKeepsTheLeadingSpace) {
  auto m = test::shared_model("qwen2vocab-f16.gguf");
  const std::string text = m->apply_chat_template(kShots, true);
  EXPECT_NE(text.find("<|im_start|>assistant\n The answer is A.<|im_end|>"), std::string::npos)
      << text;
  const auto ids = m->tokenize(text, true);
  EXPECT_EQ(ids.front(), 151644);  // <|im_start|>: Qwen2 adds no BOS even with add_special
  EXPECT_EQ(ids.back(), 198);      // "\n" after "assistant"
  EXPECT_EQ(m->tokenize("\n", false, false), (std::vector<Token>{198}));
  EXPECT_TRUE(m->is_eog(151645));  // <|im_end|>
}

TEST(RealVocab, Phi3EndsWithTheAssistantToken) {
  auto m = test::shared_model("phi3vocab-f16.gguf");
  const std::string text = m->apply_chat_template(kShots, true);
  const auto ids = m->tokenize(text, false);
  EXPECT_EQ(ids.back(), 32001);  // <|assistant|>
  EXPECT_EQ(m->token_to_piece(ids.back()), "<|assistant|>");
  // SentencePiece puts a space piece before "\n": the first id of tokenize("\n") is "▁" (29871),
  // which is what the reference's "first id" rule picks for such tokenizers.
  EXPECT_EQ(m->tokenize("\n", false, false), (std::vector<Token>{29871, 13}));
}

TEST(RealVocab, ContrastivePromptsDifferOnlyInTheSteps) {
  auto m = test::shared_model("llama3vocab-f16.gguf");
  std::vector<eval::TraceRow> rows = {
      {"a", "What is 2 + 3?", {"2 + 3 = 5."}, "5"},
      {"b", "What is 7 - 4?", {"Start with 7.", "7 - 4 = 3."}, "3"},
      {"c", "What is 1 + 1?", {"1 + 1 = 2."}, "2"},
  };
  const auto neighbours = eval::lexical_neighbours(rows, 2);
  const auto pairs = eval::build_contrastive_pairs(*m, rows, neighbours, {});
  ASSERT_EQ(pairs.size(), 3u);
  for (const auto& p : pairs) {
    // Same target question and generation prompt at the end, same BOS at the start.
    EXPECT_EQ(p.positive.front(), p.negative.front());
    EXPECT_EQ(p.positive.back(), 271);
    EXPECT_EQ(p.negative.back(), 271);
    EXPECT_GT(p.positive.size(), p.negative.size());
    const std::string pos = m->detokenize(p.positive);
    const std::string neg = m->detokenize(p.negative);
    EXPECT_NE(pos.find("The answer is"), std::string::npos);
    EXPECT_EQ(pos.substr(pos.rfind("<|start_header_id|>user")),
              neg.substr(neg.rfind("<|start_header_id|>user")));
  }
  SessionParams sp;
  sp.n_ctx = 512;
  sp.n_threads = 1;
  sp.n_seq = 2;
  Session s(m, sp);
  const auto vec = extract_steering_vector(s, pairs);
  EXPECT_EQ(vec.k.size(), 2u);
  EXPECT_EQ(vec.model.vocab_hash, m->fingerprint().vocab_hash);
}

TEST(RealVocab, FingerprintsTellVocabulariesApart) {
  auto llama3 = test::shared_model("llama3vocab-f16.gguf");
  auto qwen2 = test::shared_model("qwen2vocab-f16.gguf");
  EXPECT_NE(llama3->fingerprint().vocab_hash, qwen2->fingerprint().vocab_hash);
  EXPECT_FALSE(llama3->fingerprint().mismatch(qwen2->fingerprint()).empty());
}

}  // namespace
}  // namespace kvsteer

namespace kvsteer {
namespace {

// A vocabulary-only load (no layers) must not reach llama.cpp's per-layer head counts, which
// abort for a model without layers.
TEST(RealVocab, VocabularyOnlyFilesLoadAndTokenize) {
  ModelParams params;
  params.vocab_only = true;
  const auto m = load_model(test::llama_source_dir() + "/models/ggml-vocab-llama-bpe.gguf", params);
  EXPECT_TRUE(m->vocab_only());
  EXPECT_EQ(m->fingerprint().n_layer, 0);
  EXPECT_EQ(m->fingerprint().n_head, 0);
  EXPECT_EQ(m->tokenize("\n", false, false), (std::vector<Token>{198}));
}

}  // namespace
}  // namespace kvsteer
