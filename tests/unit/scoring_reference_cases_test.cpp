// Differential cases: random texts over the phrases, letters and punctuation the filters react
// to, with the answers the reference filters give. Generated once (seed 11, 10-15 cases per
// cascade outcome: each of the 12 patterns, "[invalid]" and "[incorrect]") by running the
// reference's patterns (cache-steering src/evaluation/filters.py, PATTERNS and
// Filter.incorrect_pattern, with its preprocessing and fallbacks) under CPython 3.11.7 `re`.
// gsm8k is the `last_digit` filter; without any number it uses the fallback documented in
// scoring.h. last_letter is the `([A-E])` filter.
#include <gtest/gtest.h>

#include "eval/scoring.h"

namespace kvsteer::eval {
namespace {

struct ReferenceCase {
  const char* input;
  const char* choice;  // augmented_extract
  int pattern;         // 1..12, 0 = fallback
  const char* gsm8k;   // last_digit
  const char* last_letter;
};

constexpr ReferenceCase kCases[] = {
    {"- not zz\nSo the correct choice is   \n, both none\nnon't C\ntherefore ", "[incorrect]", 0,
     "[incorrect]", "C"},
    {"option\nSo the correct choice is no\n** option", "[incorrect]", 0, "[invalid]",
     "[incorrect]"},
    {",\nSo the correct choice is\n,18andn't core . B 1,000either the\n", "[incorrect]", 0, "1000",
     "B"},
    {"0.5option\n0.5\n, the either$So the correct choice isprobably\nDogs(    ;none none B",
     "[incorrect]", 0, "05", "B"},
    {"not bestoptions...The correct answer is So the correct choice is optionChoice "
     "B:\ncombination of\nAAfinal\nno\n$ ",
     "[incorrect]", 0, "", "A"},
    {"Final The answer is Choice B: no B So the correct choice is\nSo the correct choice is the "
     "correct answer isis The best answer is x core",
     "[incorrect]", 0, "[incorrect]", "B"},
    {"B So The answer is or\nE\nThe correct choice is The best answer is\nSo the correct choice is "
     "options combination of\n$ 18\nbest\nAnoneThe best answer is ",
     "[incorrect]", 0, "18", "A"},
    {"option ...not So the correct choice ischoice core not\nzz optionsThe correct answer is, ",
     "[incorrect]", 0, "", "[incorrect]"},
    {"Choice isESo the correct choice is\n-50.5\nnone choice\n... all of\n", "[incorrect]", 0, "",
     "E"},
    {"So the correct choice is\na\ncore\nThe correct answer is ", "[incorrect]", 0, "[incorrect]",
     "[incorrect]"},
    {"all of   \nA CSo the correct choice is The best answer is bothThe correct choice is no The "
     "answer is\nbestbothis:\ncore ",
     "[incorrect]", 0, "[incorrect]", "C"},
    {"So the correct choice is\nnoneThe best answer is\ncombination of\n $The final answer "
     "is\nChoice B:\nx ",
     "[incorrect]", 0, "[incorrect]", "B"},
    {"all of. probably So the correct choice is core ", "[incorrect]", 0, "[incorrect]",
     "[incorrect]"},
    {"Choice\noption So the correct choice ischoice\nthe**core option\n", "[incorrect]", 0,
     "[incorrect]", "C"},
    {"therefore( Final is: correct So the correct choice is\n-5\nprobably all of "
     "Answer:combination of",
     "[incorrect]", 0, "-5", "A"},
    {"final\n", "[invalid]", 0, "[invalid]", "[invalid]"},
    {"... ,eitherchoice Choice\nChoice$ correct none ", "[invalid]", 0, "", "C"},
    {"the final answer is\n-5\n", "[invalid]", 0, "-5", "[invalid]"},
    {"notzz \n", "[invalid]", 0, "[incorrect]", "[invalid]"},
    {"... ", "[invalid]", 0, "", "[invalid]"},
    {"all of the The best answer is\ne the correct answer is ", "[invalid]", 0, "[invalid]",
     "[invalid]"},
    {"core\nAnswer:\ncore The- ", "[invalid]", 0, "[invalid]", "A"},
    {"and\noption D The correct choice isthe**\nbest ", "[invalid]", 0, "[invalid]", "D"},
    {"n't the18\n", "[invalid]", 0, "18", "[invalid]"},
    {"The answer is $ Eeither or ", "[invalid]", 0, "[invalid]", "E"},
    {"$\nfinal\nis: Choice Choice B:combination of\n,\n", "[invalid]", 0, "[invalid]", "B"},
    {"** So either\nbestnone correct .\nthe correct answer is : e18 FinalC\nx answer the final "
     "answer is",
     "[invalid]", 0, "18", "C"},
    {"answer best\nSo  best the correct answer isis zzfinal\nbest\n", "[invalid]", 0, "[invalid]",
     "[invalid]"},
    {"So the correct choice is ", "[invalid]", 0, "[invalid]", "[invalid]"},
    {"1,000 best Final ,\nx\nThe correct answer is\nThe best answer is option \n The answer is "
     "either So the correct choice is\n, ",
     "[invalid]", 0, "1000", "[invalid]"},
    {"The correct choice is\nSo the correct choice is A\nboth\ncore\nSo the correct choice is "
     "1,000 Choice B: the correct answer is\n) is:E\n",
     "A", 1, "1000", "E"},
    {"So the correct choice is\n**\nD is:\nThe best answer is\ncorrect", "D", 1, "[invalid]", "D"},
    {"best answerthe final answer is\nn't e\nSo the correct choice is\n\nn't core The correct "
     "answer is    core So the correct choice is C",
     "C", 1, "[invalid]", "C"},
    {"DSo the correct choice is\nnoneoption. )18\nSo the correct choice is Dogs So the correct "
     "choice is\noptiona\nThe correct choice is A   both\n",
     "A", 1, "18", "A"},
    {"final answer is So the correct choice is E The correct answer is combination of", "E", 1,
     "[incorrect]", "E"},
    {"  So the correct choice is C\nis:So the correct choice is   \nFinal\n:\nChoice 18 all of is "
     "zzbest both ",
     "C", 1, "18", "C"},
    {"18 The answer is So the correct choice is A\noptions ", "A", 1, "18", "A"},
    {"So the correct choice is1,000 Choice B:\nnot So the correct choice isE\nB probably\nthe "
     "combination of .\n-\noptions both (",
     "E", 1, "1000", "B"},
    {"The correct choice is( A zz is combination of\nchoicebest", "A", 1, "[invalid]", "A"},
    {". not is answer\ncore\nThe correct choice is\nC\ncombination of A -5The correct choice "
     "iscorrect no .",
     "C", 1, "-5", "A"},
    {"The best answer is\nChoice B: and\nand the correct answer isD is\nthe correct answer is the "
     ": or choice\n  \nnot **\n",
     "D", 2, "[incorrect]", "D"},
    {"corebest final\nC\nthe correct answer is\nA\n  Answer:Answer: -5Answer: option\n   A (\n... ",
     "A", 2, "", "A"},
    {"The answer is **So the correct choice isnot the correct answer isB (e the final answer isall "
     "of correctthe final answer is\nSo Answer:)\n\n",
     "B", 2, "[incorrect]", "A"},
    {"So the correct choice is\n, . combination of The correct answer isE\nChoice  \n", "E", 2,
     "[incorrect]", "C"},
    {"The correct answer is E", "E", 2, "[invalid]", "E"},
    {"option : option\nThe correct answer is C The answer is\n1,000\n; C none 1,000 optionsoptions "
     "or ",
     "C", 2, "1000", "C"},
    {"The correct answer is E\na is\nthe final answer is)E\nSo the correct choice is Answer: "
     "option thereforeD a ",
     "E", 2, "[invalid]", "D"},
    {",\n$\nSo the correct choice isthe\nthe correct answer is\nD\ncombination of ...\nno : final "
     "answer is none correctc",
     "D", 2, "", "D"},
    {"therefore not the final answer isB The correct answer is the correct answer isD The best "
     "answer is ) The best answer is the ",
     "D", 2, "[incorrect]", "D"},
    {"option The correct answer is**\n\nB Aanswer Choice\nFinalDogs\nC\n**\nE\n", "B", 2,
     "[invalid]", "E"},
    {", a\nThe correct answer is  \nThe best answer isnone B\nC The correct answer is The ... "
     "Final\n-\n",
     "C", 3, "", "C"},
    {"So the correct choice is So the correct choice is the correct answer is final answer is best "
     "B $\n",
     "B", 3, "[invalid]", "B"},
    {"the correct answer is The B\n", "B", 3, "[invalid]", "B"},
    {"option So the correct choice is the correct answer is probably\nB\na;\nTheSo the correct "
     "choice is\nanswer\nall of is",
     "B", 3, "[invalid]", "B"},
    {"n't best D\n**The correct answer is optionE0.5\nfinal answer is x A n't So the correct "
     "choice is the\n\n   ",
     "A", 3, "05", "A"},
    {"The correct answer is probably\n \n: D\nor The correct choice is$The The correct choice is "
     "... 18\nchoice ... probably\n",
     "D", 3, "", "D"},
    {"The correct choice is\nThe correct answer isFinal\nChoice\nThe best answer is "
     "choiceis\nC\nThe correct answer is Final\ncore",
     "C", 3, "[invalid]", "C"},
    {"core ; The answer is\nall of none\nThe correct answer is\nchoice\nD Final choice ** "
     "combination of\ne ",
     "D", 3, "[invalid]", "D"},
    {"n't options probably the final answer is The correct answer is none probably\nC\n", "C", 3,
     "[incorrect]", "C"},
    {"noand The correct answer is combination of;\nThe correct answer is)the\nA\n", "A", 3,
     "[invalid]", "A"},
    {"ccall ofcore The best answer is A either all of\n", "A", 4, "[invalid]", "A"},
    {": 1,000\nThe best answer is E\nThe correct choice is a -5 either no\nC ee", "E", 4, "-5",
     "C"},
    {"option )  E Final\nThe best answer is A .final choice", "A", 4, "[invalid]", "A"},
    {"The best answer is E,aThe best answer is The correct choice isis - So all ofeither\nchoice "
     "final answer is\n18 answer; ",
     "E", 4, "18", "E"},
    {"... core\naD\n the correcta The correct choice is(\nThe best answer is D x Final ", "D", 4,
     "", "D"},
    {"Coptionoptionthe correct answer is and B BThe correct choice is ( The best answer isC "
     "choice\nFinal\n,\nChoice\n",
     "C", 4, "[invalid]", "C"},
    {"The best answer is B\n(**", "B", 4, "[invalid]", "B"},
    {"e thereforebest\n  either The best answer is E\n**", "E", 4, "[invalid]", "E"},
    {"correct; n't)The correct choice is\nnot The best answer is\n(D-option\nthe correct answer "
     "is\nFinal\noption :c ",
     "D", 4, "[incorrect]", "D"},
    {"The best answer is B nooption Dogsor\ne not ", "B", 4, "[incorrect]", "D"},
    {"So the correct choice is option A answerDogs the final answer is AFinalx 18\nChoice B: n't "
     ".\nEx \n\n",
     "A", 5, "18", "E"},
    {"n't\n1,000 Final So the correct choice is either not both The correct choice is\noption B "
     "none ...is\n",
     "B", 5, "", "B"},
    {"option D\n,and \n So the correct choice is\noption   B ", "B", 5, "[invalid]", "B"},
    {"...,\n)\n So the correct choice is option A The correct choice istherefore", "A", 5, "", "A"},
    {"So the correct choice is\noption D E probably none x \n... core-5 ", "D", 5, "-5", "E"},
    {"therefore 1,000So the correct choice is ( optionD\nDcoreno\n", "D", 5, "1000", "D"},
    {"acombination of\nfinal answer is  \nSo the correct choice is option\nA\n", "A", 5,
     "[invalid]", "A"},
    {"and and So the correct choice is\noptionB :\n  So the correct choice is xThe correct choice "
     "is\nthe ; 18 The answer is The correct choice is either\n",
     "B", 5, "18", "B"},
    {"the final answer is\nthe correct answer is\nSo the correct choice is option ** D$ correct "
     "Final e Choice B: core\nx A\nthe final answer is :",
     "D", 5, "[incorrect]", "A"},
    {"x\nThe A\nC\nthe final answer is)\nThe The correct choice is option A\nn't "
     "correct\nprobably\noption\n",
     "A", 5, "[incorrect]", "A"},
    {"So option the final answer is ) probably both-5 zz Dogscore ... the final answer is "
     "A\nboth\ncorecore ",
     "A", 6, "", "A"},
    {"the final answer is\nC(\n** .So SoThe best answer is core\nn't 1,000\nSo the correct choice "
     "is\n: ... The correct answer is ",
     "C", 6, "", "C"},
    {"the final answer isE ( So the correct choice is The best answer is is: c", "E", 6,
     "[invalid]", "E"},
    {"e 0.5 bestis\nA\nthe final answer is C\noption\nfinal c final options\nDogs\nThe correct "
     "choice iscore Choice B:\n",
     "C", 6, "05", "B"},
    {"the final answer isD\nfinal The\nandThe best answer iscore\ncorrect the correct answer isThe "
     "answer is ",
     "D", 6, "[invalid]", "D"},
    {"probably . :\n$final answer is\n1,000 C 1,000 The answer is\nFinalThe correct choice is the "
     "final answer is  \nE ",
     "E", 6, "1000", "E"},
    {"final\nc  \ncoreC   the final answer is E probably c", "E", 6, "[invalid]", "E"},
    {"therefore0.5 the correct answer is option\nthe- Choice B:, or(best\ntheprobably the final "
     "answer is E\nis ",
     "E", 6, "05", "E"},
    {"the final answer is D D\n", "D", 6, "[invalid]", "D"},
    {"e$ the final answer is\nB\n1,000 options Answer: best ", "B", 6, "1000", "A"},
    {"Choice B:\nThe\n0.5So the correct choice is\n:  \nThe answer is D (\nis: ( combination "
     "of\nisor options: ",
     "D", 7, "05", "D"},
    {"not\nThe correct answer is theSoC\nChoice B: So the correct choice is-5 The answer is\nD "
     "0.5answer both ... The correct answer is ",
     "D", 7, "", "D"},
    {"probablyThe answer is E So the correct choice is final answer is\n-So the correct choice "
     "is\nnot\nnot c therefore both \n noor ",
     "E", 7, "[incorrect]", "E"},
    {"-\n...either -  not\n: B all of either The answer is B", "B", 7, "", "B"},
    {"not all of\nThe answer is\nE correct", "E", 7, "[incorrect]", "E"},
    {"B) Choice B:\nDogs\nnone FinalThe answer is A no\n( Final\nThe answer is Ccombination of a ",
     "A", 7, "[invalid]", "C"},
    {"combination of\n  zzThe correct choice is\nThe best answer is So the correct choice "
     "isoption\noptionsanswer noThe answer isC -5 and ",
     "C", 7, "-5", "C"},
    {"is E\nThe answer is ) C finalAnswer:\n", "C", 7, "[invalid]", "A"},
    {"probablyis:\ncore the final answer is\n1,000The correct answer is\nThe answer is D ", "D", 7,
     "1000", "D"},
    {"combination of The correct choice is probably\na\nanswerThe answer isB\n", "B", 7,
     "[invalid]", "B"},
    {"; corefinal answer is C -5.no", "C", 8, "-5", "C"},
    {"final answer is C\naboth", "C", 8, "[invalid]", "C"},
    {"Theccore\nafinal answer is\nC ", "C", 8, "[invalid]", "C"},
    {"18\nprobably final answer is B Theall of choice D ...options is\n", "B", 8, "", "D"},
    {"final answer is B\nThe\ntherefore is B\nnone choice\n and isnone\nc Answer: The best answer "
     "is ",
     "B", 8, "[invalid]", "A"},
    {"The correct choice is 1,000the final answer isD, ", "D", 8, "1000", "D"},
    {"Soe ,\nall of\nSo the correct choice is\nx The answer is\nzzcombination of final answer isD "
     "a\n)**\noption ",
     "D", 8, "[invalid]", "D"},
    {"the final answer is final answer isD is\nanswer C combination of\nc or ) -", "D", 8,
     "[invalid]", "C"},
    {",final combination ofChoice B:\nfinal answer is A\nc\nThe correct answer is final answer "
     "is**\nall of Dogsthe \n ",
     "A", 8, "[invalid]", "D"},
    {"no Dogs\nis:therefore  and The\nE The correct choice is notfinal answer is C\ncorrect "
     "notchoice\nn't ",
     "C", 8, "[incorrect]", "C"},
    {"The best answer is\n** option\nB ", "B", 9, "[invalid]", "B"},
    {"-5\nDogs correct andSo\nor either The best answer is \n\nThe best answer is ** option E ",
     "E", 9, "-5", "E"},
    {"The best answer is option\nA", "A", 9, "[invalid]", "A"},
    {"istherefore \n\nThe best answer is option A choice\nCnot\nFinal option\nbest   e ", "A", 9,
     "[incorrect]", "C"},
    {"; E aall of :probably\nThe best answer is\noption C or )\nfinal answer is-5 Choice\n0.5  \n",
     "C", 9, "05", "C"},
    {"the\n...e both\nThe best answer is\noption B\n", "B", 9, "", "B"},
    {"therefore E The best answer is option E\nx )\nThe best answer is 18 The\nBChoice B:E ", "E",
     9, "18", "E"},
    {"notThe correct choice is\nFinal\ncChoice EAnswer: The best answer is option**D\nSo the "
     "correct choice isChoice B: ",
     "D", 9, "[invalid]", "B"},
    {"final e\nSo the correct choice is\nn'tall ofChoice B:The best answer is option A the final "
     "answer is ",
     "A", 9, "[incorrect]", "A"},
    {"1,000 x\nAThe best answer is optionC or\n. 0.5 best    ", "C", 9, "05", "C"},
    {"combination of is:options  So the correct choice is Choice B: ", "B", 10, "[invalid]", "B"},
    {"The best answer is bestcore\nSo\n-\nChoice therefore Final Choice) options So the correct "
     "choice is Choice B: D\nE",
     "B", 10, "[invalid]", "E"},
    {"is The correct choice is options\nDogs ... therefore1,000\nfinalall of\n0.5combination of "
     "or\nSo the correct choice is - **\nChoice B: ",
     "B", 10, "05", "B"},
    {"D either So the correct choice isChoice B:\n", "B", 10, "[invalid]", "B"},
    {"combination of\nE The correct answer isDogs \n So the correct choice is Choice B:\ne\n... "
     "all of\nnone\n:0.5 \n the correct answer is ",
     "B", 10, "05", "B"},
    {"iszzoption combination of ( no So   the\nis choiceTheSo the correct choice is    Choice B: ",
     "B", 10, "[invalid]", "B"},
    {"c\n:combination of A...The :So none option therefore\nE So the correct choice is Choice B: "
     "combination of ...\n",
     "B", 10, "", "B"},
    {"option final answer is\nSo the correct choice is e) C   So the correct choice "
     "is\nChoicenone\ncombination of\nc So the correct choice is Choice B:\n",
     "B", 10, "[invalid]", "B"},
    {",is:correct\nSo the correct choice isDeither Answer: option C\nSo the correct choice "
     "isChoice B:\n$ core the n't",
     "B", 10, "[incorrect]", "B"},
    {"a So the correct choice is Choice B: aanswer final ", "B", 10, "[invalid]", "B"},
    {"n't\noptions( the final answer isAnswer:E :\ncorrect\nanswerChoice and", "E", 11,
     "[incorrect]", "C"},
    {"probably \n all of\ncorrect the correct answer is\n  The best answer is So the correct "
     "choice is\nDogsAnswer:D therefore core\nAnswer:",
     "D", 11, "[incorrect]", "A"},
    {"Final\n1,000 So the correct choice is c\nThe correct choice is** and\nis\nThe answer "
     "isAnswer:\nE C C) ",
     "E", 11, "1000", "C"},
    {"is DAnswer: D . So the correct choice isprobably\n:e\nAnswer:\nn't final answer is\n", "D",
     11, "[incorrect]", "A"},
    {"optionsbestSo the correct choice is all of c the .final answer is Answer: B and xSo\n-5", "B",
     11, "-5", "B"},
    {"correctSo the correct choice is the final answer is Choice Choice B: $ -\n\nnot Answer: - A ",
     "A", 11, "[incorrect]", "A"},
    {"therefore The correct choice is or Choice The answer is** both Answer: D option ( the final "
     "answer is ",
     "D", 11, "[invalid]", "D"},
    {"\n final ; options\nChoice ** ; and Answer:\n\n D: n'tfinal-5 ...\n", "D", 11, "", "D"},
    {"Answer: E\ntherefore thereforeDogs\n-5\n18 1,000 and The best answer is\n", "E", 11, "1000",
     "D"},
    {"optionB\n0.5 The\nA En'tThe Answer:\nB none\nSo\n finaln't\n(", "B", 11, "05", "B"},
    {"A :\ncorrect noDogs", "A", 12, "[invalid]", "D"},
    {"C : ,\n\nbest\n( is combination of xcorrectchoice\n   BandeitherThe correct choice is", "C",
     12, "[invalid]", "B"},
    {"E :\nDogsThe answer is -5 ... core choice the answer ** -5answer\nn't\n", "E", 12, "-5", "D"},
    {"C ) :athe correct answer is ... ", "C", 12, "", "C"},
    {"B\n: The \n ...\nthe correct answer isThe answer is", "B", 12, "", "B"},
    {"E :\noption\nThe correct answer isboththe final answer is\n: x ; option\n", "E", 12,
     "[invalid]", "E"},
    {"D :0.5 option and options\nSo)Final\nA ", "D", 12, "05", "A"},
    {"B : theboth either\n...\nand\n   The correct choice is either combination of\nthe ) "
     "$Aanswer\n",
     "B", 12, "", "A"},
    {"B\n: option ", "B", 12, "[invalid]", "B"},
    {"A\n:Answer:\nall of\nanswerSo the\n", "A", 12, "[invalid]", "A"},
};

TEST(Scoring, MatchesReferenceOnGeneratedCases) {
  for (const auto& c : kCases) {
    const ChoiceMatch m = match_choice(c.input);
    EXPECT_EQ(m.answer, c.choice) << c.input;
    EXPECT_EQ(m.pattern, c.pattern) << c.input;
    EXPECT_EQ(extract_gsm8k_answer(c.input), c.gsm8k) << c.input;
    EXPECT_EQ(extract_last_letter(c.input), c.last_letter) << c.input;
  }
}

}  // namespace
}  // namespace kvsteer::eval
