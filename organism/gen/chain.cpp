#include "organism/gen/chain.h"

#include <algorithm>

#include "organism/gen/text.h"

namespace kvsteer::organism {
namespace {

const std::vector<std::string>& question_templates() {
  static const std::vector<std::string> kTemplates = {
      "What is {v}?",
      "What is the value of {v}?",
      "Find {v}.",
      "Compute {v}.",
  };
  return kTemplates;
}

// Hop kinds weighted Add 2 : Sub 2 : Copy 1 among those that keep the value in range.
Operation choose_hop(int value, const GeneratorOptions& options, Rng& rng) {
  std::vector<OpKind> kinds = {OpKind::Copy};
  if (value < options.max_value) kinds.insert(kinds.end(), {OpKind::Add, OpKind::Add});
  if (value >= 1) kinds.insert(kinds.end(), {OpKind::Sub, OpKind::Sub});
  const OpKind kind = rng.pick(kinds);
  if (kind == OpKind::Add) {
    return {kind, rng.uniform(1, std::min(options.max_operand, options.max_value - value))};
  }
  if (kind == OpKind::Sub) return {kind, rng.uniform(1, std::min(options.max_operand, value))};
  return {OpKind::Copy, 0};
}

// Right-hand side of a hop: "a + 2" or "a" for a copy.
std::string hop_rhs(const std::string& source, const Operation& op) {
  if (op.kind == OpKind::Copy) return source;
  return source + " " + std::string(op_symbol(op.kind)) + " " + std::to_string(op.operand);
}

// `count` distinct letters, uniformly: a partial Fisher-Yates shuffle of "a".."z".
std::vector<std::string> pick_variables(int count, Rng& rng) {
  std::string letters = "abcdefghijklmnopqrstuvwxyz";
  std::vector<std::string> vars;
  for (int i = 0; i < count; ++i) {
    const int j = rng.uniform(i, static_cast<int>(letters.size()) - 1);
    std::swap(letters[static_cast<size_t>(i)], letters[static_cast<size_t>(j)]);
    vars.emplace_back(1, letters[static_cast<size_t>(i)]);
  }
  return vars;
}

}  // namespace

Problem generate_chain(int n_ops, const GeneratorOptions& options, Rng& rng) {
  Problem problem;
  problem.family = Family::Chain;
  const int n_distractors = rng.uniform(0, options.max_distractors);
  const std::vector<std::string> vars = pick_variables(n_ops + 1 + n_distractors, rng);
  problem.start = rng.uniform(0, options.max_value);
  std::vector<std::string> statements = {vars[0] + " = " + std::to_string(problem.start) + "."};
  int value = problem.start;
  for (int i = 0; i < n_ops; ++i) {
    const Operation op = choose_hop(value, options, rng);
    const int next = apply(op.kind, value, op.operand);
    const std::string rhs = hop_rhs(vars[static_cast<size_t>(i)], op);
    const std::string& target = vars[static_cast<size_t>(i) + 1];
    statements.push_back(target + " = " + rhs + ".");
    problem.steps.push_back(target + " = " + rhs + " = " + std::to_string(next) + ".");
    problem.ops.push_back(op);
    value = next;
  }
  for (int i = 0; i < n_distractors; ++i) {
    const std::string& var = vars[static_cast<size_t>(n_ops + 1 + i)];
    statements.push_back(var + " = " + std::to_string(rng.uniform(0, options.max_value)) + ".");
  }
  if (options.shuffle_chain) rng.shuffle(statements);
  const std::vector<Field> fields = {{"{v}", vars[static_cast<size_t>(n_ops)]}};
  statements.push_back(render(rng.pick(question_templates()), fields));
  problem.question = join(statements, " ");
  problem.values = evaluate(problem.start, problem.ops);
  return problem;
}

void append_chain_lexicon(std::vector<std::string>& texts) {
  texts.insert(texts.end(), question_templates().begin(), question_templates().end());
  texts.emplace_back("= + -");
  for (char c = 'a'; c <= 'z'; ++c) texts.emplace_back(1, c);
}

}  // namespace kvsteer::organism
