// Answer extraction and scoring exactly as the reference implementation does it (method.md §3.3,
// §6 items 12-13; reference `src/evaluation/filters.py` and `evaluator.py` at
// nagyist/cache-steering 583d6c9). Pure string functions: the model calls (the 10-token "\nSo the
// correct choice is" continuation and the 1-token forced choice) live in the harness; this file
// gives them their text pieces.
//
// Regex engine: the multiple-choice cascade uses std::regex (ECMAScript) with the reference's
// Python patterns carried over unchanged in meaning, except pattern 3 and the letter chain of
// the multi/none pattern, which are scanned by hand (as std::regex they made libstdc++'s
// recursive matcher overflow an 8 MiB stack on texts of ~30k characters). The GSM8K
// `last_digit` pattern is scanned by hand too. The whole module was checked against CPython `re`
// running the reference patterns on 140k random texts, with no difference. Known
// differences from Python's `re`: `\b` and `\s` are ASCII-only here (Python's are Unicode-aware),
// so a letter next to a non-ASCII letter ("éB") can count as "lone" here and not there. Whitespace
// collapsing in the preprocessing step does handle the Unicode spaces Python's `\s` knows.
//
// Thread-safe: every function is pure; the compiled patterns are immutable statics.
#pragma once

#include <array>
#include <string>
#include <string_view>

namespace kvsteer::eval {

// The reference's ANSWER_EXTRACTION_PROMPT.
inline constexpr std::string_view kExtractionPhrase = "So the correct choice is";
// Text whose tokens (tokenized alone, no special tokens) are appended at the id level to every
// multiple-choice response before the unsteered 10-token continuation.
inline constexpr std::string_view kExtractionSuffix = "\nSo the correct choice is";
// New tokens of the extraction continuation (greedy, same stop strings).
inline constexpr int kExtractionMaxNewTokens = 10;

// Fallback symbols of the reference filters.
inline constexpr std::string_view kInvalidAnswer = "[invalid]";      // nothing extracted
inline constexpr std::string_view kIncorrectAnswer = "[incorrect]";  // multi/none answer

// Forced choice: the logits are masked to the FIRST token id of each of these strings, each
// tokenized alone without special tokens, in this order (reference `allowed_letters`).
inline constexpr std::array<std::string_view, 10> kForcedChoiceCandidates = {
    "A", " A", "B", " B", "C", " C", "D", " D", " E", "E"};

// --- GSM8K -------------------------------------------------------------------------------------

// `last_digit` filter on the raw response: all non-overlapping matches, left to right, of
// `(-?[$0-9.,]{2,})|(-?[0-9]+)`; the last one, with every ',', '.' and '$' deleted. Quirks kept:
// "18." -> "18", "1,000" -> "1000", "0.5" -> "05", a trailing "..." -> "". With no match:
// "[incorrect]" when the text (after the last extraction phrase, if any) contains "not", "n't",
// "incorrect" or "wrong" (lower-cased), or the multi/none pattern after the extraction phrase;
// else "[invalid]". (The reference's choice-text matching in between cannot return a number, so
// it is skipped.)
std::string extract_gsm8k_answer(std::string_view response);

// GSM8K gold answer: the text after the last "#### " with ',' removed and surrounding ASCII
// whitespace stripped; the whole text (',' removed) when there is no "#### ".
std::string gsm8k_target(std::string_view answer_field);

// --- Multiple choice ---------------------------------------------------------------------------

// Preprocessing of the MC filters, in this order: '\n' -> ' ', '-' -> ' ', delete '(' and ')',
// "**" -> ' ', then every run of whitespace (Python `\s`, Unicode spaces included) -> ' '.
// Nothing is trimmed.
std::string preprocess_choice_text(std::string_view text);

// Result of the 12-pattern cascade.
struct ChoiceMatch {
  std::string answer;  // "A".."E", or kInvalidAnswer / kIncorrectAnswer
  int pattern = 0;     // 1..12: the pattern that decided; 0: none matched (a fallback symbol)
};

// `augmented_extract` filter on the decoded continuation (everything after the prompt: response
// + extraction phrase + 10 tokens). Preprocesses, then tries the 12 patterns in order; the first
// pattern with any match wins and its LAST match is used. Without a match: "[incorrect]" when the
// preprocessed text contains kExtractionPhrase and the part from its last occurrence on matches
// the multi/none pattern (see scoring.cpp), else "[invalid]". The choice-text fallback is skipped,
// as the reference does for MC tasks.
ChoiceMatch match_choice(std::string_view continuation);
inline std::string extract_choice(std::string_view continuation) {
  return match_choice(continuation).answer;
}

// `last_letter` filter (stored by the reference, never reported): the last capital A-E character
// of the preprocessed text, lone or not (the reference pattern is `([A-E])` without `\b`), with
// the same fallback as extract_choice.
std::string extract_last_letter(std::string_view continuation);

// The organism's own answer sentence (organism-choice only; not the reference's rule): the
// letter X of the last "The answer is X" in `response` with X in A-D followed by a non-letter or
// the end, as the organism was trained to write it and `kvsteer organism check` reads it; empty
// when there is none. The reference's extraction continuation appended after an answer the
// organism already gave is text it never saw, and its next letter decided the item.
std::string organism_choice_answer(std::string_view response);

// True for "[invalid]": the items the forced-choice step re-runs.
bool is_invalid(const std::string& extracted);
// True for either fallback symbol.
bool is_fallback(const std::string& extracted);
// The reference's accuracy: exact string equality. A fallback symbol never equals a gold answer,
// and ARC's numeric labels ("1".."4") never equal an extracted letter.
bool is_correct(const std::string& extracted, const std::string& target);

// The response up to (not including) the first kExtractionPhrase; the whole response when the
// phrase does not occur. The continuation's "\n" before the phrase stays in.
std::string_view cut_at_extraction_phrase(std::string_view response);

// Text the forced-choice step re-tokenizes (no special tokens added) and extends by one masked
// token: input + cut_at_extraction_phrase(response) + kExtractionPhrase.
std::string forced_choice_input(std::string_view input, std::string_view response);

}  // namespace kvsteer::eval
