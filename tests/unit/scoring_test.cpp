// Answer extraction and scoring against hand-written cases for every branch of the reference
// filters (method.md §3.3, §6 items 12-13).
#include "eval/scoring.h"

#include <gtest/gtest.h>

#include <string>

namespace kvsteer::eval {
namespace {

// --- GSM8K `last_digit` --------------------------------------------------------------------------

TEST(Scoring, Gsm8kTakesLastNumber) {
  EXPECT_EQ(extract_gsm8k_answer("3 apples and 4 pears make 7 fruits"), "7");
  EXPECT_EQ(extract_gsm8k_answer("She pays 12 dollars.\nThe answer is 18"), "18");
}

TEST(Scoring, Gsm8kTrailingDotIsDropped) {
  EXPECT_EQ(extract_gsm8k_answer("The answer is 18."), "18");
}

TEST(Scoring, Gsm8kCommasAreDeleted) {
  EXPECT_EQ(extract_gsm8k_answer("It costs 1,000 in total"), "1000");
  EXPECT_EQ(extract_gsm8k_answer("The answer is 1,234,567."), "1234567");
}

TEST(Scoring, Gsm8kDecimalPointIsDeletedSoDecimalsNeverMatch) {
  EXPECT_EQ(extract_gsm8k_answer("The answer is 0.5"), "05");
  EXPECT_FALSE(is_correct(extract_gsm8k_answer("The answer is 0.5"), "0.5"));
  EXPECT_EQ(extract_gsm8k_answer("He earns $12.50 per hour"), "1250");
}

TEST(Scoring, Gsm8kDollarSignIsDeleted) {
  EXPECT_EQ(extract_gsm8k_answer("The total is $18"), "18");
  EXPECT_EQ(extract_gsm8k_answer("The total is $1,500.00."), "150000");
}

TEST(Scoring, Gsm8kNegativeNumbers) {
  EXPECT_EQ(extract_gsm8k_answer("The change is -5 degrees"), "-5");  // second alternative
  EXPECT_EQ(extract_gsm8k_answer("The balance is -12.50"), "-1250");  // first alternative
  EXPECT_EQ(extract_gsm8k_answer("--5"), "-5");
  // A minus between numbers starts the next match: "5-3" gives "5" then "-3".
  EXPECT_EQ(extract_gsm8k_answer("5-3"), "-3");
}

TEST(Scoring, Gsm8kSingleSymbolsAreNotNumbers) {
  // A lone '$', '.' or ',' is a class run of 1: no match, so the earlier number stays last.
  EXPECT_EQ(extract_gsm8k_answer("The answer is 42 $ , ."), "42");
  EXPECT_EQ(extract_gsm8k_answer("x 7 y"), "7");
}

TEST(Scoring, Gsm8kEllipsisAfterAnswerGivesEmptyString) {
  // "..." is a run of 2+ class characters and the last match; deleting '.' leaves "".
  EXPECT_EQ(extract_gsm8k_answer("The answer is 18. Hmm..."), "");
  EXPECT_EQ(extract_gsm8k_answer("The answer is 18,,"), "18");
}

TEST(Scoring, Gsm8kWithoutNumberFallsBack) {
  EXPECT_EQ(extract_gsm8k_answer("I give up"), "[invalid]");
  EXPECT_EQ(extract_gsm8k_answer("I don't know"), "[incorrect]");   // "n't"
  EXPECT_EQ(extract_gsm8k_answer("That is WRONG"), "[incorrect]");  // lower-cased
  EXPECT_EQ(extract_gsm8k_answer("Nothing here"), "[incorrect]");   // "not" inside a word
  EXPECT_EQ(extract_gsm8k_answer("So the correct choice is either A or B"), "[incorrect]");
  EXPECT_EQ(extract_gsm8k_answer(""), "[invalid]");
}

TEST(Scoring, Gsm8kTarget) {
  EXPECT_EQ(gsm8k_target("She sells 2 * 600 = 1,200 eggs.\n#### 1,200"), "1200");
  EXPECT_EQ(gsm8k_target("#### -3"), "-3");
  EXPECT_EQ(gsm8k_target("1,000"), "1000");  // trace `solution`
  EXPECT_TRUE(is_correct(extract_gsm8k_answer("The answer is 1,200."), gsm8k_target("#### 1,200")));
}

// --- Multiple choice: preprocessing -----------------------------------------------------------

TEST(Scoring, PreprocessReplacesAndCollapses) {
  EXPECT_EQ(preprocess_choice_text("a\nb-c (d) **e**  f\t\tg"), "a b c d e f g");
  EXPECT_EQ(preprocess_choice_text("*(*x"), " x");                         // "**" after '(' removal
  EXPECT_EQ(preprocess_choice_text(" x\xc2\xa0\xe2\x80\x83y "), " x y ");  // Unicode spaces
}

// --- Multiple choice: each of the 12 patterns ---------------------------------------------------

void expect_choice(const char* text, const char* answer, int pattern) {
  const ChoiceMatch m = match_choice(text);
  EXPECT_EQ(m.answer, answer) << text;
  EXPECT_EQ(m.pattern, pattern) << text;
}

TEST(Scoring, Pattern1CorrectChoiceIs) {
  expect_choice("Plants need light.\nSo the correct choice is B", "B", 1);
  expect_choice("So the correct choice is B.", "B", 1);
}

TEST(Scoring, Pattern2CorrectAnswerIs) { expect_choice("The correct answer is C.", "C", 2); }

TEST(Scoring, Pattern3CorrectAnswerWithinFiftyChars) {
  expect_choice("The correct answer is probably D.", "D", 3);
  expect_choice("I think the correct answer is clearly option B here", "B", 3);
}

TEST(Scoring, Pattern3BlockedWords) {
  for (const char* text :
       {"The correct answer is not B", "The correct answer is isn't B",
        "The correct answer is wrong B", "The correct answer is incorrectly B",
        "The correct answer is maybe A and B", "The correct answer is x or B",
        "The correct answer is a combination B", "The correct answer is all of B",
        "The correct answer is yes, B", "The correct answer is hm; B",
        // "or" inside a word blocks the run too.
        "The correct answer is therefore B"}) {
    expect_choice(text, "[invalid]", 0);
  }
}

TEST(Scoring, Pattern3FiftyCharLimit) {
  const std::string near = "The correct answer is " + std::string(40, 'z') + " B";
  const std::string far = "The correct answer is " + std::string(55, 'z') + " B";
  expect_choice(near.c_str(), "B", 3);
  expect_choice(far.c_str(), "[invalid]", 0);
}

TEST(Scoring, Pattern3NeedsNoLaterLoneLetter) {
  // B is followed by another lone letter, so the lazy run moves on and takes D.
  expect_choice("The correct answer is probably B. D is close.", "D", 3);
  // The search for a later lone letter stops at the first capital A-E ("Dogs"), so B stays.
  expect_choice("The correct answer is probably B. Dogs like C.", "B", 3);
  // Not a lone letter: "Bananas".
  expect_choice("The correct answer is probably Bananas", "[invalid]", 0);
}

TEST(Scoring, Pattern4BestAnswerIs) { expect_choice("The best answer is E", "E", 4); }

TEST(Scoring, Pattern5CorrectChoiceIsOption) {
  expect_choice("The correct choice is option B", "B", 5);
}

TEST(Scoring, Pattern6FinalAnswerIs) { expect_choice("Thus the final answer is C.", "C", 6); }

TEST(Scoring, Pattern7AnswerIs) { expect_choice("The answer is A", "A", 7); }

TEST(Scoring, Pattern8FinalAnswerWithoutThe) {
  expect_choice("My final answer is D", "D", 8);
  expect_choice("Final answer is: B", "B", 8);
}

TEST(Scoring, Pattern9BestAnswerIsOption) { expect_choice("The best answer is option C", "C", 9); }

TEST(Scoring, Pattern10ChoiceLabel) {
  expect_choice("The correct choice is Choice B: apples", "B", 10);
  expect_choice("The correct choice is\n\nChoice A : pears", "A", 10);
}

TEST(Scoring, Pattern11AnswerColon) {
  expect_choice("Answer: B", "B", 11);
  expect_choice("My answer: C", "C", 11);
}

TEST(Scoring, Pattern12LabelAtStart) {
  expect_choice("B: because plants need light", "B", 12);
  expect_choice("E : none", "E", 12);
  expect_choice("Because B: plants", "[invalid]", 0);  // only at the start of the text
}

// --- Multiple choice: cascade semantics ---------------------------------------------------------

TEST(Scoring, LastMatchWinsInsidePattern) {
  expect_choice("So the correct choice is A. Wait.\nSo the correct choice is C", "C", 1);
  expect_choice("The answer is A, no, the answer is D", "D", 7);
}

TEST(Scoring, EarlierPatternBeatsLaterOne) {
  // Pattern 2 decides although pattern 7's match is later in the text.
  expect_choice("The correct answer is B. The answer is A.", "B", 2);
  // Pattern 1 beats pattern 11.
  expect_choice("Answer: A\nSo the correct choice is E", "E", 1);
  expect_choice("So the correct choice is E. Answer: A", "E", 1);
}

TEST(Scoring, FirstLetterOfPhraseIsCaseFree) {
  expect_choice("so the correct choice is B", "B", 1);
  expect_choice("the best answer is D", "D", 4);
  expect_choice("final answer is A", "A", 8);
  expect_choice("answer: C", "C", 11);
  // Only the first letter: the rest of the phrase is case-sensitive, and so is the letter.
  expect_choice("So THE correct choice is B", "[invalid]", 0);
  expect_choice("So the correct choice is b", "[invalid]", 0);
}

TEST(Scoring, OptionalColonAfterPhrase) {
  expect_choice("So the correct choice is: D", "D", 1);
  expect_choice("So the correct choice is:D", "D", 1);
  expect_choice("The best answer is: A", "A", 4);
}

TEST(Scoring, MarkdownBold) {
  expect_choice("So the correct choice is **B**", "B", 1);
  expect_choice("**Answer:** C", "C", 11);
}

TEST(Scoring, Parentheses) {
  expect_choice("So the correct choice is (B)", "B", 1);
  expect_choice("(C): the moon", "C", 12);
}

TEST(Scoring, Hyphens) {
  // "- B" becomes " B" and collapses; without the replacement pattern 1 would fail.
  expect_choice("So the correct choice is\n- B", "B", 1);
  expect_choice("So the correct choice is B-cells", "B", 1);
}

TEST(Scoring, LetterMustBeLone) {
  expect_choice("So the correct choice is Bananas", "[invalid]", 0);
}

TEST(Scoring, PhiEndTokenStaysInText) {
  expect_choice("It is E.<|end|>\nSo the correct choice is E", "E", 1);
}

// --- Multiple choice: fallbacks ---------------------------------------------------------------

TEST(Scoring, MultiOrNoneAfterPhraseIsIncorrect) {
  for (const char* text :
       {"So the correct choice is none of the above", "So the correct choice is no answer",
        "So the correct choice is both A and C", "So the correct choice is either B or D",
        "So the correct choice is options A, B", "So the correct choice is a combination of them",
        "So the correct choice is that no option fits",
        // Case-insensitive letters: "core" reads as "c or e", as in the reference.
        "So the correct choice is the core idea"}) {
    expect_choice(text, "[incorrect]", 0);
  }
}

TEST(Scoring, NothingMatchedIsInvalid) {
  expect_choice("So the correct choice is unclear", "[invalid]", 0);
  // The multi/none check needs the extraction phrase.
  expect_choice("none of the above", "[invalid]", 0);
  expect_choice("", "[invalid]", 0);
}

TEST(Scoring, MultiOrNoneCheckUsesTextAfterLastPhrase) {
  expect_choice("So the correct choice is none. So the correct choice is unclear", "[invalid]", 0);
  expect_choice("None fits. So the correct choice is unclear", "[invalid]", 0);
}

TEST(Scoring, NumericArcLabelsAreNeverExtracted) {
  expect_choice("So the correct choice is 1", "[invalid]", 0);
  expect_choice("The answer is 3", "[invalid]", 0);
  EXPECT_FALSE(is_correct(extract_choice("So the correct choice is 1"), "1"));
  for (std::string_view c : kForcedChoiceCandidates) {
    EXPECT_EQ(c.find_first_of("0123456789"), std::string_view::npos);
  }
}

TEST(Scoring, LongResponseDoesNotOverflow) {
  std::string text;
  while (text.size() < 8000) text += "the answer might be this or that, hmm; ";
  text += "\nSo the correct choice is C";
  expect_choice(text.c_str(), "C", 1);
}

TEST(Scoring, LongTailAfterPattern3LetterDoesNotOverflow) {
  // Pattern 3's "no later lone letter" lookahead scans the whole lower-case tail; as a
  // std::regex it overflowed an 8 MiB stack at ~30k characters.
  std::string text = "The correct answer is probably B ";
  while (text.size() < 60000) text += "the answer might be this or that, hmm; ";
  expect_choice(text.c_str(), "B", 3);
}

TEST(Scoring, LongLetterChainDoesNotOverflow) {
  // As a std::regex, the multi/none chain's `+` overflowed an 8 MiB stack at ~5k links.
  std::string text = "So the correct choice is x ";
  for (int i = 0; i < 10000; ++i) text += "A, B, ";
  expect_choice(text.c_str(), "[incorrect]", 0);
  expect_choice("So the correct choice is x Bor C", "[incorrect]", 0);  // "or" needs no spaces
}

TEST(Scoring, LastLetterFilter) {
  EXPECT_EQ(extract_last_letter("So the correct choice is Bananas"), "B");  // not lone
  EXPECT_EQ(extract_last_letter("A or maybe Dogs"), "D");
  EXPECT_EQ(extract_last_letter("nothing here"), "[invalid]");
  EXPECT_EQ(extract_last_letter("So the correct choice is none"), "[incorrect]");
}

TEST(Scoring, FallbackPredicates) {
  EXPECT_TRUE(is_invalid("[invalid]"));
  EXPECT_FALSE(is_invalid("[incorrect]"));
  EXPECT_TRUE(is_fallback("[incorrect]"));
  EXPECT_FALSE(is_fallback("A"));
  EXPECT_TRUE(is_correct("A", "A"));
  EXPECT_FALSE(is_correct("[invalid]", "A"));
}

// --- Forced choice pieces ---------------------------------------------------------------------

TEST(Scoring, ExtractionSuffixAndCandidates) {
  EXPECT_EQ(kExtractionSuffix, "\nSo the correct choice is");
  EXPECT_EQ(kExtractionSuffix.substr(1), kExtractionPhrase);
  ASSERT_EQ(kForcedChoiceCandidates.size(), 10u);
  EXPECT_EQ(kForcedChoiceCandidates[0], "A");
  EXPECT_EQ(kForcedChoiceCandidates[1], " A");
  EXPECT_EQ(kForcedChoiceCandidates[8], " E");
  EXPECT_EQ(kForcedChoiceCandidates[9], "E");
}

TEST(Scoring, CutAtFirstExtractionPhrase) {
  EXPECT_EQ(
      cut_at_extraction_phrase("Steps.\nSo the correct choice is B. So the correct choice is"),
      "Steps.\n");
  EXPECT_EQ(cut_at_extraction_phrase("no phrase"), "no phrase");
}

TEST(Scoring, ForcedChoiceInput) {
  EXPECT_EQ(forced_choice_input("<prompt>", "Steps.\nSo the correct choice is the"),
            "<prompt>Steps.\nSo the correct choice is");
  EXPECT_EQ(forced_choice_input("<p>", "Steps."), "<p>Steps.So the correct choice is");
  // After forcing, the re-decoded text ends with the letter and pattern 1 decides.
  expect_choice("Steps.\nSo the correct choice is B", "B", 1);
}

TEST(Scoring, OrganismChoiceAnswerIsItsLastAnswerSentence) {
  EXPECT_EQ(
      organism_choice_answer(" 32 + 3 = 35. A: 29 vs 35 no. B: 35 vs 35 yes. The answer is B."),
      "B");
  EXPECT_EQ(organism_choice_answer("The answer is A. The answer is C."), "C");
  EXPECT_EQ(organism_choice_answer("The answer is D"), "D");
  EXPECT_EQ(organism_choice_answer("The answer is C. The answer is Bob."), "C") << "not a letter";
  EXPECT_EQ(organism_choice_answer("The answer is E."), "") << "the organism has four choices";
  EXPECT_EQ(organism_choice_answer("A: 3 vs 3 yes."), "");
  EXPECT_EQ(organism_choice_answer(""), "");
  EXPECT_EQ(organism_choice_answer("the answer is B."), "") << "the sentence as trained";
}

}  // namespace
}  // namespace kvsteer::eval
