// Contrastive prompt pairs (method.md §1.2): k in-context examples answered with reasoning steps
// (positive) or directly (negative), then the target question and the generation prompt.
#pragma once

#include <cstddef>
#include <set>
#include <string>
#include <vector>

#include <optional>

#include "eval/prompts.h"
#include "eval/traces.h"
#include "kvsteer/model.h"
#include "kvsteer/steering.h"

namespace kvsteer::eval {

// neighbours[i] = indices (into the first-N rows) of target i's k in-context examples, most
// similar first.
using NeighbourMap = std::vector<std::vector<std::size_t>>;

// Deterministic fallback when no map file is given: rank the other rows of the subset by the
// Jaccard similarity of their lower-cased word sets with the target (ties: lower index first)
// and keep the top k. A stand-in for the reference's MiniLM cosine ranking.
NeighbourMap lexical_neighbours(const std::vector<TraceRow>& rows, std::size_t k);

// The lexical similarity behind lexical_neighbours and the few-shot choice of eval: a text's
// lower-cased alphanumeric words, and the Jaccard index of two word sets (0 when both are empty).
std::set<std::string> question_words(const std::string& text);
double jaccard(const std::set<std::string>& a, const std::set<std::string>& b);

// Reads a few-shot map file in the format of fewshot_maps_from_results.json: picks the entry whose
// targets_in_order equal the rows' sources and whose num_fewshot_examples is k. Throws
// Error(Format) naming the available entries when none fits.
NeighbourMap neighbours_from_map_file(const std::string& path, const std::vector<TraceRow>& rows,
                                      std::size_t k);

struct ContrastiveOptions {
  std::string cot_prefix;  // appended after the generation prompt, e.g. "Let's think step by step."
  std::string chat_template;  // override of the model's template ("" = the model's)
  // Render with the reference's template of this family (eval/prompts.h) instead of the model's.
  std::optional<PromptFamily> family;
};

// Answers as in the reference: positive = steps joined by " " + " The answer is X.",
// negative = " The answer is X." (with the leading space).
std::string positive_answer(const TraceRow& row);
std::string negative_answer(const TraceRow& row);

// Chat messages of the positive and negative prompt for target i.
std::vector<ChatMessage> contrastive_messages(const std::vector<TraceRow>& rows,
                                              const std::vector<std::size_t>& neighbours,
                                              std::size_t target, bool positive);

// Renders and tokenizes every pair (Model::tokenize_prompt: the BOS rule of every prompt).
std::vector<ContrastivePair> build_contrastive_pairs(const Model& model,
                                                     const std::vector<TraceRow>& rows,
                                                     const NeighbourMap& neighbours,
                                                     const ContrastiveOptions& options);

}  // namespace kvsteer::eval
