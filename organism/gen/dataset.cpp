#include "organism/gen/dataset.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "kvsteer/error.h"
#include "organism/gen/arith.h"
#include "organism/gen/chain.h"
#include "organism/gen/text.h"

namespace kvsteer::organism {
namespace {

// Rejections allowed per drawn problem before a split is declared unreachable; a split holds
// 5 % of all texts, so 2000 tries fail only when the problem space is nearly empty.
constexpr int kMaxRejections = 2000;
constexpr int kDuplicateSlack = 1000;

// Plausible wrong answers, most typical mistakes first: stopping early, reversing the last step,
// near misses; two random values keep the answer from being the centre of its distractors.
std::vector<int> distractor_candidates(const Problem& problem, int max_value, Rng& rng) {
  const int answer = problem.answer();
  std::vector<int> candidates(problem.values.begin(), problem.values.end() - 1);
  const Operation& last = problem.ops.back();
  const int before = problem.values[problem.values.size() - 2];
  if (last.kind == OpKind::Add) candidates.push_back(before - last.operand);
  if (last.kind == OpKind::Sub) candidates.push_back(before + last.operand);
  if (last.kind == OpKind::Mul) candidates.push_back(before + last.operand);
  // One sign per near miss: with both answer - d and answer + d among the choices, the answer
  // would be recognisable as their midpoint without solving the problem.
  for (const int delta : {1, 2, 10}) {
    candidates.push_back(answer + (rng.bernoulli(0.5) ? delta : -delta));
  }
  candidates.push_back(rng.uniform(0, max_value));
  candidates.push_back(rng.uniform(0, max_value));
  return candidates;
}

std::string hex16(uint64_t value) {
  char buffer[17];
  std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(value));
  return buffer;
}

void check_gen_options(const GenOptions& options) {
  validate(options.generator);
  if (options.n < 1 || options.n > 1'000'000) {
    throw Error(ErrorCode::InvalidArgument,
                "n = " + std::to_string(options.n) + " is out of range; expected 1..1000000");
  }
}

}  // namespace

std::string choice_query(const std::string& question, const ChoiceSet& choices) {
  std::string query = "Question: " + question + "\n\nChoices:";
  for (int i = 0; i < kNumChoices; ++i) {
    query += "\n";
    query += choice_label(i);
    query += ": " + std::to_string(choices.values[static_cast<size_t>(i)]);
  }
  return query;
}

std::vector<std::string> choice_scan(const ChoiceSet& choices, int value) {
  std::vector<std::string> lines;
  for (int i = 0; i < kNumChoices; ++i) {
    const int listed = choices.values[static_cast<size_t>(i)];
    const bool match = listed == value;
    lines.push_back(std::string(1, choice_label(i)) + ": " + std::to_string(listed) + " vs " +
                    std::to_string(value) + (match ? " yes." : " no."));
    if (match) return lines;
  }
  throw Error(ErrorCode::InvalidArgument,
              "value " + std::to_string(value) + " is not among the choices");
}

Split split_of(std::string_view question) {
  const uint64_t bucket = hash64(question) % 100;
  if (bucket < 90) return Split::Train;
  return bucket < 95 ? Split::Validation : Split::Test;
}

char choice_label(int index) { return static_cast<char>('A' + index); }

ChoiceSet make_choices(const Problem& problem, const GeneratorOptions& options, uint64_t seed) {
  Rng rng(mix64(seed ^ hash64(problem.question)));
  std::vector<int> candidates = distractor_candidates(problem, options.max_value, rng);
  rng.shuffle(candidates);
  std::vector<int> chosen = {problem.answer()};
  auto accept = [&](int v) {
    if (v >= 0 && v <= options.max_value &&
        std::find(chosen.begin(), chosen.end(), v) == chosen.end()) {
      chosen.push_back(v);
    }
  };
  for (size_t i = 0; i < candidates.size() && chosen.size() < kNumChoices; ++i) {
    accept(candidates[i]);
  }
  while (chosen.size() < kNumChoices) accept(rng.uniform(0, options.max_value));
  ChoiceSet set;
  set.correct = rng.uniform(0, kNumChoices - 1);
  std::swap(chosen[0], chosen[static_cast<size_t>(set.correct)]);
  std::copy(chosen.begin(), chosen.end(), set.values.begin());
  return set;
}

Item make_item(Problem problem, Variant variant, uint64_t seed, const GeneratorOptions& options) {
  Item item;
  item.id = std::string(family_name(problem.family)) + "-" + hex16(hash64(problem.question));
  item.variant = variant;
  item.split = split_of(problem.question);
  item.steps = problem.steps;
  if (variant == Variant::Numeric) {
    item.query = problem.question;
    item.solution = std::to_string(problem.answer());
  } else {
    item.choices = make_choices(problem, options, seed);
    item.query = choice_query(problem.question, item.choices);
    item.solution = std::string(1, choice_label(item.choices.correct));
    for (std::string& line : choice_scan(item.choices, problem.answer()))
      item.steps.push_back(std::move(line));
  }
  item.problem = std::move(problem);
  return item;
}

Problem generate_problem(Family family, int n_ops, const GeneratorOptions& options, Rng& rng) {
  return family == Family::Arith ? generate_arith(n_ops, options, rng)
                                 : generate_chain(n_ops, options, rng);
}

ProblemSource::ProblemSource(uint64_t seed, Split split, FamilyMix mix,
                             const GeneratorOptions& options)
    : rng_(mix64(seed)), split_(split), mix_(mix), options_(options) {
  validate(options_);
}

Problem ProblemSource::next() {
  if (mix_ == FamilyMix::Arith) return next(Family::Arith);
  if (mix_ == FamilyMix::Chain) return next(Family::Chain);
  return next(rng_.bernoulli(0.5) ? Family::Chain : Family::Arith);
}

Problem ProblemSource::next(Family family) {
  for (int attempt = 0; attempt < kMaxRejections; ++attempt) {
    const int n_ops = rng_.uniform(options_.min_ops, options_.max_ops);
    Problem problem = generate_problem(family, n_ops, options_, rng_);
    if (split_of(problem.question) == split_) return problem;
  }
  throw Error(ErrorCode::InvalidArgument,
              "no " + std::string(family_name(family)) + " problem of split " +
                  std::string(split_name(split_)) + " found in " + std::to_string(kMaxRejections) +
                  " draws; hint: raise max_value or max_ops");
}

std::vector<Item> generate_items(const GenOptions& options) {
  check_gen_options(options);
  ProblemSource source(options.seed, options.split, options.family, options.generator);
  std::vector<Item> items;
  std::unordered_set<std::string> seen;
  // Drawing n distinct problems from a space of S costs about S * ln(S / (S - n)) - n
  // duplicates: fewer than n while n < 0.8 S. Many more mean the space is (nearly) exhausted.
  const long max_duplicates = static_cast<long>(options.n) + kDuplicateSlack;
  long duplicates = 0;
  while (static_cast<int>(items.size()) < options.n && duplicates <= max_duplicates) {
    Problem problem = source.next();
    if (!seen.insert(problem.question).second) {
      ++duplicates;
      continue;
    }
    items.push_back(
        make_item(std::move(problem), options.variant, options.seed, options.generator));
  }
  if (static_cast<int>(items.size()) < options.n) {
    throw Error(ErrorCode::InvalidArgument,
                "only " + std::to_string(items.size()) +
                    " distinct problems found for n = " + std::to_string(options.n) + " in split " +
                    std::string(split_name(options.split)) +
                    "; hint: lower n, or raise max_value or max_ops");
  }
  return items;
}

std::string reasoned_answer(const Item& item) {
  return join(item.steps, " ") + direct_answer(item);
}

std::string direct_answer(const Item& item) { return " The answer is " + item.solution + "."; }

std::string trace_line(const Item& item) {
  nlohmann::ordered_json line;
  line["id"] = item.id;
  line["family"] = family_name(item.problem.family);
  line["variant"] = variant_name(item.variant);
  line["split"] = split_name(item.split);
  line["n_ops"] = item.problem.n_ops();
  line["query"] = item.query;
  line["steps"] = item.steps;
  line["solution"] = item.solution;
  line["answer"] = item.problem.answer();
  if (item.variant == Variant::Choice) {
    auto choices = nlohmann::ordered_json::array();
    for (const int v : item.choices.values) choices.push_back(std::to_string(v));
    line["choices"] = std::move(choices);
  }
  return line.dump();
}

}  // namespace kvsteer::organism
