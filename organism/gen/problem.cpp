#include "organism/gen/problem.h"

#include <string>

#include "kvsteer/error.h"

namespace kvsteer::organism {
namespace {

void require(bool ok, const std::string& field, int value, const std::string& expected) {
  if (!ok) {
    throw Error(ErrorCode::InvalidArgument, "generator option " + field + " = " +
                                                std::to_string(value) +
                                                " is out of range; expected " + expected);
  }
}

[[noreturn]] void throw_unknown(std::string_view what, std::string_view text,
                                std::string_view expected) {
  throw Error(ErrorCode::InvalidArgument, "unknown " + std::string(what) + " '" +
                                              std::string(text) + "'; expected " +
                                              std::string(expected));
}

}  // namespace

void validate(const GeneratorOptions& options) {
  // Four distinct choices and the chain's distractor letters need some room.
  require(options.max_value >= 9 && options.max_value <= 999, "max_value", options.max_value,
          "9..999");
  require(options.max_operand >= 1 && options.max_operand <= options.max_value, "max_operand",
          options.max_operand, "1..max_value");
  require(options.min_ops >= 1 && options.min_ops <= 8, "min_ops", options.min_ops, "1..8");
  require(options.max_ops >= options.min_ops && options.max_ops <= 8, "max_ops", options.max_ops,
          "min_ops..8");
  require(options.max_distractors >= 0 && options.max_distractors <= 4, "max_distractors",
          options.max_distractors, "0..4");
}

int apply(OpKind kind, int value, int operand) {
  switch (kind) {
    case OpKind::Add:
      return value + operand;
    case OpKind::Sub:
      return value - operand;
    case OpKind::Mul:
      return value * operand;
    case OpKind::Copy:
      return value;
  }
  return value;
}

std::vector<int> evaluate(int start, const std::vector<Operation>& ops) {
  std::vector<int> values{start};
  for (const Operation& op : ops) {
    values.push_back(apply(op.kind, values.back(), op.operand));
  }
  return values;
}

std::string_view op_symbol(OpKind kind) {
  switch (kind) {
    case OpKind::Add:
      return "+";
    case OpKind::Sub:
      return "-";
    case OpKind::Mul:
      return "*";
    case OpKind::Copy:
      return "";
  }
  return "";
}

std::string_view family_name(Family family) { return family == Family::Arith ? "arith" : "chain"; }

std::string_view variant_name(Variant variant) {
  return variant == Variant::Numeric ? "numeric" : "choice";
}

std::string_view split_name(Split split) {
  switch (split) {
    case Split::Train:
      return "train";
    case Split::Validation:
      return "validation";
    case Split::Test:
      return "test";
  }
  return "train";
}

std::string_view family_mix_name(FamilyMix mix) {
  switch (mix) {
    case FamilyMix::Arith:
      return "arith";
    case FamilyMix::Chain:
      return "chain";
    case FamilyMix::Mixed:
      return "mixed";
  }
  return "mixed";
}

Variant parse_variant(std::string_view text) {
  if (text == "numeric") return Variant::Numeric;
  if (text == "choice") return Variant::Choice;
  throw_unknown("variant", text, "numeric or choice");
}

Split parse_split(std::string_view text) {
  if (text == "train") return Split::Train;
  if (text == "validation") return Split::Validation;
  if (text == "test") return Split::Test;
  throw_unknown("split", text, "train, validation or test");
}

FamilyMix parse_family_mix(std::string_view text) {
  if (text == "arith") return FamilyMix::Arith;
  if (text == "chain") return FamilyMix::Chain;
  if (text == "mixed") return FamilyMix::Mixed;
  throw_unknown("family", text, "arith, chain or mixed");
}

}  // namespace kvsteer::organism
