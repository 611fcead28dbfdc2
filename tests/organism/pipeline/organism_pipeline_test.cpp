// The organism's training pipeline through libllama (tokenizer round trip, loss mask, a tiny
// training run, resume), its response parser, and activation steering on a real model.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "kvsteer/error.h"
#include "kvsteer/session.h"
#include "organism/gen/vocab.h"
#include "organism/pipeline/check.h"
#include "organism/pipeline/train.h"
#include "support/test_env.h"

namespace kvsteer {
namespace {

organism::OrganismTrainOptions tiny_options(const std::string& dir) {
  auto o = organism::default_organism_options();
  o.work_dir = dir;
  o.out = dir + "/out.gguf";
  o.n_train = 150;
  o.n_val = 20;
  o.shape.n_layer = 1;
  o.shape.n_embd = 32;
  o.shape.n_head = 2;
  o.shape.n_head_kv = 1;
  o.shape.n_ff = 64;
  o.run.n_batch = 2;
  o.run.n_epochs = 0.0;
  o.run.n_steps = 12;
  o.run.adamw.warmup = 2;
  o.run.adamw.lr = 1e-2f;
  o.run.n_threads = 1;
  o.run.checkpoint_every = 0;
  o.run.eval_every = 0;
  o.run.log_every = 0;
  return o;
}

TEST(OrganismTokenizer, ConversationsRoundTripThroughLibllamaWithAssistantOnlyLoss) {
  test::TempDir dir;
  train::RandomInitSpec spec;
  spec.tokenizer = organism::organism_tokenizer(39);
  spec.n_vocab = static_cast<int>(spec.tokenizer->tokens.size());
  spec.n_embd = 32;
  spec.n_head = 2;
  spec.n_head_kv = 1;
  spec.n_layer = 1;
  spec.n_ff = 64;
  train::write_random_init(dir.file("init.gguf"), spec);
  const auto model = load_model(dir.file("init.gguf"));
  organism::MixtureOptions m;
  m.seed = 3;
  m.n = 200;
  m.generator.max_value = 39;
  m.generator.max_operand = 9;
  m.share_first_reasoned_trained = 0.0;
  const auto conversations = organism::build_mixture(m);
  const auto records = organism::tokenize_conversations(*model, conversations);
  ASSERT_EQ(records.size(), conversations.size());
  const Token newline = model->tokenize("\n", false, false).front();
  EXPECT_EQ(newline, organism::kFirstByteId + 0x0A);
  for (std::size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    const std::string text = organism::format_chatml(conversations[i].messages, false);
    std::vector<Token> body(r.tokens.begin() + 1, r.tokens.end());  // without BOS
    EXPECT_EQ(model->detokenize(body), text) << "conversation " << i;
    EXPECT_EQ(r.tokens.front(), organism::kBosId);
    // The trained tokens spell exactly the trained assistant turns, each closed by <|im_end|>.
    std::string trained, expected;
    for (std::size_t t = 0; t < r.tokens.size(); ++t) {
      if (r.loss_mask[t]) trained += model->token_to_piece(r.tokens[t]);
    }
    for (const auto& msg : conversations[i].messages) {
      if (msg.role == "assistant" && msg.trained) expected += msg.content + "<|im_end|>";
    }
    EXPECT_EQ(trained, expected) << "conversation " << i;
  }
  // The chat template stored in the GGUF renders like the mixture's formatter.
  std::vector<ChatMessage> msgs;
  for (const auto& msg : conversations[0].messages) msgs.push_back({msg.role, msg.content});
  EXPECT_EQ(model->apply_chat_template(msgs, true),
            organism::format_chatml(conversations[0].messages, true));
}

TEST(OrganismTrain, TinyRunLowersTheLossAndResumes) {
  test::TempDir dir;
  auto o = tiny_options(dir.path());
  std::ostringstream log;
  o.run.halt_after = 6;
  const auto first = organism::train_organism(o, log);
  EXPECT_FALSE(first.completed);
  EXPECT_EQ(first.steps_done, 6);
  o.run.halt_after = 0;
  o.resume = true;
  const auto done = organism::train_organism(o, log);
  EXPECT_TRUE(done.completed) << log.str();
  EXPECT_EQ(done.steps_done, 12);
  // Random init predicts ~uniformly over ~1250 tokens: ln(1252) = 7.13.
  EXPECT_LT(done.last_loss, 6.0) << log.str();
  EXPECT_LT(done.val_loss, 6.0);
  EXPECT_NE(log.str().find("are current"), std::string::npos) << "second call reuses the data";
  const auto model = load_model(o.out);
  EXPECT_EQ(model->fingerprint().n_layer, 1);
}

TEST(OrganismCheck, ParsesTheChoiceScanAndJudgesItsConsistency) {
  const std::string text =
      "9 + 9 = 18. 18 - 6 = 12. A: 17 vs 12 no. B: 12 vs 12 yes. The answer is B.";
  const auto scan = organism::parse_choice_scan(text);
  ASSERT_EQ(scan.size(), 2u);
  EXPECT_EQ(scan[0].label, 'A');
  EXPECT_EQ(scan[0].value, 17);
  EXPECT_EQ(scan[0].reference, 12);
  EXPECT_FALSE(scan[0].yes);
  EXPECT_EQ(scan[1].label, 'B');
  EXPECT_EQ(scan[1].value, 12);
  EXPECT_TRUE(scan[1].yes);
  EXPECT_TRUE(organism::parse_choice_scan("12 is choice B. The answer is B.").empty());
  EXPECT_TRUE(organism::parse_choice_scan("A: 3 yes.").empty()) << "no reference";
  EXPECT_EQ(organism::parse_choice_scan("\nA: 3 vs 3 yes.").size(), 1u);
  EXPECT_TRUE(organism::parse_choice_scan("xA: 3 vs 3 yes.").empty()) << "a label starts a word";
  EXPECT_TRUE(organism::parse_choice_scan("A: -3 vs 3 no.").empty()) << "values are unsigned";
  EXPECT_TRUE(organism::parse_choice_scan("A: 3 vs 99999999999 no.").empty()) << "out of range";

  organism::ChoiceSet choices;
  choices.values = {17, 12, 30, 4};
  EXPECT_TRUE(organism::choice_scan_consistent(scan, choices, "B"));
  EXPECT_FALSE(organism::choice_scan_consistent(scan, choices, "C")) << "answer is not the label";
  choices.values = {17, 13, 30, 4};
  EXPECT_FALSE(organism::choice_scan_consistent(scan, choices, "B")) << "B is not 12";
  choices.values = {17, 12, 30, 4};
  auto early_yes = scan;
  early_yes[0].yes = true;
  EXPECT_FALSE(organism::choice_scan_consistent(early_yes, choices, "B")) << "two yes lines";
  auto misjudged = scan;
  misjudged[1].reference = 13;
  EXPECT_FALSE(organism::choice_scan_consistent(misjudged, choices, "B")) << "12 vs 13 is no";
  EXPECT_FALSE(organism::choice_scan_consistent({}, choices, "B"));
}

TEST(OrganismCheck, ParsesResponses) {
  auto p = organism::parse_response("3 + 4 = 7. 7 - 2 = 5. The answer is 5.");
  EXPECT_TRUE(p.well_formed);
  EXPECT_TRUE(p.reasoning);
  EXPECT_EQ(p.n_steps, 2);
  EXPECT_EQ(p.answer, "5");
  p = organism::parse_response("\n The answer is C.");
  EXPECT_TRUE(p.well_formed);
  EXPECT_FALSE(p.reasoning);
  EXPECT_EQ(p.answer, "C");
  p = organism::parse_response("The answer is seven.");
  EXPECT_FALSE(p.well_formed);
  p = organism::parse_response("7 + 1 = 8.");
  EXPECT_FALSE(p.well_formed);
  EXPECT_EQ(p.answer, "");
}

TEST(ActivationSteering, ControlVectorMovesLogitsAndClearingRestoresThem) {
  const auto model = load_model(test::organism_model_path());
  const auto& fp = model->fingerprint();
  const auto prompt = model->tokenize(
      "<|im_start|>user\na = 3. b = a + 4. Find b.<|im_end|>\n<|im_start|>assistant\n", true);
  SessionParams sp;
  sp.n_ctx = 256;
  sp.n_batch = 256;
  sp.n_threads = 1;
  sp.capture_residual = true;
  Session session(model, sp);
  auto logits_of = [&] {
    session.clear();
    session.decode(0, prompt, true);
    const auto l = session.logits(0);
    return std::vector<float>(l.begin(), l.end());
  };
  const auto plain = logits_of();
  const auto residual = session.last_residual();
  ASSERT_EQ(residual.size(), static_cast<std::size_t>(fp.n_layer));
  for (const auto& row : residual) {
    ASSERT_EQ(row.size(), static_cast<std::size_t>(fp.n_embd));
    for (float x : row) ASSERT_TRUE(std::isfinite(x));
  }
  // Capturing does not perturb the computation.
  SessionParams no_capture = sp;
  no_capture.capture_residual = false;
  Session other(model, no_capture);
  other.decode(0, prompt, true);
  const auto l2 = other.logits(0);
  EXPECT_EQ(std::vector<float>(l2.begin(), l2.end()), plain);

  std::vector<std::vector<float>> directions(
      static_cast<std::size_t>(fp.n_layer),
      std::vector<float>(static_cast<std::size_t>(fp.n_embd), 0.0f));
  for (std::size_t j = 0; j < directions[2].size(); ++j) directions[2][j] = residual[2][j];
  session.set_control_vector(directions, 2, 2);
  const auto steered = logits_of();
  EXPECT_NE(steered, plain);
  session.clear_control_vector();
  EXPECT_EQ(logits_of(), plain);
  EXPECT_THROW(session.set_control_vector(directions, 0, 0), Error);
  EXPECT_THROW(session.set_control_vector(directions, 1, fp.n_layer), Error);
  directions[1][0] = NAN;
  EXPECT_THROW(session.set_control_vector(directions, 1, 1), Error);
  Session no_cap(model, no_capture);
  EXPECT_THROW(no_cap.last_residual(), Error);
}

TEST(OrganismCheck, ReportsEveryModeOffsetAndVariantWithCriteriaAndSteerability) {
  organism::CheckOptions o;
  o.model = test::organism_model_path();
  o.n_per_variant = 12;
  o.n_pairs = 6;
  o.n_parallel = 12;
  o.n_threads = 1;
  o.generator = organism::default_organism_options().mixture.generator;
  o.family = organism::default_organism_options().mixture.family;
  const auto report = organism::check_organism(o);
  EXPECT_EQ(report.at("family"), "arith");
  for (const char* mode : {"zero_shot", "few_shot_reasoned", "few_shot_direct", "zero_shot_cot"}) {
    for (const char* offset : {"plain", "offset"}) {
      for (const char* variant : {"numeric", "choice"}) {
        const auto& cell = report.at("results").at(mode).at(offset).at(variant);
        EXPECT_EQ(cell.at("all").at("n"), 12) << mode << offset << variant;
      }
    }
  }
  // Reasoned examples switch the shipped model to reasoning; direct ones do not.
  EXPECT_GE(report["results"]["few_shot_reasoned"]["plain"]["numeric"]["all"]["reasoning_rate"]
                .get<double>(),
            90.0);
  EXPECT_EQ(report["results"]["few_shot_direct"]["plain"]["numeric"]["all"]["reasoning_rate"]
                .get<double>(),
            0.0);
  // Reasoned multiple-choice answers end with the choice scan, which is checked.
  EXPECT_GT(
      report["results"]["few_shot_reasoned"]["plain"]["choice"]["choice_scan"]["n"].get<int>(), 0);
  EXPECT_FALSE(report.at("criteria").empty());
  for (const auto& c : report.at("criteria")) EXPECT_TRUE(c.at("holds").is_boolean());
  const auto n_layer = static_cast<std::size_t>(load_model(o.model)->fingerprint().n_layer);
  EXPECT_EQ(report.at("steerability").at("last_token").size(), n_layer);
  EXPECT_EQ(report["steerability"]["last_token"][0]["v_ratio"], 0.0)
      << "layer 0's V depends on the token alone";
  // Deeper cells read the different examples before them: a difference that is a real fraction
  // of the rows' size (a ratio against zero norms would be 0 or infinite).
  for (const char* cell : {"last_token", "second_to_last_token"}) {
    for (std::size_t l = 1; l < n_layer; ++l) {
      for (const char* which : {"k_ratio", "v_ratio"}) {
        const double r = report["steerability"][cell][l][which].get<double>();
        EXPECT_GT(r, 0.0) << cell << " layer " << l << " " << which;
        EXPECT_LT(r, 2.0) << cell << " layer " << l << " " << which;
      }
    }
  }
}

}  // namespace
}  // namespace kvsteer
