// The answer-scoring cascade on arbitrary bytes (responses are model output: any UTF-8, and
// byte-fallback tokens can leave invalid UTF-8): GSM8K's last-number filter, the gold-answer
// reader, the 12-pattern multiple-choice cascade, the last-letter filter, the organism's answer
// sentence and the forced-choice text. Every function must return, and its result must be one of
// the values its contract allows.
#include <cstdlib>
#include <string>

#include "eval/scoring.h"
#include "fuzz_util.h"

namespace {

using namespace kvsteer::eval;

using kvsteer::fuzz::check;

bool is_choice_letter(const std::string& s) { return s.size() == 1 && s[0] >= 'A' && s[0] <= 'E'; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // The regex cascade is quadratic in places; real continuations are a few hundred tokens.
  if (size > 16384) return 0;
  const std::string_view text = kvsteer::fuzz::as_text(data, size);

  const std::string number = extract_gsm8k_answer(text);
  check(is_fallback(number) || number.find_first_of(",$") == std::string::npos,
        "a GSM8K answer keeps ',' or '$'");
  (void)gsm8k_target(text);

  const ChoiceMatch m = match_choice(text);
  check(m.pattern >= 0 && m.pattern <= 12, "pattern number out of range");
  check(m.pattern == 0 ? is_fallback(m.answer) : is_choice_letter(m.answer),
        "a matched pattern gave no letter, or a fallback claims a pattern");
  check(extract_choice(text) == m.answer, "extract_choice differs from match_choice");
  const std::string last = extract_last_letter(text);
  check(is_fallback(last) || is_choice_letter(last), "last_letter gave something else");

  const std::string own = organism_choice_answer(text);
  check(own.empty() || (own.size() == 1 && own[0] >= 'A' && own[0] <= 'D'),
        "organism answer is not A-D");

  const std::string pre = preprocess_choice_text(text);
  check(pre.find('\n') == std::string::npos && pre.find("  ") == std::string::npos,
        "preprocessing left a newline or a double space");

  const std::string_view cut = cut_at_extraction_phrase(text);
  check(cut.size() <= text.size() && text.substr(0, cut.size()) == cut, "cut is not a prefix");
  const std::string forced = forced_choice_input("prompt", text);
  check(forced.size() >= kExtractionPhrase.size(), "forced-choice input lost the phrase");
  (void)is_correct(m.answer, "A");
  return 0;
}
