#include "eval/scoring.h"

#include <algorithm>
#include <cctype>
#include <regex>
#include <vector>

namespace kvsteer::eval {
namespace {

// The reference's multiple-choice cascade (filters.py PATTERNS["multiple_choice"]), in order.
// Only change: escapes inside the lookahead classes (`[\.\,\;\:\s]`) are written without the
// redundant backslashes, which ECMAScript does not accept for ',' ';' ':'; same character set.
//
// Pattern 3 is matched by hand (match_pattern3), not by std::regex: its final lookahead
// `(?![^A-E]*\b[A-E]\b)` recurses once per character in libstdc++ and overflowed an 8 MiB stack
// at ~30k characters. The table keeps its text as the specification; the slot is not compiled.
//
// Reading of pattern 3: after "[Tt]he correct answer is" (word boundary before it), an optional
// ':' and spaces, a lazy run of at most 50 characters none of which starts "not", "n't",
// "incorrect", "wrong", "and", "or", "combination", "all of", ',' or ';' (substrings count:
// "therefore" contains "or" and blocks the run), then a lone capital A-E. The final lookahead
// rejects that letter when another lone capital A-E can be reached after it over characters
// that are not capital A-E, so the search for "another lone letter" stops at the first capital
// A-E of any word ("B. Dogs like C" keeps B; "B. D is close" rejects B, and the lazy run goes on
// to take D). The first letter that passes is the match.
constexpr const char* kChoicePatterns[] = {
    R"([Tt]he correct choice is:?\s*([A-E])\b)",
    R"([Tt]he correct answer is:?\s*([A-E])\b)",
    R"(\b[Tt]he correct answer is:?\s*(?:(?!not|n't|incorrect|wrong|and|or|combination|all of|[,;]).){0,50}?\b([A-E])\b(?![^A-E]*\b[A-E]\b))",
    R"(\b[Tt]he best answer is:?\s*([A-E])(?:\b|(?=[.,;:\s]|$)))",
    R"([Tt]he correct choice is option:?\s*([A-E])(?:\b|(?=[.,;:\s]|$)))",
    R"(\b[Tt]he final answer is:?\s*([A-E])(?:\b|(?=[.,;:\s]|$)))",
    R"([Tt]he answer is:?\s*([A-E])\b)",
    R"([Ff]inal answer is:?\s*([A-E])(?:\b|(?=[.,;:\s]|$)))",
    R"([Tt]he best answer is option:?\s*([A-E])(?:\b|(?=[.,;:\s]|$)))",
    R"([Tt]he correct choice is:?\s*(?:\n\s*)*Choice\s+([A-E])\s*:)",
    R"([Aa]nswer:\s*([A-E])\b)",
    R"(^([A-E])\s*:)",
};
constexpr int kNumChoicePatterns = static_cast<int>(std::size(kChoicePatterns));
constexpr std::size_t kPattern3Index = 2;

// The reference's multi/none pattern (Filter.incorrect_pattern, IGNORECASE):
//   \b(none|no correct|no answer|no option|none of the (?:above|choices|options)|
//      (?:options?|choices?)\s+[A-E](?:\s*(?:,|or|and)\s*[A-E])+|
//      [A-E](?:\s*(?:,|or|and)\s*[A-E])+|either\s+[A-E]\s+or\s+[A-E]|combination of)\b
// Only whether it matches anywhere matters, and for that "none of the ...", the "options A, B"
// and the "either A or B" alternatives are implied by "none" and by the bare letter chain (their
// letters follow a space, so `\b` holds there). The check is therefore the word alternatives as
// a std::regex plus the letter chain scanned by hand (has_letter_chain): as a std::regex, the
// chain's `+` recursed once per link and overflowed an 8 MiB stack at ~5k links. With
// IGNORECASE, [A-E] also matches a-e, so a word like "core" ("c" "or" "e") counts as "C or E",
// as in the reference.
constexpr const char* kIncorrectWordsPattern =
    R"(\b(none|no correct|no answer|no option|combination of)\b)";

const std::vector<std::regex>& choice_regexes() {
  static const std::vector<std::regex> regexes = [] {
    std::vector<std::regex> out;
    for (std::size_t i = 0; i < std::size(kChoicePatterns); ++i) {
      if (i == kPattern3Index) {
        out.emplace_back();  // matches nothing; match_pattern3 stands in
      } else {
        out.emplace_back(kChoicePatterns[i], std::regex::ECMAScript);
      }
    }
    return out;
  }();
  return regexes;
}

const std::regex& incorrect_regex() {
  static const std::regex re(kIncorrectWordsPattern, std::regex::ECMAScript | std::regex::icase);
  return re;
}

// Byte length of the whitespace character (Python str `\s`) at text[i], or 0.
std::size_t whitespace_len(std::string_view text, std::size_t i) {
  const auto c = static_cast<unsigned char>(text[i]);
  if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) {
    return 1;
  }
  const auto at = [&](std::size_t k) {
    return i + k < text.size() ? static_cast<unsigned char>(text[i + k]) : 0u;
  };
  if (c == 0xc2 && (at(1) == 0x85 || at(1) == 0xa0)) {
    return 2;  // U+0085, U+00A0
  }
  if (c == 0xe1 && at(1) == 0x9a && at(2) == 0x80) {
    return 3;  // U+1680
  }
  if (c == 0xe2 && at(1) == 0x80 &&
      ((at(2) >= 0x80 && at(2) <= 0x8a) || at(2) == 0xa8 || at(2) == 0xa9 || at(2) == 0xaf)) {
    return 3;  // U+2000..U+200A, U+2028, U+2029, U+202F
  }
  if (c == 0xe2 && at(1) == 0x81 && at(2) == 0x9f) {
    return 3;  // U+205F
  }
  if (c == 0xe3 && at(1) == 0x80 && at(2) == 0x80) {
    return 3;  // U+3000
  }
  return 0;
}

std::string collapse_whitespace(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t n = whitespace_len(text, i);
    if (n == 0) {
      out += text[i++];
      continue;
    }
    while (n > 0) {
      i += n;
      n = i < text.size() ? whitespace_len(text, i) : 0;
    }
    out += ' ';
  }
  return out;
}

// Builds a new string rather than calling std::string::replace, which trips g++ 12's
// -Wrestrict false positive.
std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(text.size());
  std::size_t pos = 0;
  for (std::size_t hit; (hit = text.find(from, pos)) != std::string_view::npos;
       pos = hit + from.size()) {
    out += text.substr(pos, hit - pos);
    out += to;
  }
  out += text.substr(pos);
  return out;
}

// ECMAScript `\b` at position i (between text[i - 1] and text[i]); ASCII word characters.
bool is_word(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'; }
bool boundary(std::string_view text, std::size_t i) {
  const bool before = i > 0 && is_word(text[i - 1]);
  const bool after = i < text.size() && is_word(text[i]);
  return before != after;
}
bool is_choice_letter(char c) { return c >= 'A' && c <= 'E'; }
bool lone_letter_at(std::string_view text, std::size_t i) {
  return i < text.size() && is_choice_letter(text[i]) && boundary(text, i) && boundary(text, i + 1);
}

// The negative lookahead inside pattern 3's run: `(?!not|n't|incorrect|wrong|and|or|
// combination|all of|[,;])`, so "therefore" (containing "or") blocks the run.
bool starts_blocked(std::string_view text, std::size_t i) {
  static constexpr std::string_view kBlocked[] = {"not", "n't",         "incorrect", "wrong", "and",
                                                  "or",  "combination", "all of",    ",",     ";"};
  const std::string_view rest = text.substr(i);
  for (std::string_view b : kBlocked) {
    if (rest.substr(0, b.size()) == b) {
      return true;
    }
  }
  return false;
}

// `(?![^A-E]*\b[A-E]\b)` after a letter: [^A-E]* cannot pass a capital A-E, so the only
// candidate is the first capital A-E from `from` on. True when it is lone (the lookahead fails).
bool later_lone_letter(std::string_view text, std::size_t from) {
  for (std::size_t r = from; r < text.size(); ++r) {
    if (is_choice_letter(text[r])) {
      return lone_letter_at(text, r);
    }
  }
  return false;
}

// Pattern 3 from one start (the 'T'/'t' of the phrase, with `\b` before it): the letter's
// position, or npos. Backtracking `\s*` only moves spaces into the run, reaching no new letter,
// so taking all spaces first and growing the lazy run 0..50 visits candidates in the order the
// regex engine does.
std::size_t pattern3_letter_from(std::string_view text, std::size_t start) {
  constexpr std::string_view kPhrase = "he correct answer is";
  std::size_t q = start + 1 + kPhrase.size();
  if (q < text.size() && text[q] == ':') {
    ++q;
  }
  while (q < text.size() && std::isspace(static_cast<unsigned char>(text[q])) != 0) {
    ++q;
  }
  for (std::size_t k = 0; k <= 50 && q + k < text.size(); ++k) {
    const std::size_t p = q + k;
    if (lone_letter_at(text, p) && !later_lone_letter(text, p + 1)) {
      return p;
    }
    // Grow the run by text[p]: `.` (no line terminator) not starting a blocked word.
    if (text[p] == '\n' || text[p] == '\r' || starts_blocked(text, p)) {
      break;
    }
  }
  return std::string_view::npos;
}

// Pattern 3 over the whole text, non-overlapping left to right like findall; last letter wins.
bool match_pattern3(std::string_view text, std::string* out) {
  constexpr std::string_view kPhrase = "he correct answer is";
  bool found = false;
  std::size_t pos = 0;
  for (std::size_t hit; (hit = text.find(kPhrase, pos + 1)) != std::string_view::npos;) {
    const std::size_t start = hit - 1;
    std::size_t letter = std::string_view::npos;
    if (start >= pos && (text[start] == 'T' || text[start] == 't') && boundary(text, start)) {
      letter = pattern3_letter_from(text, start);
    }
    if (letter == std::string_view::npos) {
      pos = hit;
      continue;
    }
    *out = std::string(1, text[letter]);
    found = true;
    pos = letter + 1;
  }
  return found;
}

// Stores group 1 of the last non-overlapping match of `re` in `text` in *out; false if none.
bool last_group(const std::string& text, const std::regex& re, std::string* out) {
  bool found = false;
  for (std::sregex_iterator it(text.begin(), text.end(), re), end; it != end; ++it) {
    *out = (*it)[1].str();
    found = true;
  }
  return found;
}

bool is_letter_icase(char c) { return (c >= 'A' && c <= 'E') || (c >= 'a' && c <= 'e'); }

std::size_t skip_whitespace(std::string_view text, std::size_t i) {
  for (std::size_t n; i < text.size() && (n = whitespace_len(text, i)) > 0;) {
    i += n;
  }
  return i;
}

// Length of `\s*(?:,|or|and)\s*` (case-insensitive) at text[i], or 0.
std::size_t separator_len(std::string_view text, std::size_t i) {
  std::size_t j = skip_whitespace(text, i);
  const auto word_at = [&](std::string_view w) {
    if (text.size() - j < w.size()) {
      return false;
    }
    for (std::size_t k = 0; k < w.size(); ++k) {
      if (std::tolower(static_cast<unsigned char>(text[j + k])) != w[k]) {
        return false;
      }
    }
    return true;
  };
  if (j < text.size() && text[j] == ',') {
    j += 1;
  } else if (word_at("or")) {
    j += 2;
  } else if (word_at("and")) {
    j += 3;
  } else {
    return 0;
  }
  return skip_whitespace(text, j) - i;
}

// `\b[A-E](?:\s*(?:,|or|and)\s*[A-E])+\b`, case-insensitive, anywhere in text. Every step of
// the chain is forced (whitespace, separator and letter never share a first character), so a
// match exists iff some chain of 1+ links from a letter with `\b` before it ends at a `\b`.
bool has_letter_chain(std::string_view text) {
  for (std::size_t s = 0; s < text.size(); ++s) {
    if (!is_letter_icase(text[s]) || !boundary(text, s)) {
      continue;
    }
    std::size_t pos = s + 1;
    for (std::size_t sep; (sep = separator_len(text, pos)) > 0;) {
      if (pos + sep >= text.size() || !is_letter_icase(text[pos + sep])) {
        break;
      }
      pos += sep + 1;
      if (boundary(text, pos)) {
        return true;
      }
    }
  }
  return false;
}

// From the last occurrence of the extraction phrase on, or empty when it does not occur.
std::string_view extraction_tail(std::string_view text) {
  const auto pos = text.rfind(kExtractionPhrase);
  return pos == std::string_view::npos ? std::string_view{} : text.substr(pos);
}

// The reference's multi/none check, run only when the extraction phrase occurs.
bool tail_is_multi_or_none(std::string_view text) {
  const std::string tail(extraction_tail(text));
  return !tail.empty() && (std::regex_search(tail, incorrect_regex()) || has_letter_chain(tail));
}

std::string choice_fallback(std::string_view preprocessed) {
  return std::string(tail_is_multi_or_none(preprocessed) ? kIncorrectAnswer : kInvalidAnswer);
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool in_number_class(char c) { return is_digit(c) || c == '$' || c == '.' || c == ','; }

std::size_t span_len(std::string_view text, std::size_t i, bool (*pred)(char)) {
  std::size_t n = 0;
  while (i + n < text.size() && pred(text[i + n])) {
    ++n;
  }
  return n;
}

// Length of the match of `(-?[$0-9.,]{2,})|(-?[0-9]+)` starting exactly at text[i], or 0.
// Both alternatives are greedy, so the first one takes the whole class run when it has 2+
// characters; otherwise the second takes a lone digit. A '-' never belongs to the class, so
// without the sign neither alternative can start at a '-'.
std::size_t number_match_at(std::string_view text, std::size_t i) {
  const std::size_t sign = text[i] == '-' ? 1 : 0;
  const std::size_t run = span_len(text, i + sign, in_number_class);
  if (run >= 2) {
    return sign + run;
  }
  const std::size_t digits = span_len(text, i + sign, is_digit);
  return digits > 0 ? sign + digits : 0;
}

std::string lower_ascii(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

// GSM8K without any number: the reference's fallback with the question passed (compute_metrics
// passes the input for GSM8K), minus the choice-text match, which cannot yield a number.
std::string gsm8k_fallback(std::string_view response) {
  const std::string_view tail = extraction_tail(response);
  const std::string text = lower_ascii(tail.empty() ? response : tail);
  for (std::string_view neg : {"not", "n't", "incorrect", "wrong"}) {
    if (text.find(neg) != std::string::npos) {
      return std::string(kIncorrectAnswer);
    }
  }
  return std::string(tail_is_multi_or_none(response) ? kIncorrectAnswer : kInvalidAnswer);
}

std::string strip_ascii(std::string_view text) {
  const auto b = text.find_first_not_of(" \t\r\n\f\v");
  if (b == std::string_view::npos) {
    return {};
  }
  const auto e = text.find_last_not_of(" \t\r\n\f\v");
  return std::string(text.substr(b, e - b + 1));
}

}  // namespace

std::string extract_gsm8k_answer(std::string_view response) {
  std::string_view last;
  bool found = false;
  std::size_t i = 0;
  while (i < response.size()) {
    const std::size_t n = number_match_at(response, i);
    if (n == 0) {
      ++i;
      continue;
    }
    last = response.substr(i, n);
    found = true;
    i += n;
  }
  if (!found) {
    return gsm8k_fallback(response);
  }
  std::string out;
  for (char c : last) {
    if (c != ',' && c != '.' && c != '$') {
      out += c;
    }
  }
  return out;
}

std::string gsm8k_target(std::string_view answer_field) {
  const auto pos = answer_field.rfind("#### ");
  const std::string_view raw =
      pos == std::string_view::npos ? answer_field : answer_field.substr(pos + 5);
  std::string out;
  for (char c : raw) {
    if (c != ',') {
      out += c;
    }
  }
  return strip_ascii(out);
}

std::string preprocess_choice_text(std::string_view text) {
  std::string out(text);
  std::replace(out.begin(), out.end(), '\n', ' ');
  std::replace(out.begin(), out.end(), '-', ' ');
  out.erase(std::remove(out.begin(), out.end(), '('), out.end());
  out.erase(std::remove(out.begin(), out.end(), ')'), out.end());
  out = replace_all(out, "**", " ");
  return collapse_whitespace(out);
}

ChoiceMatch match_choice(std::string_view continuation) {
  const std::string text = preprocess_choice_text(continuation);
  const auto& regexes = choice_regexes();
  for (int p = 0; p < kNumChoicePatterns; ++p) {
    std::string letter;
    const auto i = static_cast<std::size_t>(p);
    const bool found =
        i == kPattern3Index ? match_pattern3(text, &letter) : last_group(text, regexes[i], &letter);
    if (found) {
      return {strip_ascii(letter), p + 1};
    }
  }
  return {choice_fallback(text), 0};
}

std::string extract_last_letter(std::string_view continuation) {
  const std::string text = preprocess_choice_text(continuation);
  const auto pos = text.find_last_of("ABCDE");
  if (pos != std::string::npos) {
    return std::string(1, text[pos]);
  }
  return choice_fallback(text);
}

std::string organism_choice_answer(std::string_view response) {
  constexpr std::string_view kAnswer = "The answer is ";
  for (std::size_t at = response.rfind(kAnswer); at != std::string_view::npos;
       at = at == 0 ? std::string_view::npos : response.rfind(kAnswer, at - 1)) {
    const std::size_t letter = at + kAnswer.size();
    if (letter >= response.size() || response[letter] < 'A' || response[letter] > 'D') {
      continue;
    }
    const bool ends = letter + 1 == response.size() ||
                      !std::isalpha(static_cast<unsigned char>(response[letter + 1]));
    if (ends) {
      return std::string(1, response[letter]);
    }
  }
  return "";
}

bool is_invalid(const std::string& extracted) { return extracted == kInvalidAnswer; }

bool is_fallback(const std::string& extracted) {
  return extracted == kInvalidAnswer || extracted == kIncorrectAnswer;
}

bool is_correct(const std::string& extracted, const std::string& target) {
  return extracted == target;
}

std::string_view cut_at_extraction_phrase(std::string_view response) {
  const auto pos = response.find(kExtractionPhrase);
  return pos == std::string_view::npos ? response : response.substr(0, pos);
}

std::string forced_choice_input(std::string_view input, std::string_view response) {
  std::string out(input);
  out += cut_at_extraction_phrase(response);
  out += kExtractionPhrase;
  return out;
}

}  // namespace kvsteer::eval
