// Structured form of an organism problem, shared by both task families.
//
// A problem is a start value and 1..4 operations applied in order; the question text, the
// reasoning steps and the answer are all derived from that structure, so tests can re-evaluate
// every problem independently of its text.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvsteer::organism {

enum class Family {
  Arith,  // multi-step arithmetic word problems ("Tom has 5 apples. He buys 3 more. ...")
  Chain,  // multi-hop variable chains ("a = 7. b = a + 2. c = b. What is c?")
};

enum class Variant {
  Numeric,  // the answer is a number
  Choice,   // four labelled choices A-D, the answer is a letter (ARC layout)
};

enum class Split { Train, Validation, Test };

// Which families a generator draws from.
enum class FamilyMix { Arith, Chain, Mixed };

enum class OpKind {
  Add,   // value + operand
  Sub,   // value - operand
  Mul,   // value * operand (arith with GeneratorOptions::allow_mul only; operand 2 or 3)
  Copy,  // value unchanged (chain hops "c = b."; operand 0)
};

struct Operation {
  OpKind kind = OpKind::Add;
  int operand = 0;  // amount added, subtracted or multiplied by; 0 for Copy
};

// Difficulty knobs. The defaults keep every value in [0, 99] so that each step is one fact a
// sub-10M-parameter model can learn (numbers up to 199 were not learned: organism/model/README.md).
struct GeneratorOptions {
  int max_value = 99;         // counts, intermediates, answers and choices lie in [0, max_value]
  int max_operand = 20;       // amounts added or subtracted lie in [1, max_operand]
  int min_ops = 1;            // fewest operations (arith) or hops (chain), >= 1
  int max_ops = 4;            // most operations or hops, in [min_ops, 8]
  bool allow_mul = false;     // arith: also "doubles"/"triples" steps (x2, x3)
  int max_distractors = 2;    // chain: up to this many assignments off the chain, [0, 4]
  bool shuffle_chain = true;  // chain: statements in random order instead of definition order
};

// Throws kvsteer::Error(InvalidArgument) naming the first field out of range.
void validate(const GeneratorOptions& options);

struct Problem {
  Family family = Family::Arith;
  int start = 0;                   // arith: the initial count; chain: the root constant
  std::vector<Operation> ops;      // [n_ops], applied in order to start
  std::vector<int> values;         // [n_ops + 1]: values[0] = start, values[i + 1] after ops[i]
  std::string question;            // problem text without choices; also the split key
  std::vector<std::string> steps;  // [n_ops]: one reasoning sentence per operation

  int n_ops() const { return static_cast<int>(ops.size()); }
  int answer() const { return values.back(); }
};

// Result of one operation; does not range-check.
int apply(OpKind kind, int value, int operand);

// values[0] = start, values[i + 1] = apply(ops[i], values[i]); size ops.size() + 1.
std::vector<int> evaluate(int start, const std::vector<Operation>& ops);

// The operator as written in steps: "+", "-", "*" (Copy has none and returns "").
std::string_view op_symbol(OpKind kind);

// Stable lower-case names used in JSONL and on the command line.
std::string_view family_name(Family family);
std::string_view variant_name(Variant variant);
std::string_view split_name(Split split);
std::string_view family_mix_name(FamilyMix mix);

// Parsers for the names above; throw kvsteer::Error(InvalidArgument) listing the valid names.
Variant parse_variant(std::string_view text);
Split parse_split(std::string_view text);
FamilyMix parse_family_mix(std::string_view text);

}  // namespace kvsteer::organism
