// Items, traces and splits: determinism, disjointness, multiple-choice rules, JSONL format.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "kvsteer/error.h"
#include "organism/gen/dataset.h"

namespace kvsteer::organism {
namespace {

std::vector<std::string> trace_lines(const GenOptions& options) {
  std::vector<std::string> lines;
  for (const Item& item : generate_items(options)) lines.push_back(trace_line(item));
  return lines;
}

GenOptions gen_options(uint64_t seed, int n, Split split, Variant variant) {
  GenOptions o;
  o.seed = seed;
  o.n = n;
  o.split = split;
  o.variant = variant;
  return o;
}

TEST(OrganismDataset, SameSeedGivesIdenticalBytes) {
  for (const Variant v : {Variant::Numeric, Variant::Choice}) {
    const GenOptions o = gen_options(42, 300, Split::Test, v);
    EXPECT_EQ(trace_lines(o), trace_lines(o));
  }
}

TEST(OrganismDataset, DifferentSeedsGiveDifferentProblems) {
  const auto a = trace_lines(gen_options(1, 200, Split::Train, Variant::Numeric));
  const auto b = trace_lines(gen_options(2, 200, Split::Train, Variant::Numeric));
  EXPECT_NE(a, b);
  const std::set<std::string> set_a(a.begin(), a.end());
  int shared = 0;
  for (const std::string& line : b) shared += set_a.count(line) ? 1 : 0;
  EXPECT_LT(shared, 20);
}

TEST(OrganismDataset, SplitsAreDisjointAndMatchTheHashRule) {
  std::map<std::string, Split> owner;
  for (const Split split : {Split::Train, Split::Validation, Split::Test}) {
    for (const uint64_t seed : {1u, 2u}) {
      const int n = split == Split::Train ? 1500 : 750;
      for (const Item& item : generate_items(gen_options(seed, n, split, Variant::Numeric))) {
        ASSERT_EQ(item.split, split);
        ASSERT_EQ(split_of(item.problem.question), split);
        const auto [it, inserted] = owner.emplace(item.problem.question, split);
        EXPECT_TRUE(inserted || it->second == split) << item.problem.question;
      }
    }
  }
  EXPECT_GT(owner.size(), 5500u);
}

TEST(OrganismDataset, SplitSharesFollowTheRule) {
  Rng rng(9);
  GeneratorOptions options;
  std::map<Split, int> counts;
  for (int i = 0; i < 20000; ++i) {
    ++counts[split_of(
        generate_problem(i % 2 ? Family::Chain : Family::Arith, 2, options, rng).question)];
  }
  EXPECT_NEAR(counts[Split::Train] / 20000.0, 0.90, 0.01);
  EXPECT_NEAR(counts[Split::Validation] / 20000.0, 0.05, 0.01);
  EXPECT_NEAR(counts[Split::Test] / 20000.0, 0.05, 0.01);
}

TEST(OrganismDataset, QuestionsWithinOneFileAreDistinct) {
  GenOptions o = gen_options(3, 2000, Split::Train, Variant::Numeric);
  o.generator.max_ops = 1;
  std::set<std::string> questions;
  for (const Item& item : generate_items(o)) {
    EXPECT_TRUE(questions.insert(item.problem.question).second);
  }
}

TEST(OrganismDataset, ChoiceItemsHaveFourDistinctChoicesAndOneCorrect) {
  for (const Item& item : generate_items(gen_options(5, 3000, Split::Train, Variant::Choice))) {
    const auto& values = item.choices.values;
    std::set<int> distinct(values.begin(), values.end());
    ASSERT_EQ(distinct.size(), 4u) << item.query;
    EXPECT_EQ(std::count(values.begin(), values.end(), item.problem.answer()), 1);
    EXPECT_EQ(values[static_cast<size_t>(item.choices.correct)], item.problem.answer());
    EXPECT_EQ(item.solution, std::string(1, choice_label(item.choices.correct)));
    for (const int v : values) {
      EXPECT_GE(v, 0);
      EXPECT_LE(v, 99);
    }
    // The trace ends with the scan: every label up to the answer's, its listed value, "yes" last.
    const size_t n_scan = static_cast<size_t>(item.choices.correct) + 1;
    ASSERT_EQ(item.steps.size(), item.problem.steps.size() + n_scan);
    for (size_t i = 0; i < n_scan; ++i) {
      const bool last = i + 1 == n_scan;
      EXPECT_EQ(item.steps[item.problem.steps.size() + i],
                std::string(1, choice_label(static_cast<int>(i))) + ": " +
                    std::to_string(values[i]) + " vs " + std::to_string(item.problem.answer()) +
                    (last ? " yes." : " no."));
    }
  }
}

TEST(OrganismDataset, ChoiceScanStopsAtTheValueAndRejectsAnUnlistedOne) {
  ChoiceSet choices;
  choices.values = {17, 15, 8, 9};
  choices.correct = 3;
  EXPECT_EQ(choice_scan(choices, 17), std::vector<std::string>{"A: 17 vs 17 yes."});
  EXPECT_EQ(choice_scan(choices, 8),
            (std::vector<std::string>{"A: 17 vs 8 no.", "B: 15 vs 8 no.", "C: 8 vs 8 yes."}));
  EXPECT_THROW(choice_scan(choices, 10), Error);
}

TEST(OrganismDataset, CorrectLetterIsRoughlyUniform) {
  std::map<std::string, int> letters;
  for (const Item& item : generate_items(gen_options(6, 4000, Split::Train, Variant::Choice))) {
    ++letters[item.solution];
  }
  ASSERT_EQ(letters.size(), 4u);
  for (const auto& [letter, count] : letters) EXPECT_NEAR(count, 1000, 120) << letter;
}

TEST(OrganismDataset, ChoiceQueryFollowsTheArcLayout) {
  const Item item = generate_items(gen_options(7, 1, Split::Test, Variant::Choice)).front();
  const auto& v = item.choices.values;
  const std::string expected = "Question: " + item.problem.question +
                               "\n\nChoices:\nA: " + std::to_string(v[0]) +
                               "\nB: " + std::to_string(v[1]) + "\nC: " + std::to_string(v[2]) +
                               "\nD: " + std::to_string(v[3]);
  EXPECT_EQ(item.query, expected);
}

TEST(OrganismDataset, VariantsShareProblemsForTheSameSeed) {
  const auto numeric = generate_items(gen_options(8, 100, Split::Validation, Variant::Numeric));
  const auto choice = generate_items(gen_options(8, 100, Split::Validation, Variant::Choice));
  ASSERT_EQ(numeric.size(), choice.size());
  for (size_t i = 0; i < numeric.size(); ++i) {
    EXPECT_EQ(numeric[i].id, choice[i].id);
    EXPECT_EQ(numeric[i].query, choice[i].problem.question);
  }
}

TEST(OrganismDataset, TraceLineHasThePaperFieldsAndOurs) {
  for (const Variant v : {Variant::Numeric, Variant::Choice}) {
    const Item item = generate_items(gen_options(9, 1, Split::Test, v)).front();
    const auto line = nlohmann::json::parse(trace_line(item));
    EXPECT_EQ(line.at("query"), item.query);
    EXPECT_EQ(line.at("steps").get<std::vector<std::string>>(), item.steps);
    EXPECT_EQ(line.at("solution"), item.solution);
    EXPECT_EQ(line.at("id"), item.id);
    EXPECT_EQ(line.at("family"), family_name(item.problem.family));
    EXPECT_EQ(line.at("variant"), variant_name(v));
    EXPECT_EQ(line.at("split"), "test");
    EXPECT_EQ(line.at("n_ops"), item.problem.n_ops());
    EXPECT_EQ(line.at("answer"), item.problem.answer());
    EXPECT_EQ(line.contains("choices"), v == Variant::Choice);
  }
}

TEST(OrganismDataset, NumericSolutionIsTheAnswerAndReasonedAnswerEndsWithIt) {
  for (const Item& item : generate_items(gen_options(10, 500, Split::Train, Variant::Numeric))) {
    EXPECT_EQ(item.solution, std::to_string(item.problem.answer()));
    const std::string tail = " The answer is " + item.solution + ".";
    EXPECT_EQ(direct_answer(item), tail);
    const std::string reasoned = reasoned_answer(item);
    EXPECT_EQ(reasoned, item.steps.front() + reasoned.substr(item.steps.front().size()));
    EXPECT_EQ(reasoned.substr(reasoned.size() - tail.size()), tail);
    // The last step computes the answer: "... = <answer>."
    EXPECT_EQ(item.steps.back().substr(item.steps.back().rfind(" = ")),
              " = " + item.solution + ".");
  }
}

TEST(OrganismDataset, FamilyFilterAndOperationCounts) {
  for (const FamilyMix mix : {FamilyMix::Arith, FamilyMix::Chain, FamilyMix::Mixed}) {
    GenOptions o = gen_options(11, 800, Split::Train, Variant::Numeric);
    o.family = mix;
    std::map<Family, int> families;
    std::map<int, int> ops;
    for (const Item& item : generate_items(o)) {
      ++families[item.problem.family];
      ++ops[item.problem.n_ops()];
    }
    if (mix == FamilyMix::Mixed) {
      EXPECT_NEAR(families[Family::Arith], 400, 60);
    } else {
      EXPECT_EQ(families.size(), 1u);
      EXPECT_EQ(families.begin()->first, mix == FamilyMix::Arith ? Family::Arith : Family::Chain);
    }
    ASSERT_EQ(ops.size(), 4u);
    for (const auto& [n_ops, count] : ops) EXPECT_NEAR(count, 200, 50) << n_ops;
  }
}

TEST(OrganismDataset, RejectsBadOptionsAsInvalidArgument) {
  GenOptions o = gen_options(1, 10, Split::Test, Variant::Numeric);
  o.generator.max_ops = 9;
  try {
    generate_items(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("max_ops"), std::string::npos);
  }
  o = gen_options(1, 0, Split::Test, Variant::Numeric);
  EXPECT_THROW(generate_items(o), Error);
}

TEST(OrganismDataset, ReportsTooSmallProblemSpaces) {
  // One-hop chains "x = v. y = x +- 1." with v in 0..9: about 650 * 10 * 3 * 4 texts, of which
  // 5 % are test problems: fewer than the 4500 asked for.
  GenOptions o = gen_options(1, 4500, Split::Test, Variant::Numeric);
  o.family = FamilyMix::Chain;
  o.generator.max_value = 9;
  o.generator.max_operand = 1;
  o.generator.max_ops = 1;
  o.generator.max_distractors = 0;
  o.generator.shuffle_chain = false;
  try {
    generate_items(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("distinct problems"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kvsteer::organism
