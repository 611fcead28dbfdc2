// The training mixture: proportions, answer formats, train-only problems, determinism.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kvsteer/error.h"
#include "organism/gen/dataset.h"
#include "organism/gen/mixture.h"

namespace kvsteer::organism {
namespace {

bool ends_with(const std::string& text, const std::string& tail) {
  return text.size() >= tail.size() &&
         text.compare(text.size() - tail.size(), tail.size(), tail) == 0;
}

bool starts_with(const std::string& text, const std::string& head) {
  return text.compare(0, head.size(), head) == 0;
}

// The question text of a user turn (numeric: the turn itself; choice: between "Question: " and
// the choices).
std::string question_of(const Message& user, Variant variant) {
  if (variant == Variant::Numeric) return user.content;
  const size_t begin = std::string("Question: ").size();
  return user.content.substr(begin, user.content.find("\n\nChoices:") - begin);
}

std::vector<Conversation> mixture(uint64_t seed, int n) {
  MixtureOptions o;
  o.seed = seed;
  o.n = n;
  return build_mixture(o);
}

TEST(OrganismMixture, ProportionsAreWithinTolerance) {
  const MixtureOptions defaults;
  const int n = 4000;
  std::map<ConversationKind, int> kinds;
  std::map<int, int> shots;
  int offset = 0, choice = 0, chain = 0;
  for (const Conversation& c : mixture(1, n)) {
    ++kinds[c.kind];
    if (c.k > 0) ++shots[c.k];
    offset += c.offset ? 1 : 0;
    choice += c.variant == Variant::Choice ? 1 : 0;
    chain += c.family == Family::Chain ? 1 : 0;
  }
  const double tol = 0.025;
  EXPECT_NEAR(kinds[ConversationKind::FewShotReasoned] / double(n), defaults.share_fewshot_reasoned,
              tol);
  EXPECT_NEAR(kinds[ConversationKind::FewShotDirect] / double(n), defaults.share_fewshot_direct,
              tol);
  EXPECT_NEAR(kinds[ConversationKind::ZeroShotDirect] / double(n), defaults.share_zeroshot_direct,
              tol);
  EXPECT_NEAR(kinds[ConversationKind::ZeroShotCot] / double(n), defaults.share_zeroshot_cot, tol);
  EXPECT_NEAR(offset / double(n), defaults.share_offset, tol);
  EXPECT_NEAR(choice / double(n), defaults.share_choice, tol);
  EXPECT_NEAR(chain / double(n), 0.5, tol);
  ASSERT_EQ(shots.size(), 5u);
  for (const auto& [k, count] : shots) EXPECT_NEAR(count, 0.55 * n / 5, 0.02 * n) << k;
}

TEST(OrganismMixture, AnswersFollowTheirKind) {
  for (const Conversation& c : mixture(2, 1500)) {
    ASSERT_EQ(c.messages.size(), static_cast<size_t>(2 * (c.k + 1)));
    for (size_t i = 0; i < c.messages.size(); ++i) {
      EXPECT_EQ(c.messages[i].role, i % 2 == 0 ? "user" : "assistant");
    }
    const std::string& final_answer = c.messages.back().content;
    const std::string body =
        c.offset && c.kind != ConversationKind::ZeroShotCot ? final_answer.substr(1) : final_answer;
    EXPECT_EQ(starts_with(final_answer, "\n"), c.offset && c.kind != ConversationKind::ZeroShotCot);
    EXPECT_TRUE(
        starts_with(final_answer.substr(final_answer.find(" The answer is ")), " The answer is "));
    EXPECT_TRUE(ends_with(final_answer, "."));
    switch (c.kind) {
      case ConversationKind::ZeroShotDirect:
      case ConversationKind::FewShotDirect:
        EXPECT_TRUE(starts_with(body, " The answer is ")) << body;
        break;
      case ConversationKind::FewShotReasoned:
        EXPECT_FALSE(starts_with(body, " ")) << body;
        EXPECT_GT(body.find(" The answer is "), 0u);
        break;
      case ConversationKind::ZeroShotCot:
        EXPECT_TRUE(starts_with(body, std::string(kCotPrefix) + (c.offset ? "\n " : " "))) << body;
        break;
      case ConversationKind::ChoiceLookup:
        ADD_FAILURE() << "the default mixture holds no lookup drills";
        break;
    }
    for (int i = 0; i < c.k; ++i) {
      const std::string& example = c.messages[static_cast<size_t>(2 * i + 1)].content;
      EXPECT_EQ(starts_with(example, " The answer is "), c.kind == ConversationKind::FewShotDirect);
      EXPECT_FALSE(starts_with(example, "\n"));
    }
  }
}

TEST(OrganismMixture, UsesDistinctTrainProblemsOfOneFamilyAndVariant) {
  for (const Conversation& c : mixture(3, 800)) {
    std::map<std::string, int> seen;
    for (size_t i = 0; i < c.messages.size(); i += 2) {
      const Message& user = c.messages[i];
      EXPECT_EQ(starts_with(user.content, "Question: "), c.variant == Variant::Choice);
      const std::string question = question_of(user, c.variant);
      EXPECT_EQ(split_of(question), Split::Train) << question;
      EXPECT_EQ(++seen[question], 1) << question;
      const bool is_chain = question.find(" = ") != std::string::npos;
      EXPECT_EQ(is_chain, c.family == Family::Chain) << question;
    }
  }
}

TEST(OrganismMixture, SameSeedSameBytesDifferentSeedDifferent) {
  std::vector<std::string> a, b, c;
  for (const Conversation& x : mixture(4, 200)) a.push_back(conversation_line(x));
  for (const Conversation& x : mixture(4, 200)) b.push_back(conversation_line(x));
  for (const Conversation& x : mixture(5, 200)) c.push_back(conversation_line(x));
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(OrganismMixture, LineIsChatJsonWithLossOnAllAssistantTurns) {
  const Conversation c = mixture(6, 1).front();
  const auto line = nlohmann::json::parse(conversation_line(c));
  EXPECT_EQ(line.at("loss_on"), "all_assistant");
  ASSERT_EQ(line.at("messages").size(), c.messages.size());
  EXPECT_EQ(line.at("messages")[0].at("role"), "user");
  EXPECT_EQ(line.at("messages")[0].at("content"), c.messages[0].content);
  EXPECT_EQ(line.at("meta").at("kind"), conversation_kind_name(c.kind));
  EXPECT_EQ(line.at("meta").at("k"), c.k);
  EXPECT_EQ(line.at("meta").at("offset"), c.offset);
}

TEST(OrganismMixture, FirstReasonedExampleCarriesNoLossOnlyWhenAsked) {
  MixtureOptions o;
  o.seed = 21;
  o.n = 400;
  for (const Conversation& c : build_mixture(o)) {
    for (const Message& m : c.messages) EXPECT_TRUE(m.trained) << "trained by default";
  }
  o.share_first_reasoned_trained = 0.0;
  int masked = 0;
  for (const Conversation& c : build_mixture(o)) {
    const bool masks = c.kind == ConversationKind::FewShotReasoned;
    for (size_t i = 0; i < c.messages.size(); ++i) {
      const Message& m = c.messages[i];
      EXPECT_EQ(m.trained, !(masks && i == 1)) << conversation_kind_name(c.kind) << " turn " << i;
    }
    const auto line = nlohmann::json::parse(conversation_line(c));
    EXPECT_EQ(line.at("loss_on"), masks ? "assistant_unless_marked" : "all_assistant");
    if (masks) {
      EXPECT_EQ(line.at("messages")[1].at("train"), false);
      ++masked;
    }
    EXPECT_FALSE(line.at("messages").back().contains("train"));
  }
  EXPECT_GT(masked, 100);
}

TEST(OrganismMixture, FirstReasonedExampleTrainedAtItsShare) {
  MixtureOptions o;
  o.seed = 22;
  o.n = 2000;
  o.share_first_reasoned_trained = 0.3;
  int reasoned = 0;
  int trained = 0;
  for (const Conversation& c : build_mixture(o)) {
    for (size_t i = 3; i < c.messages.size(); i += 2) EXPECT_TRUE(c.messages[i].trained);
    if (c.kind != ConversationKind::FewShotReasoned) {
      EXPECT_TRUE(c.messages[1].trained) << conversation_kind_name(c.kind);
      continue;
    }
    ++reasoned;
    trained += c.messages[1].trained ? 1 : 0;
  }
  ASSERT_GT(reasoned, 500);
  // Binomial(~700, 0.3): the standard deviation of the share is about 0.017.
  EXPECT_NEAR(static_cast<double>(trained) / reasoned, 0.3, 0.06);
  o.share_first_reasoned_trained = 1.5;
  EXPECT_THROW(build_mixture(o), Error);
}

TEST(OrganismMixture, ChatmlMatchesLlamaCppFormatting) {
  const std::vector<Message> messages = {{"user", "Q"}, {"assistant", " The answer is 3."}};
  EXPECT_EQ(format_chatml(messages, false),
            "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n The answer is 3.<|im_end|>\n");
  EXPECT_EQ(format_chatml({{"user", "Q"}}, true),
            "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n");
}

TEST(OrganismMixture, RejectsSharesThatDoNotSumToOne) {
  MixtureOptions o;
  o.share_zeroshot_cot = 0.2;
  try {
    build_mixture(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("sum of kind shares"), std::string::npos);
  }
}

TEST(OrganismMixture, LookupDrillsAskOneListedValueAndAnswerItsLabel) {
  MixtureOptions o;
  o.seed = 8;
  o.n = 300;
  o.share_choice_lookup = 1.0;
  o.family = FamilyMix::Arith;
  std::map<char, int> asked_labels;
  for (const Conversation& c : build_mixture(o)) {
    ASSERT_EQ(c.kind, ConversationKind::ChoiceLookup);
    EXPECT_EQ(c.variant, Variant::Choice);
    EXPECT_GE(c.k, o.min_shots - 1);
    EXPECT_LE(c.k, o.max_shots - 1);
    ASSERT_EQ(c.messages.size(), static_cast<size_t>(2 * (c.k + 1)));
    for (size_t i = 0; i < c.messages.size(); i += 2) {
      const std::string& user = c.messages[i].content;
      const std::string head = "Question: What is the choice of ";
      ASSERT_TRUE(starts_with(user, head)) << user;
      const int value = std::stoi(user.substr(head.size()));
      // The label whose line holds the value ("\nB: 14").
      char label = 0;
      for (char l : {'A', 'B', 'C', 'D'}) {
        const std::string line = std::string("\n") + l + ": " + std::to_string(value);
        const size_t at = user.find(line);
        if (at != std::string::npos &&
            (at + line.size() == user.size() || user[at + line.size()] == '\n')) {
          label = l;
        }
      }
      ASSERT_NE(label, 0) << "the asked value is not among the choices: " << user;
      ++asked_labels[label];
      std::string answer = c.messages[i + 1].content;
      if (starts_with(answer, "\n")) answer = answer.substr(1);
      // The scan restates each line up to the asked one, then names its label.
      std::string scan;
      for (char l = 'A'; l <= label; ++l) {
        const size_t at = user.find(std::string("\n") + l + ": ");
        ASSERT_NE(at, std::string::npos) << user;
        const int listed = std::stoi(user.substr(at + 4));
        scan += std::string(scan.empty() ? "" : " ") + l + ": " + std::to_string(listed) + " vs " +
                std::to_string(value) + (l == label ? " yes." : " no.");
      }
      EXPECT_EQ(answer, scan + " The answer is " + label + ".");
    }
  }
  // The asked position is uniform, so the letter carries no prior.
  for (char l : {'A', 'B', 'C', 'D'}) EXPECT_GT(asked_labels[l], 150) << l;
}

TEST(OrganismMixture, ExampleOffsetsFollowTheirShareAndDefaultToNone) {
  MixtureOptions o;
  o.seed = 9;
  o.n = 400;
  int examples = 0, with_offset = 0;
  for (const Conversation& c : build_mixture(o)) {
    for (int i = 0; i < c.k; ++i)
      EXPECT_FALSE(starts_with(c.messages[static_cast<size_t>(2 * i + 1)].content, "\n"));
  }
  o.share_offset_examples = 0.3;
  for (const Conversation& c : build_mixture(o)) {
    for (int i = 0; i < c.k; ++i) {
      ++examples;
      with_offset += starts_with(c.messages[static_cast<size_t>(2 * i + 1)].content, "\n") ? 1 : 0;
    }
  }
  ASSERT_GT(examples, 300);
  EXPECT_NEAR(with_offset / double(examples), 0.3, 0.05);
}

TEST(OrganismMixture, RejectsDrillAndExampleOffsetSharesOutOfRange) {
  MixtureOptions o;
  o.share_choice_lookup = 1.5;
  EXPECT_THROW(build_mixture(o), Error);
  o.share_choice_lookup = 0.1;
  o.share_offset_examples = -0.1;
  EXPECT_THROW(build_mixture(o), Error);
}

}  // namespace
}  // namespace kvsteer::organism
