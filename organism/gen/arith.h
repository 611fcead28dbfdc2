// Family "arith": multi-step arithmetic word problems in the spirit of GSM8K.
//
// One person starts with a count of one kind of object; each following sentence adds, removes
// or (optionally) multiplies; the question asks for the final count. Each reasoning step is one
// equation on the running total, e.g. "5 + 3 = 8.".
#pragma once

#include <string>
#include <vector>

#include "organism/gen/problem.h"
#include "organism/gen/rng.h"

namespace kvsteer::organism {

// A problem with exactly n_ops operations (1..8), drawn from `rng`. Every value stays in
// [0, options.max_value]; the start value is at least 2 so that "{x} {things}" reads as a plural.
// Expects validated options.
Problem generate_arith(int n_ops, const GeneratorOptions& options, Rng& rng);

// Appends every sentence template and word list the family can emit (placeholders included),
// for building the vocabulary.
void append_arith_lexicon(std::vector<std::string>& texts);

}  // namespace kvsteer::organism
