// Contrastive pairs written out by the user (a JSONL file), for steering towards any behaviour the
// paper's traces do not hold: `kvsteer extract --pairs-file` and kvsteer.extract(pairs_file=...)
// read it through this one reader.
//
// Each non-empty line is an object {"positive": SIDE, "negative": SIDE}; other keys are ignored.
// A SIDE is either
// - a string: the user turn, rendered with the chat template and its generation prompt as
//   `kvsteer generate -p` renders it (with `raw`, tokenized as it is), or
// - a list of {"role": "system"|"user"|"assistant", "content": string} messages, rendered with
//   the template and its generation prompt (refused with `raw`).
// The cot_prefix, when given, follows the rendered text of both sides, as in a traces extraction.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "eval/trace_extraction.h"
#include "kvsteer/model.h"
#include "kvsteer/steering.h"

namespace kvsteer::eval {

struct PairsFileExtraction {
  std::string path;
  std::size_t n_pairs = 0;  // the first n pairs; 0: every pair of the file
  bool raw = false;
  std::string prompt_family;  // as TraceExtraction's
  std::string chat_template;
  std::string cot_prefix;
};

struct PairsFromFile {
  ContrastiveSet set;              // traces_sha256 holds the pairs file's hash
  std::vector<std::size_t> lines;  // the file line of each pair, for messages about it
};

// Reads, renders and tokenizes (Model::tokenize_prompt: the BOS rule of every prompt) the pairs.
// Throws Error(NotFound) for a missing file, Error(Format) naming the line for invalid JSON, a
// missing or mistyped side, an empty side, a message without a known role or a string content, or
// a file without pairs; Error(InvalidArgument) for n_pairs above the file's count and for message
// lists with `raw`.
PairsFromFile contrastive_set_from_pairs_file(const Model& model, const PairsFileExtraction& x);

// The indices of the pairs whose positive and negative prompts hold different tokens at
// `position` (as extraction resolves it: negative counts from the end). Extraction reads the
// cached rows there, so such a pair's difference carries the two tokens' own rows besides what
// the contexts make of them: the paper's pairs end alike (the same question and generation
// prompt). Positions outside a prompt are left to extraction to refuse.
std::vector<std::size_t> pairs_differing_at(std::span<const ContrastivePair> pairs, Pos position);

// Records how a vector read at `position` from a pairs file was made (the command line that makes
// it again, the file's hash, the template), as record_provenance does for traces.
void record_pairs_file_provenance(SteeringVector& vector, const PairsFileExtraction& x,
                                  const ContrastiveSet& set, Pos position, std::uint32_t parallel,
                                  std::uint32_t n_batch);

}  // namespace kvsteer::eval
