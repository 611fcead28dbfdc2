// `kvsteer organism check`: the figures the organism must show (organism/model/README.md), measured
// with libllama on the held-out test split (greedy): accuracy, reasoning rate and well-formed rate
// per prompting mode, with and without the paper's offset token, per variant and number of
// operations; and the steerability diagnostic (per-layer norm of the mean contrastive K/V
// difference, relative to the mean row norm).
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kvsteer/model.h"
#include "organism/gen/dataset.h"
#include "organism/gen/mixture.h"

namespace kvsteer::organism {

// How the question is put to the model.
enum class PromptMode {
  ZeroShot,         // the question alone (the model's default: a direct answer)
  FewShotReasoned,  // k examples answered with steps, then the question
  FewShotDirect,    // k examples answered directly, then the question
  ZeroShotCot,      // the question; the assistant turn starts with "Let's think step by step."
};
const char* prompt_mode_name(PromptMode mode);

// The parsed response of the organism.
struct ResponseParse {
  bool well_formed = false;  // ends its answer with "The answer is X." (X a number or A-D)
  bool reasoning = false;    // at least one step ("... = N.") before "The answer is"
  int n_steps = 0;           // sentences with " = " before the answer
  std::string answer;        // X of the last "The answer is X", "" when none
};
ResponseParse parse_response(std::string_view response);

// One line of a choice scan in a response: "B: 64 vs 61 no." -> {'B', 64, 61, false}.
struct ScanLine {
  char label = 0;
  int value = 0;      // the value restated for the label
  int reference = 0;  // the value it is compared with (the computed answer)
  bool yes = false;
};
// Every "L: V vs R yes." / "L: V vs R no." in `response` (L an upper-case letter after a space, a
// newline or the start), in order.
std::vector<ScanLine> parse_choice_scan(std::string_view response);
// Whether `scan` restates `choices` faithfully, judges each line right (yes iff V == R), says
// "yes" on its last line only, and `answer` is that line's label (see RunTally in check.cpp).
bool choice_scan_consistent(const std::vector<ScanLine>& scan, const ChoiceSet& choices,
                            const std::string& answer);

// Chat messages of `item` under `mode` with `examples` as the in-context examples. For
// ZeroShotCot the caller appends kCotPrefix after the generation prompt (cot_prefix()).
std::vector<Message> build_messages(const Item& item, PromptMode mode,
                                    const std::vector<const Item*>& examples);

// The text the assistant turn starts with under `mode` (kCotPrefix or "").
std::string_view cot_prefix(PromptMode mode);

// k examples for test item `index`: train-split items of the same family (and variant), a
// deterministic, distinct set per index. pool holds train items of one variant.
std::vector<const Item*> pick_examples(const std::vector<Item>& pool, const Item& item, int index,
                                       int k);

struct CheckOptions {
  std::string model;
  int n_per_variant = 300;  // test items per variant (numeric, choice)
  uint64_t seed = 7;        // test items and example choice
  int shots = 3;
  int n_pairs = 100;  // contrastive pairs of the diagnostic
  int n_predict = 160;
  int n_parallel = 32;  // sequences decoded together
  int n_threads = 2;
  GeneratorOptions generator;                        // must match the training recipe
  FamilyMix family = FamilyMix::Mixed;               // test and example problems' families
  std::function<void(const std::string&)> progress;  // one line per finished block; may be empty
};

// Runs every mode x offset x variant and the diagnostic; returns the report (see README of
// organism/model for the fields), including "criteria" with each requirement of the card and
// whether it holds.
nlohmann::ordered_json check_organism(const CheckOptions& options);

}  // namespace kvsteer::organism
