#include "organism/gen/arith.h"

#include <algorithm>
#include <string_view>

#include "organism/gen/text.h"

namespace kvsteer::organism {
namespace {

struct Person {
  std::string_view name;
  bool female;
};

const std::vector<Person>& people() {
  static const std::vector<Person> kPeople = {
      {"Tom", false},  {"Sam", false},  {"Ben", false},  {"Max", false},  {"Leo", false},
      {"Jack", false}, {"Paul", false}, {"Omar", false}, {"Ravi", false}, {"Ivan", false},
      {"Luis", false}, {"Noah", false}, {"Mia", true},   {"Ann", true},   {"Emma", true},
      {"Lily", true},  {"Sara", true},  {"Nina", true},  {"Zoe", true},   {"Eva", true},
      {"Lucy", true},  {"Rosa", true},  {"Maya", true},  {"Amy", true},
  };
  return kPeople;
}

const std::vector<std::string>& things() {
  static const std::vector<std::string> kThings = {
      "apples",  "pears",   "plums",    "eggs",    "cards",   "books",   "coins", "stamps",
      "marbles", "pencils", "stickers", "shells",  "cookies", "buttons", "toys",  "balls",
      "candies", "beads",   "rocks",    "flowers", "cups",    "boxes",   "kites", "hats",
  };
  return kThings;
}

// Placeholders: {name} the owner, {other} a second person, {Pro}/{pro} he or she, {obj} him or
// her, {things} the plural object, {x} the amount.
const std::vector<std::string>& start_templates() {
  static const std::vector<std::string> kTemplates = {
      "{name} has {x} {things}.",
      "{name} owns {x} {things}.",
      "{name} keeps {x} {things} in a box.",
      "{name} starts the day with {x} {things}.",
      "{name} has a bag with {x} {things}.",
      "{name} collects {x} {things}.",
      "{name} counts {x} {things}.",
      "{name} brings {x} {things} to school.",
  };
  return kTemplates;
}

const std::vector<std::string>& add_templates() {
  static const std::vector<std::string> kTemplates = {
      "{Pro} buys {x} more.",           "{Pro} finds {x} more.",
      "{other} gives {obj} {x} more.",  "{Pro} gets {x} more from {other}.",
      "{Pro} picks up {x} more.",       "{Pro} wins {x} more.",
      "{Pro} makes {x} more.",          "{Pro} receives {x} more.",
      "{other} brings {obj} {x} more.", "{Pro} adds {x} more.",
  };
  return kTemplates;
}

const std::vector<std::string>& sub_templates() {
  static const std::vector<std::string> kTemplates = {
      "{Pro} gives {x} to {other}.", "{Pro} sells {x} of them.", "{Pro} loses {x} of them.",
      "{other} takes {x} of them.",  "{Pro} gives {x} away.",    "{Pro} uses {x} of them.",
      "{Pro} drops {x} of them.",    "{Pro} trades {x} away.",   "{other} borrows {x} of them.",
      "{Pro} breaks {x} of them.",
  };
  return kTemplates;
}

// Multiplication sentences carry their factor in the verb, not as a number.
struct MulTemplate {
  std::string text;
  int factor;
};

const std::vector<MulTemplate>& mul_templates() {
  static const std::vector<MulTemplate> kTemplates = {
      {"{Pro} doubles the number of {things}.", 2},
      {"{Pro} triples the number of {things}.", 3},
      {"The number of {things} doubles.", 2},
      {"The number of {things} triples.", 3},
  };
  return kTemplates;
}

const std::vector<std::string>& question_templates() {
  static const std::vector<std::string> kTemplates = {
      "How many {things} does {name} have now?",
      "How many {things} does {pro} have now?",
      "How many {things} does {name} have in the end?",
      "How many {things} does {name} have left?",
      "How many {things} are there now?",
      "How many {things} does {name} end up with?",
  };
  return kTemplates;
}

// One operation that keeps the running value in [0, max_value], chosen uniformly among the
// feasible kinds, then uniformly among the feasible amounts.
Operation choose_op(int value, const GeneratorOptions& options, Rng& rng) {
  std::vector<OpKind> kinds;
  if (value < options.max_value) kinds.push_back(OpKind::Add);
  if (value >= 1) kinds.push_back(OpKind::Sub);
  if (options.allow_mul && value >= 1 && value * 2 <= options.max_value) {
    kinds.push_back(OpKind::Mul);
  }
  const OpKind kind = rng.pick(kinds);
  switch (kind) {
    case OpKind::Add:
      return {kind, rng.uniform(1, std::min(options.max_operand, options.max_value - value))};
    case OpKind::Sub:
      return {kind, rng.uniform(1, std::min(options.max_operand, value))};
    default:
      return {kind, value * 3 <= options.max_value ? rng.uniform(2, 3) : 2};
  }
}

std::string op_template(const Operation& op, Rng& rng) {
  if (op.kind == OpKind::Add) return rng.pick(add_templates());
  if (op.kind == OpKind::Sub) return rng.pick(sub_templates());
  std::vector<std::string> matching;
  for (const MulTemplate& t : mul_templates()) {
    if (t.factor == op.operand) matching.push_back(t.text);
  }
  return rng.pick(matching);
}

std::string equation(int before, const Operation& op, int after) {
  return std::to_string(before) + " " + std::string(op_symbol(op.kind)) + " " +
         std::to_string(op.operand) + " = " + std::to_string(after) + ".";
}

}  // namespace

Problem generate_arith(int n_ops, const GeneratorOptions& options, Rng& rng) {
  Problem problem;
  problem.family = Family::Arith;
  const Person& person = rng.pick(people());
  const Person* other = &rng.pick(people());
  while (other->name == person.name) other = &rng.pick(people());
  std::vector<Field> fields = {
      {"{name}", std::string(person.name)},
      {"{other}", std::string(other->name)},
      {"{Pro}", person.female ? "She" : "He"},
      {"{pro}", person.female ? "she" : "he"},
      {"{obj}", person.female ? "her" : "him"},
      {"{things}", rng.pick(things())},
      {"{x}", ""},
  };
  problem.start = rng.uniform(2, options.max_value);
  fields.back().second = std::to_string(problem.start);
  std::vector<std::string> sentences = {render(rng.pick(start_templates()), fields)};
  int value = problem.start;
  for (int i = 0; i < n_ops; ++i) {
    const Operation op = choose_op(value, options, rng);
    fields.back().second = std::to_string(op.operand);
    sentences.push_back(render(op_template(op, rng), fields));
    const int next = apply(op.kind, value, op.operand);
    problem.steps.push_back(equation(value, op, next));
    problem.ops.push_back(op);
    value = next;
  }
  sentences.push_back(render(rng.pick(question_templates()), fields));
  problem.question = join(sentences, " ");
  problem.values = evaluate(problem.start, problem.ops);
  return problem;
}

void append_arith_lexicon(std::vector<std::string>& texts) {
  for (const Person& p : people()) texts.emplace_back(p.name);
  for (const std::string& t : things()) texts.push_back(t);
  texts.insert(texts.end(), {"He she She he him her + - * ="});
  for (const auto* list :
       {&start_templates(), &add_templates(), &sub_templates(), &question_templates()}) {
    texts.insert(texts.end(), list->begin(), list->end());
  }
  for (const MulTemplate& t : mul_templates()) texts.push_back(t.text);
}

}  // namespace kvsteer::organism
