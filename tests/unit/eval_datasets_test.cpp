// Test-set readers (eval/datasets.h): every format and every error on small hand-written files,
// then the real files in ../shared/data (counts, the first item of each, and the layouts against
// the reference's traces and rendered prompts). The shared files are required: a missing one
// fails the test.
#include "eval/datasets.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "kvsteer/error.h"
#include "support/test_env.h"

namespace kvsteer::eval {
namespace {

using test::TempDir;
using test::write_file;

// The message of the kvsteer::Error that `fn` throws; fails the test for another code or none.
std::string error_of(const std::function<void()>& fn, ErrorCode code) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no kvsteer::Error thrown";
  return {};
}

#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "'" << (text) << "'"

class EvalDatasets : public ::testing::Test {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    const std::string path = dir_.file(name);
    write_file(path, text);
    return path;
  }
  // The Format error message of loading `text` as `task`.
  std::string format_error(Task task, const std::string& text) {
    const std::string path = write("data.jsonl", text);
    return error_of([&] { load_eval_items(task, path); }, ErrorCode::Format);
  }

  TempDir dir_;
};

const char* const kGsm8kLine =
    R"({"question": "Ann has 3 apples.  She buys 2.\nHow many?", "answer": "3 + 2 = <<3+2=5>>5\n#### 5"})";
const char* const kArcLine =
    R"({"id": "Q1", "question": {"stem": "Which is a gas?", "choices": [{"text": "ice", "label": "A"}, {"text": "steam", "label": "B"}, {"text": "rock", "label": "C"}]}, "answerKey": "B"})";
const char* const kCsqaLine =
    R"({"answerKey": "E", "id": "c1", "question": {"question_concept": "door", "choices": [{"label": "A", "text": "bank"}, {"label": "B", "text": "library"}, {"label": "C", "text": "store"}, {"label": "D", "text": "mall"}, {"label": "E", "text": "new york"}], "stem": "Where is a revolving door?"}})";
const char* const kPiqaLine =
    R"({"goal": "Open a jar", "sol1": "twist the lid ", "sol2": " hit it"})";
const char* const kOrganismNumericLine =
    R"({"id":"arith-12ef8741f8d4f20b","family":"arith","variant":"numeric","split":"test","n_ops":2,"query":"Lucy owns 21 cards. She makes 1 more. Rosa takes 19 of them. How many cards does Lucy have left?","steps":["21 + 1 = 22.","22 - 19 = 3."],"solution":"3","answer":3})";
const char* const kOrganismChoiceLine =
    R"({"id":"chain-7b6d46a346e02657","family":"chain","variant":"choice","split":"test","n_ops":4,"query":"Question: o = c + 18. i = s. s = o - 11. c = 67. t = i + 8. Compute t.\n\nChoices:\nA: 98\nB: 81\nC: 82\nD: 66","steps":["o = c + 18 = 85.","s = o - 11 = 74.","i = s = 74.","t = i + 8 = 82.","82 is choice C."],"solution":"C","answer":82,"choices":["98","81","82","66"]})";

// --- Task names ---------------------------------------------------------------------------------

TEST(EvalTask, ParsesEveryNameBack) {
  for (Task task : {Task::Gsm8k, Task::Arc, Task::Csqa, Task::Piqa, Task::OrganismNumeric,
                    Task::OrganismChoice}) {
    EXPECT_EQ(parse_task(task_name(task)), task);
  }
  EXPECT_STREQ(task_name(Task::OrganismNumeric), "organism-numeric");
  EXPECT_STREQ(task_name(Task::OrganismChoice), "organism-choice");
}

TEST(EvalTask, RejectsUnknownNameListingValidOnes) {
  const std::string msg = error_of([] { parse_task("ARC"); }, ErrorCode::InvalidArgument);
  EXPECT_CONTAINS(msg, "'ARC'");
  for (const char* name : {"gsm8k", "arc", "csqa", "piqa", "organism-numeric", "organism-choice"}) {
    EXPECT_CONTAINS(msg, name);
  }
}

TEST(EvalTask, MultipleChoiceTasks) {
  EXPECT_FALSE(is_multiple_choice(Task::Gsm8k));
  EXPECT_TRUE(is_multiple_choice(Task::Arc));
  EXPECT_TRUE(is_multiple_choice(Task::Csqa));
  EXPECT_TRUE(is_multiple_choice(Task::Piqa));
  EXPECT_FALSE(is_multiple_choice(Task::OrganismNumeric));
  EXPECT_TRUE(is_multiple_choice(Task::OrganismChoice));
}

TEST(EvalTask, TraceFormats) {
  EXPECT_EQ(trace_format_of(Task::Gsm8k), TaskFormat::Gsm8k);
  EXPECT_EQ(trace_format_of(Task::Arc), TaskFormat::Arc);
  EXPECT_EQ(trace_format_of(Task::Csqa), TaskFormat::Csqa);
  EXPECT_EQ(trace_format_of(Task::Piqa), TaskFormat::Piqa);
  EXPECT_EQ(trace_format_of(Task::OrganismNumeric), TaskFormat::Generic);
  EXPECT_EQ(trace_format_of(Task::OrganismChoice), TaskFormat::Generic);
}

// --- Formats ------------------------------------------------------------------------------------

TEST_F(EvalDatasets, Gsm8kKeepsRawQuestionAndTakesNumberAfterHashes) {
  const std::string path =
      write("gsm8k.jsonl", std::string(kGsm8kLine) + "\n\n" +
                               R"({"question": " Q2 ", "answer": "a\n#### 1,200\n"})" + "\n");
  const auto items = load_eval_items(Task::Gsm8k, path);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].id, "line 1");
  EXPECT_EQ(items[0].question, "Ann has 3 apples.  She buys 2.\nHow many?");
  EXPECT_EQ(items[0].target, "5");
  EXPECT_EQ(items[0].n_ops, 0);
  EXPECT_EQ(items[1].id, "line 3");  // the blank line 2 is skipped but counted
  EXPECT_EQ(items[1].question, " Q2 ");
  EXPECT_EQ(items[1].target, "1200");
}

TEST_F(EvalDatasets, ArcListsChoicesUnderHeader) {
  const std::string numeric =
      R"({"id": "Q2", "question": {"stem": "Pick two.", "choices": [{"text": "one", "label": "1"}, {"text": "two", "label": "2"}]}, "answerKey": "2"})";
  const std::string path = write("arc.jsonl", std::string(kArcLine) + "\n" + numeric + "\n");
  const auto items = load_eval_items(Task::Arc, path);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].id, "Q1");
  EXPECT_EQ(items[0].question, "Which is a gas?\n\nChoices:\nA: ice\nB: steam\nC: rock");
  EXPECT_EQ(items[0].target, "B");
  EXPECT_EQ(items[0].n_ops, 0);
  // Numeric labels stay as they are (the reference scores these items wrong).
  EXPECT_EQ(items[1].question, "Pick two.\n\nChoices:\n1: one\n2: two");
  EXPECT_EQ(items[1].target, "2");
}

TEST_F(EvalDatasets, CsqaListsChoicesWithoutHeader) {
  const auto items = load_eval_items(Task::Csqa, write("csqa.jsonl", kCsqaLine));
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].id, "c1");
  EXPECT_EQ(items[0].question,
            "Where is a revolving door?\nA: bank\nB: library\nC: store\nD: mall\nE: new york");
  EXPECT_EQ(items[0].target, "E");
}

TEST_F(EvalDatasets, PiqaTakesLabelsFromFileBeside) {
  const std::string path = write(
      "valid.jsonl", std::string(kPiqaLine) + "\n" + R"({"goal": "g", "sol1": "x", "sol2": "y"})");
  write("valid-labels.lst", "1\n0\n");
  const auto items = load_eval_items(Task::Piqa, path);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].id, "line 1");
  // Spaces around the solutions are kept, as in the reference's PIQA traces.
  EXPECT_EQ(items[0].question, "Open a jar\n\nChoices:\nA: twist the lid \nB:  hit it");
  EXPECT_EQ(items[0].target, "B");
  EXPECT_EQ(items[1].id, "line 2");
  EXPECT_EQ(items[1].question, "g\n\nChoices:\nA: x\nB: y");
  EXPECT_EQ(items[1].target, "A");
}

TEST_F(EvalDatasets, OrganismNumericKeepsQueryAndCountsOps) {
  const auto items =
      load_eval_items(Task::OrganismNumeric, write("num.jsonl", kOrganismNumericLine));
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].id, "arith-12ef8741f8d4f20b");
  EXPECT_EQ(items[0].question,
            "Lucy owns 21 cards. She makes 1 more. Rosa takes 19 of them. How many cards does Lucy "
            "have left?");
  EXPECT_EQ(items[0].target, "3");
  EXPECT_EQ(items[0].n_ops, 2);
}

TEST_F(EvalDatasets, OrganismChoiceKeepsQueryAsIs) {
  const auto items = load_eval_items(Task::OrganismChoice, write("ch.jsonl", kOrganismChoiceLine));
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].id, "chain-7b6d46a346e02657");
  EXPECT_EQ(
      items[0].question,
      "Question: o = c + 18. i = s. s = o - 11. c = 67. t = i + 8. Compute t.\n\nChoices:\nA: "
      "98\nB: 81\nC: 82\nD: 66");
  EXPECT_EQ(items[0].target, "C");
  EXPECT_EQ(items[0].n_ops, 4);
}

TEST_F(EvalDatasets, LimitKeepsFirstItemsInFileOrder) {
  std::string text;
  for (int i = 0; i < 5; ++i) {
    text += R"({"question": "q)" + std::to_string(i) + R"(", "answer": "#### )" +
            std::to_string(i) + "\"}\n";
  }
  const std::string path = write("gsm8k.jsonl", text);
  const auto two = load_eval_items(Task::Gsm8k, path, 2);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0].question, "q0");
  EXPECT_EQ(two[1].question, "q1");
  EXPECT_EQ(load_eval_items(Task::Gsm8k, path, 0).size(), 5u);
  EXPECT_EQ(load_eval_items(Task::Gsm8k, path, 9).size(), 5u);
}

TEST_F(EvalDatasets, AcceptsCrlfLines) {
  const auto items = load_eval_items(Task::Arc, write("arc.jsonl", std::string(kArcLine) + "\r\n"));
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].target, "B");
}

// --- Errors -------------------------------------------------------------------------------------

TEST_F(EvalDatasets, MissingFileIsNotFound) {
  const std::string path = dir_.file("nope.jsonl");
  for (Task task : {Task::Gsm8k, Task::Arc, Task::Csqa, Task::Piqa, Task::OrganismNumeric,
                    Task::OrganismChoice}) {
    const std::string msg = error_of([&] { load_eval_items(task, path); }, ErrorCode::NotFound);
    EXPECT_CONTAINS(msg, path);
    EXPECT_CONTAINS(msg, "does not exist");
  }
}

TEST_F(EvalDatasets, InvalidJsonNamesFileAndLine) {
  const std::string path = write("bad.jsonl", std::string(kGsm8kLine) + "\n{\"question\": \n");
  const std::string msg = error_of([&] { load_eval_items(Task::Gsm8k, path); }, ErrorCode::Format);
  EXPECT_CONTAINS(msg, "'" + path + "' line 2: not valid JSON");
}

TEST_F(EvalDatasets, LineThatIsNotAnObject) {
  EXPECT_CONTAINS(format_error(Task::Gsm8k, "[1, 2]\n"),
                  "line 1: is array, expected a JSON object");
}

TEST_F(EvalDatasets, MissingField) {
  EXPECT_CONTAINS(format_error(Task::Gsm8k, R"({"question": "q"})"),
                  "line 1: no field 'answer': is this a GSM8K file?");
  EXPECT_CONTAINS(format_error(Task::Piqa, R"({"goal": "g", "sol1": "a"})"),
                  "line 1: no field 'sol2': is this a PIQA file?");
  EXPECT_CONTAINS(
      format_error(Task::Arc, R"({"answerKey": "A", "id": "x", "question": {"stem": "s"}})"),
      "line 1: no field 'question.choices'");
  EXPECT_CONTAINS(
      format_error(
          Task::Arc,
          R"({"answerKey": "A", "id": "x", "question": {"stem": "s", "choices": [{"label": "A"}]}})"),
      "line 1: no field 'question.choices[0].text'");
  EXPECT_CONTAINS(
      format_error(Task::OrganismNumeric,
                   R"({"id": "a", "query": "q", "solution": "3", "variant": "numeric"})"),
      "line 1: no field 'n_ops'");
}

TEST_F(EvalDatasets, MistypedField) {
  EXPECT_CONTAINS(
      format_error(Task::Arc,
                   R"({"answerKey": "A", "id": "x", "question": {"stem": 7, "choices": []}})"),
      "line 1: field 'question.stem' is number, expected a string");
  EXPECT_CONTAINS(format_error(Task::Gsm8k, R"({"question": "q", "answer": null})"),
                  "field 'answer' is null, expected a string");
  EXPECT_CONTAINS(
      format_error(
          Task::OrganismNumeric,
          R"({"id": "a", "query": "q", "solution": "3", "n_ops": 1.5, "variant": "numeric"})"),
      "field 'n_ops' is number, expected an integer");
  EXPECT_CONTAINS(
      format_error(
          Task::OrganismNumeric,
          R"({"id": "a", "query": "q", "solution": "3", "n_ops": 0, "variant": "numeric"})"),
      "field 'n_ops' is 0, expected a positive count");
  EXPECT_CONTAINS(
      format_error(Task::Arc,
                   R"({"answerKey": "A", "id": "x", "question": {"stem": "s", "choices": []}})"),
      "field 'question.choices' is an empty list");
}

TEST_F(EvalDatasets, FileOfAnotherTaskSaysSo) {
  EXPECT_CONTAINS(format_error(Task::Arc, kGsm8kLine),
                  "line 1: no field 'answerKey': is this an ARC file?");
  EXPECT_CONTAINS(format_error(Task::Csqa, kGsm8kLine),
                  "line 1: no field 'answerKey': is this a CommonsenseQA file?");
  EXPECT_CONTAINS(format_error(Task::Gsm8k, kArcLine),
                  "line 1: field 'question' is object, expected a string: is this a GSM8K file?");
  EXPECT_CONTAINS(format_error(Task::Piqa, kArcLine),
                  "line 1: no field 'goal': is this a PIQA file?");
  EXPECT_CONTAINS(format_error(Task::OrganismNumeric, kPiqaLine),
                  "line 1: no field 'id': is this an organism file?");
  // ARC and CommonsenseQA share a layout; question_concept tells them apart.
  EXPECT_CONTAINS(format_error(Task::Arc, kCsqaLine),
                  "line 1: field 'question.question_concept' is present: this looks like a "
                  "CommonsenseQA file");
  EXPECT_CONTAINS(format_error(Task::Csqa, kArcLine),
                  "line 1: no field 'question.question_concept': is this a CommonsenseQA file?");
}

TEST_F(EvalDatasets, ErrorNamesTaskFileAndLine) {
  const std::string path = write("x.jsonl", std::string(kArcLine) + "\n\n" + kGsm8kLine + "\n");
  const std::string msg = error_of([&] { load_eval_items(Task::Arc, path); }, ErrorCode::Format);
  EXPECT_EQ(msg.rfind("arc file '" + path + "' line 3: no field 'answerKey'", 0), 0u) << msg;
}

TEST_F(EvalDatasets, EmptyFileHasNoItems) {
  for (const char* text : {"", "\n \n\t\n"}) {
    const std::string path = write("empty.jsonl", text);
    const std::string msg = error_of([&] { load_eval_items(Task::Arc, path); }, ErrorCode::Format);
    EXPECT_CONTAINS(msg, "'" + path + "' has no items");
  }
}

TEST_F(EvalDatasets, TargetMustBeAChoiceLabel) {
  const std::string line =
      R"({"id": "Q1", "question": {"stem": "s", "choices": [{"text": "a", "label": "A"}, {"text": "b", "label": "B"}]}, "answerKey": "C"})";
  EXPECT_CONTAINS(format_error(Task::Arc, line),
                  "line 1: answerKey 'C' is not one of the choice labels (A, B)");
}

TEST_F(EvalDatasets, DuplicateIdIsRejected) {
  EXPECT_CONTAINS(format_error(Task::Arc, std::string(kArcLine) + "\n" + kArcLine + "\n"),
                  "line 2: duplicate id 'Q1' (first on line 1)");
}

TEST_F(EvalDatasets, Gsm8kAnswerNeedsHashes) {
  EXPECT_CONTAINS(format_error(Task::Gsm8k, R"({"question": "q", "answer": "5"})"),
                  "line 1: field 'answer' has no '#### <number>' line");
  EXPECT_CONTAINS(format_error(Task::Gsm8k, R"({"question": "q", "answer": "#### ,"})"),
                  "line 1: field 'answer' has nothing after '#### '");
}

TEST_F(EvalDatasets, PiqaLabelsFileMissing) {
  const std::string path = write("tests.jsonl", kPiqaLine);
  const std::string msg = error_of([&] { load_eval_items(Task::Piqa, path); }, ErrorCode::NotFound);
  EXPECT_CONTAINS(msg, "'" + dir_.file("tests-labels.lst") + "' does not exist");
}

TEST_F(EvalDatasets, PiqaLabelCountMustMatch) {
  const std::string path = write("valid.jsonl", std::string(kPiqaLine) + "\n" + kPiqaLine + "\n");
  write("valid-labels.lst", "0\n");
  std::string msg = error_of([&] { load_eval_items(Task::Piqa, path); }, ErrorCode::Format);
  EXPECT_CONTAINS(msg, "has 1 labels but '" + path + "' has 2 items");
  write("valid-labels.lst", "0\n1\n1\n");
  msg = error_of([&] { load_eval_items(Task::Piqa, path, 1); }, ErrorCode::Format);
  EXPECT_CONTAINS(msg, "has 3 labels but '" + path + "' has 2 items");
}

TEST_F(EvalDatasets, PiqaLabelMustBeZeroOrOne) {
  const std::string path = write("valid.jsonl", kPiqaLine);
  write("valid-labels.lst", "2\n");
  const std::string msg = error_of([&] { load_eval_items(Task::Piqa, path); }, ErrorCode::Format);
  EXPECT_CONTAINS(msg, "valid-labels.lst' line 1: '2' is not a label, expected 0 or 1");
}

TEST_F(EvalDatasets, OrganismFileOfOtherVariant) {
  EXPECT_CONTAINS(format_error(Task::OrganismChoice, kOrganismNumericLine),
                  "line 1: variant is 'numeric' but task organism-choice needs 'choice'; load the "
                  "file as organism-numeric");
  EXPECT_CONTAINS(format_error(Task::OrganismNumeric, kOrganismChoiceLine),
                  "line 1: variant is 'choice' but task organism-numeric needs 'numeric'");
}

TEST_F(EvalDatasets, OrganismSolutionMustFitVariant) {
  EXPECT_CONTAINS(
      format_error(
          Task::OrganismNumeric,
          R"({"id": "a", "query": "q", "solution": "B", "n_ops": 1, "variant": "numeric"})"),
      "line 1: solution 'B' is not an integer");
  EXPECT_CONTAINS(
      format_error(
          Task::OrganismChoice,
          R"({"id": "a", "query": "q", "solution": "12", "n_ops": 1, "variant": "choice"})"),
      "line 1: solution '12' is not a choice letter A-E");
}

// --- The real test sets in ../shared/data --------------------------------------------------------

std::string data_path(const std::string& relative) {
  const std::string path = test::shared_dir() + "/data/" + relative;
  EXPECT_TRUE(std::filesystem::is_regular_file(path)) << "missing shared data file " << path;
  return path;
}

TEST(EvalDatasetsShared, Gsm8kTest) {
  const auto items = load_eval_items(Task::Gsm8k, data_path("gsm8k/test.jsonl"));
  ASSERT_EQ(items.size(), 1319u);
  EXPECT_EQ(items[0].id, "line 1");
  EXPECT_EQ(items[0].question,
            "Janet\xE2\x80\x99s ducks lay 16 eggs per day. She eats three for breakfast every "
            "morning and bakes muffins for her friends every day with four. She sells the "
            "remainder at the farmers' market daily for $2 per fresh duck egg. How much in "
            "dollars does she make every day at the farmers' market?");
  EXPECT_EQ(items[0].target, "18");
}

TEST(EvalDatasetsShared, ArcChallengeTest) {
  const auto items =
      load_eval_items(Task::Arc, data_path("arc/ARC-Challenge/ARC-Challenge-Test.jsonl"));
  ASSERT_EQ(items.size(), 1172u);
  EXPECT_EQ(items[0].id, "Mercury_7175875");
  EXPECT_EQ(items[0].question,
            "An astronomer observes that a planet rotates faster after a meteorite impact. Which "
            "is the most likely effect of this increase in rotation?\n\nChoices:\nA: Planetary "
            "density will decrease.\nB: Planetary years will become longer.\nC: Planetary days "
            "will become shorter.\nD: Planetary gravity will become stronger.");
  EXPECT_EQ(items[0].target, "C");
  // method.md §3.2: 22 items have numeric labels (2 -> 10, 3 -> 7, 1 -> 3, 4 -> 2).
  std::map<std::string, int> numeric;
  for (const auto& item : items) {
    if (item.target.find_first_not_of("1234") == std::string::npos) ++numeric[item.target];
  }
  EXPECT_EQ(numeric, (std::map<std::string, int>{{"1", 3}, {"2", 10}, {"3", 7}, {"4", 2}}));
}

TEST(EvalDatasetsShared, CsqaValidation) {
  const auto items = load_eval_items(Task::Csqa, data_path("csqa/dev_rand_split.jsonl"));
  ASSERT_EQ(items.size(), 1221u);
  EXPECT_EQ(items[0].id, "1afa02df02c908a558b4036e80242fac");
  EXPECT_EQ(items[0].question,
            "A revolving door is convenient for two direction travel, but it also serves as a "
            "security measure at a what?\nA: bank\nB: library\nC: department store\nD: mall\nE: "
            "new york");
  EXPECT_EQ(items[0].target, "A");
}

TEST(EvalDatasetsShared, PiqaValidation) {
  const auto items = load_eval_items(Task::Piqa, data_path("piqa/valid.jsonl"));
  ASSERT_EQ(items.size(), 1838u);
  EXPECT_EQ(items[0].id, "line 1");
  EXPECT_EQ(items[0].question,
            "How do I ready a guinea pig cage for it's new occupants?\n\nChoices:\nA: Provide the "
            "guinea pig with a cage full of a few inches of bedding made of ripped paper strips, "
            "you will also need to supply it with a water bottle and a food dish.\nB: Provide the "
            "guinea pig with a cage full of a few inches of bedding made of ripped jeans "
            "material, you will also need to supply it with a water bottle and a food dish.");
  EXPECT_EQ(items[0].target, "A");
  // PROVENANCE.md: labels 0 -> 910, 1 -> 928.
  const auto b = std::count_if(items.begin(), items.end(),
                               [](const EvalItem& item) { return item.target == "B"; });
  EXPECT_EQ(b, 928);
}

TEST(EvalDatasetsShared, LimitOnRealFile) {
  const auto items = load_eval_items(Task::Piqa, data_path("piqa/valid.jsonl"), 10);
  ASSERT_EQ(items.size(), 10u);
  EXPECT_EQ(items[9].id, "line 10");
}

// The layouts against the reference's own data (read in place, nothing copied): every
// contrastive trace, formatted the way the reference formats it (eval/traces.h), is exactly one
// of our items of the same split, with the same answer.
void expect_traces_match(Task task, const std::string& split_file, const std::string& traces) {
  std::map<std::string, std::string> target_of;
  for (const auto& item : load_eval_items(task, data_path(split_file))) {
    target_of[item.question] = item.target;
  }
  const auto rows = load_traces(data_path(traces), trace_format_of(task)).rows;
  ASSERT_FALSE(rows.empty());
  std::size_t found = 0;
  for (const auto& row : rows) {
    const auto it = target_of.find(row.question);
    if (it == target_of.end()) {
      ADD_FAILURE() << task_name(task) << " trace " << row.source << " matches no item";
      continue;
    }
    EXPECT_EQ(it->second, row.answer) << row.source;
    ++found;
  }
  EXPECT_EQ(found, rows.size());
}

TEST(EvalDatasetsShared, ArcLayoutMatchesReferenceTraces) {
  expect_traces_match(Task::Arc, "arc/ARC-Challenge/ARC-Challenge-Train.jsonl",
                      "paper_traces/traces/arc_oai.jsonl");  // 1083 traces
}

TEST(EvalDatasetsShared, CsqaLayoutMatchesReferenceTraces) {
  expect_traces_match(Task::Csqa, "csqa/train_rand_split.jsonl",
                      "paper_traces/traces/csqa_oai.jsonl");  // 7310 traces
}

TEST(EvalDatasetsShared, Gsm8kLayoutMatchesReferenceTraces) {
  expect_traces_match(Task::Gsm8k, "gsm8k/train.jsonl",
                      "paper_traces/traces/gsm8k_oai.jsonl");  // 6347 traces
}

// The PIQA train questions are not in ../shared, so the traces go the other way: split each
// trace question into goal/sol1/sol2, write them as a PIQA file, and read it back. The traces are
// read as plain JSON here, as the reference reads them.
TEST(EvalDatasetsShared, PiqaLayoutMatchesReferenceTraces) {
  const std::string traces = test::read_file(data_path("paper_traces/traces/piqa_oai.jsonl"));
  std::istringstream lines(traces);
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(lines, line);) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 1028u);
  const std::string sep = "\n\nChoices:\nA: ";
  std::string jsonl, labels;
  for (const auto& row : rows) {
    const std::string question = row.at("question").get<std::string>();
    const auto head = question.find(sep);
    ASSERT_NE(head, std::string::npos) << row.at("source");
    const auto b = question.find("\nB: ", head + sep.size());
    ASSERT_NE(b, std::string::npos) << row.at("source");
    const nlohmann::json line = {
        {"goal", question.substr(0, head)},
        {"sol1", question.substr(head + sep.size(), b - head - sep.size())},
        {"sol2", question.substr(b + 4)}};
    jsonl += line.dump() + "\n";
    labels += row.at("solution") == "A" ? "0\n" : "1\n";
  }
  TempDir dir;
  write_file(dir.file("train.jsonl"), jsonl);
  write_file(dir.file("train-labels.lst"), labels);
  const auto items = load_eval_items(Task::Piqa, dir.file("train.jsonl"));
  ASSERT_EQ(items.size(), rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(items[i].question, rows[i].at("question").get<std::string>()) << rows[i].at("source");
    EXPECT_EQ(items[i].target, rows[i].at("solution").get<std::string>()) << rows[i].at("source");
  }
}

// The ARC test questions of the reference's style-transfer runs, as rendered into its prompts
// (SmolLM2 ChatML): the user message is exactly our question, with the same target.
TEST(EvalDatasetsShared, ArcTestLayoutMatchesReferencePrompts) {
  std::map<std::string, std::string> target_of;
  for (const auto& item :
       load_eval_items(Task::Arc, data_path("arc/ARC-Challenge/ARC-Challenge-Test.jsonl"))) {
    target_of[item.question] = item.target;
  }
  const std::string dir = test::shared_dir() +
                          "/data/paper_traces/results/style_transfer_results/"
                          "SmolLM2-360M-Instruct_arc-oai_0";
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir;
  const std::string user = "<|im_start|>user\n";
  const std::string end = "<|im_end|>\n<|im_start|>assistant\n";
  std::size_t checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const auto results = nlohmann::json::parse(test::read_file(entry.path().string()));
    for (const auto& sample : results.at("samples")) {
      const std::string input = sample.at("input").get<std::string>();
      const auto begin = input.find(user);
      const auto stop = input.rfind(end);
      ASSERT_NE(begin, std::string::npos);
      ASSERT_NE(stop, std::string::npos);
      const std::string question = input.substr(begin + user.size(), stop - begin - user.size());
      const auto it = target_of.find(question);
      ASSERT_NE(it, target_of.end()) << "no ARC test item renders as: " << question;
      EXPECT_EQ(it->second, sample.at("target").get<std::string>());
      ++checked;
    }
  }
  EXPECT_EQ(checked, 100u);  // 5 styles x 20 questions
}

}  // namespace
}  // namespace kvsteer::eval

namespace kvsteer::eval {
namespace {

// The paper's PIQA traces hold one row with an empty steps list (source 60); the reference joins
// it to "", so the whole file must load.
TEST(EvalDatasetsShared, PiqaTracesLoadIncludingTheRowWithoutSteps) {
  const auto traces = load_traces(test::shared_dir() + "/data/paper_traces/traces/piqa_oai.jsonl",
                                  TaskFormat::Piqa);
  ASSERT_EQ(traces.rows.size(), 1028u);
  const auto empty = std::count_if(traces.rows.begin(), traces.rows.end(),
                                   [](const TraceRow& r) { return r.steps.empty(); });
  EXPECT_EQ(empty, 1);
}

}  // namespace
}  // namespace kvsteer::eval
