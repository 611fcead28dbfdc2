// Problems rendered as dataset items (numeric or multiple choice), the split rule, and the
// teacher traces in the JSONL format of shared/data/paper_traces/traces/*.jsonl.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "organism/gen/problem.h"
#include "organism/gen/rng.h"

namespace kvsteer::organism {

inline constexpr int kNumChoices = 4;  // labels A-D, as in ARC

// Four distinct values in [0, max_value]; values[correct] is the answer.
struct ChoiceSet {
  std::array<int, kNumChoices> values{};
  int correct = 0;  // index into values, [0, kNumChoices)
};

// One problem rendered in one variant: what a model sees and what it should answer.
struct Item {
  std::string id;  // "<family>-<16 hex digits of hash64(question)>"; equal across variants
  Problem problem;
  Variant variant = Variant::Numeric;
  Split split = Split::Train;
  ChoiceSet choices;               // Variant::Choice only
  std::string query;               // user text: the question, or the ARC layout with choices
  std::vector<std::string> steps;  // problem.steps, plus the choice scan (choice_scan) for Choice
  std::string solution;            // what the model must answer: "6" or "D"
};

// The split of a problem, from its question text alone: hash64(question) % 100 in [0, 90) is
// train, [90, 95) validation, [95, 100) test. Identical texts always land in the same split, so
// no problem text can appear in two splits.
Split split_of(std::string_view question);

// Choice label of an index in [0, kNumChoices): 'A'..'D'.
char choice_label(int index);

// The answer and three distractors (intermediate results, the last step reversed, near misses,
// random values), in random order. Deterministic in (problem.question, seed).
ChoiceSet make_choices(const Problem& problem, const GeneratorOptions& options, uint64_t seed);

// The ARC layout of a choice question: "Question: {question}\n\nChoices:\nA: v0\nB: v1...".
std::string choice_query(const std::string& question, const ChoiceSet& choices);

// The last reasoning steps of a choice item: the choices restated in label order, each next to
// `value` and judged, up to the first that holds it: "A: 58 vs 64 no.", "B: 64 vs 64 yes.". The
// answer is then the label just written. Each restated value is the token after its label in the
// query (a plain copy: "A:" is one token), and `value` is a copy of the previous line's (or of the
// last step's result), so the judgement compares two tokens two positions apart, like the
// operands of an arithmetic step. Organism v2's single step "64 is choice B." asked for the label
// *before* a value in the list and stayed at chance; a scan without the restated value ("A: 58
// no.") copied the choices but never learned to judge them in 800 steps.
// Throws kvsteer::Error(InvalidArgument) when `value` is not among the choices.
std::vector<std::string> choice_scan(const ChoiceSet& choices, int value);

// Renders `problem` as an item of `variant`; `seed` only affects the choices.
Item make_item(Problem problem, Variant variant, uint64_t seed, const GeneratorOptions& options);

// One problem of `family` with n_ops operations.
Problem generate_problem(Family family, int n_ops, const GeneratorOptions& options, Rng& rng);

// Draws problems of one split: family per `mix` (Mixed: 50/50), n_ops uniform in
// [min_ops, max_ops], rejecting problems whose text hashes to another split.
// Thread-compatible.
class ProblemSource {
 public:
  // Throws kvsteer::Error(InvalidArgument) for invalid options.
  ProblemSource(uint64_t seed, Split split, FamilyMix mix, const GeneratorOptions& options);

  // The next problem of the split.
  Problem next();
  // The next problem of the split and of `family` (ignores the mix).
  Problem next(Family family);

  const GeneratorOptions& options() const { return options_; }

 private:
  Rng rng_;
  Split split_;
  FamilyMix mix_;
  GeneratorOptions options_;
};

// What `gen` writes: n distinct problems of one split and variant.
struct GenOptions {
  uint64_t seed = 0;                    // same seed, same options: identical output bytes
  int n = 100;                          // number of items, [1, 1'000'000]
  Split split = Split::Train;           // which split to draw from
  Variant variant = Variant::Numeric;   // numeric answers or four choices
  FamilyMix family = FamilyMix::Mixed;  // which families
  GeneratorOptions generator;           // difficulty
};

// n items with pairwise distinct question texts. The same seed gives the same problems in
// both variants. Throws kvsteer::Error(InvalidArgument) for invalid options, or when the
// options leave too few distinct problems (more than n + 1000 duplicate draws, i.e. a problem
// space smaller than about 1.25 n), with a hint to raise max_value or max_ops.
std::vector<Item> generate_items(const GenOptions& options);

// The assistant answer with reasoning, as the paper's positive examples:
// steps joined by " ", then " The answer is <solution>.".
std::string reasoned_answer(const Item& item);

// The direct answer, as the paper's negative examples: " The answer is <solution>." (leading
// space).
std::string direct_answer(const Item& item);

// One JSONL line (no trailing newline): id, family, variant, split, n_ops, query, steps,
// solution, answer (the numeric result), and choices (Choice only, as strings in label order).
std::string trace_line(const Item& item);

}  // namespace kvsteer::organism
