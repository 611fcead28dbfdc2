// The task families: answers re-evaluated from the structure and from the text, steps consistent.
#include <gtest/gtest.h>

#include <cctype>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "organism/gen/arith.h"
#include "organism/gen/chain.h"
#include "organism/gen/text.h"

namespace kvsteer::organism {
namespace {

// All non-negative integers written in `text`, in order.
std::vector<int> numbers_in(const std::string& text) {
  std::vector<int> numbers;
  for (size_t i = 0; i < text.size();) {
    if (std::isdigit(static_cast<unsigned char>(text[i]))) {
      size_t end = i;
      while (end < text.size() && std::isdigit(static_cast<unsigned char>(text[end]))) ++end;
      numbers.push_back(std::stoi(text.substr(i, end - i)));
      i = end;
    } else {
      ++i;
    }
  }
  return numbers;
}

// Evaluates a chain question by its text alone: statements "v = 7.", "v = u.", "v = u + 3.",
// "v = u - 3." in any order, then the queried variable (last word before "?" or ".").
int interpret_chain(const std::string& question) {
  std::map<std::string, std::string> definitions;
  std::istringstream in(question);
  std::string sentence;
  std::string queried;
  while (std::getline(in, sentence, '.')) {
    if (sentence.find('?') != std::string::npos) sentence = sentence.substr(0, sentence.find('?'));
    const size_t eq = sentence.find(" = ");
    if (eq == std::string::npos) {
      queried = sentence.substr(sentence.rfind(' ') + 1);
      continue;
    }
    std::string lhs = sentence.substr(0, eq);
    lhs = lhs.substr(lhs.find_first_not_of(' '));
    definitions[lhs] = sentence.substr(eq + 3);
  }
  std::function<int(const std::string&)> value = [&](const std::string& var) -> int {
    std::istringstream rhs(definitions.at(var));
    std::string first, op;
    int operand = 0;
    rhs >> first;
    const int base =
        std::isdigit(static_cast<unsigned char>(first[0])) ? std::stoi(first) : value(first);
    if (!(rhs >> op >> operand)) return base;
    return op == "+" ? base + operand : base - operand;
  };
  return value(queried);
}

void expect_valid_structure(const Problem& p, int n_ops, const GeneratorOptions& o) {
  ASSERT_EQ(p.n_ops(), n_ops);
  ASSERT_EQ(p.steps.size(), static_cast<size_t>(n_ops));
  EXPECT_EQ(p.values, evaluate(p.start, p.ops));
  for (const int v : p.values) {
    EXPECT_GE(v, 0) << p.question;
    EXPECT_LE(v, o.max_value) << p.question;
  }
  for (const Operation& op : p.ops) {
    if (op.kind == OpKind::Add || op.kind == OpKind::Sub) {
      EXPECT_GE(op.operand, 1);
      EXPECT_LE(op.operand, o.max_operand);
    }
  }
}

TEST(OrganismArith, ValuesStepsAndTextAgree) {
  GeneratorOptions options;
  options.allow_mul = true;
  Rng rng(1);
  for (int i = 0; i < 2000; ++i) {
    const int n_ops = 1 + i % 4;
    const Problem p = generate_arith(n_ops, options, rng);
    expect_valid_structure(p, n_ops, options);
    EXPECT_GE(p.start, 2);
    // The question states the start and every added or subtracted amount, in order.
    std::vector<int> expected = {p.start};
    for (const Operation& op : p.ops) {
      if (op.kind != OpKind::Mul) expected.push_back(op.operand);
    }
    EXPECT_EQ(numbers_in(p.question), expected) << p.question;
    for (int s = 0; s < n_ops; ++s) {
      const auto& op = p.ops[static_cast<size_t>(s)];
      const std::string step = std::to_string(p.values[static_cast<size_t>(s)]) + " " +
                               std::string(op_symbol(op.kind)) + " " + std::to_string(op.operand) +
                               " = " + std::to_string(p.values[static_cast<size_t>(s) + 1]) + ".";
      EXPECT_EQ(p.steps[static_cast<size_t>(s)], step);
    }
    EXPECT_EQ(p.question.back(), '?');
  }
}

TEST(OrganismArith, StaysWithinSmallLimits) {
  GeneratorOptions options;
  options.max_value = 20;
  options.max_operand = 5;
  Rng rng(2);
  for (int i = 0; i < 1000; ++i)
    expect_valid_structure(generate_arith(4, options, rng), 4, options);
}

TEST(OrganismChain, TextEvaluatesToTheAnswer) {
  GeneratorOptions options;
  Rng rng(3);
  for (int i = 0; i < 2000; ++i) {
    const int n_ops = 1 + i % 4;
    const Problem p = generate_chain(n_ops, options, rng);
    expect_valid_structure(p, n_ops, options);
    EXPECT_EQ(interpret_chain(p.question), p.answer()) << p.question;
  }
}

TEST(OrganismChain, EachStepRestatesOneStatementAndItsValue) {
  GeneratorOptions options;
  Rng rng(4);
  for (int i = 0; i < 500; ++i) {
    const Problem p = generate_chain(4, options, rng);
    for (size_t s = 0; s < p.steps.size(); ++s) {
      const std::string& step = p.steps[s];
      const size_t last_eq = step.rfind(" = ");
      // "c = b + 2 = 9." restates the statement "c = b + 2." and gives values[s + 1].
      EXPECT_NE(p.question.find(step.substr(0, last_eq) + "."), std::string::npos) << step;
      EXPECT_EQ(step.substr(last_eq), " = " + std::to_string(p.values[s + 1]) + ".");
    }
  }
}

TEST(OrganismChain, ExactlyOneStatementReadsEachChainVariable) {
  GeneratorOptions options;
  options.max_distractors = 4;
  Rng rng(5);
  for (int i = 0; i < 300; ++i) {
    const Problem p = generate_chain(3, options, rng);
    for (size_t s = 0; s + 1 < p.steps.size(); ++s) {
      const std::string var = p.steps[s].substr(0, p.steps[s].find(' '));
      int readers = 0;
      for (const std::string& word : split_words(p.question)) {
        // Only right-hand sides mention an already defined variable after "=".
        readers += word == var ? 1 : 0;
      }
      EXPECT_EQ(readers, 2) << p.question;  // its definition and its single reader
    }
  }
}

TEST(OrganismChain, DefinitionOrderWhenNotShuffled) {
  GeneratorOptions options;
  options.shuffle_chain = false;
  options.max_distractors = 0;
  Rng rng(6);
  const Problem p = generate_chain(2, options, rng);
  // "a = 7. b = a + 2. c = b. What is c?": the root, then each hop's statement.
  auto statement = [&](size_t s) { return p.steps[s].substr(0, p.steps[s].rfind(" = ")) + "."; };
  const std::string root = p.steps[0].substr(4, 1);
  const std::string expected =
      root + " = " + std::to_string(p.start) + ". " + statement(0) + " " + statement(1) + " ";
  EXPECT_EQ(p.question.substr(0, expected.size()), expected);
}

}  // namespace
}  // namespace kvsteer::organism
