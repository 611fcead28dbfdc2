// Family "chain": multi-hop variable chains.
//
// "a = 7. b = a + 2. c = b. d = c - 3. What is d?" Answering directly needs one hop per layer of
// depth, more than a tiny model has; each reasoning step is one lookup and at most one small
// addition or subtraction, e.g. "b = a + 2 = 9.".
//
// Distractors are extra constant assignments ("x = 5.") that nothing reads, so the statement
// that reads the current variable is always unique: reasoning forward from the only constant
// that is read by another statement never needs look-ahead.
#pragma once

#include <string>
#include <vector>

#include "organism/gen/problem.h"
#include "organism/gen/rng.h"

namespace kvsteer::organism {

// A chain with exactly n_ops hops (1..8) and 0..options.max_distractors constant distractors,
// drawn from `rng`. Variables are distinct lower-case letters; values stay in
// [0, options.max_value]. Expects validated options.
Problem generate_chain(int n_ops, const GeneratorOptions& options, Rng& rng);

// Appends every template and word the family can emit, for building the vocabulary.
void append_chain_lexicon(std::vector<std::string>& texts);

}  // namespace kvsteer::organism
