#include "eval/datasets.h"

#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "eval/scoring.h"
#include "kvsteer/error.h"
#include "kvsteer/file_io.h"

namespace kvsteer::eval {
namespace {

using nlohmann::json;

struct TaskInfo {
  const char* name;     // parse_task spelling
  const char* a_title;  // "an ARC", for "is this an ARC file?"
  const char* expects;  // what a line of the file looks like
};

TaskInfo info(Task task) noexcept {
  switch (task) {
    case Task::Gsm8k:
      return {"gsm8k", "a GSM8K", "GSM8K JSONL: question, answer ending in '#### <number>'"};
    case Task::Arc:
      return {"arc", "an ARC",
              "AI2 ARC JSONL: id, question.stem, question.choices[{text, label}], answerKey"};
    case Task::Csqa:
      return {"csqa", "a CommonsenseQA",
              "CommonsenseQA JSONL with answers: id, question.question_concept, question.stem, "
              "question.choices[{label, text}], answerKey (the official test split has none; "
              "evaluate on dev_rand_split.jsonl)"};
    case Task::Piqa:
      return {"piqa", "a PIQA", "PIQA JSONL: goal, sol1, sol2, with <stem>-labels.lst beside it"};
    case Task::OrganismNumeric:
      return {"organism-numeric", "an organism",
              "kvsteer-organism-gen JSONL: id, query, solution, n_ops, variant"};
    case Task::OrganismChoice:
      return {"organism-choice", "an organism",
              "kvsteer-organism-gen JSONL: id, query, solution, n_ops, variant"};
  }
  return {"?", "a", "?"};
}

// Where a problem was found: every message names the task, the file and the line.
struct Where {
  Task task;
  const std::string& path;
  std::size_t line;  // 1-based
};

[[noreturn]] void fail(const Where& at, const std::string& problem) {
  throw Error(ErrorCode::Format, std::string(info(at.task).name) + " file '" + at.path + "' line " +
                                     std::to_string(at.line) + ": " + problem);
}

std::string wrong_file_hint(const Where& at) {
  return std::string(": is this ") + info(at.task).a_title + " file? (expected " +
         info(at.task).expects + ")";
}

// obj[key], which must exist and have the JSON type `type`; `dotted` names it in messages.
const json& field(const json& obj, const char* key, const std::string& dotted, json::value_t type,
                  const char* type_name, const Where& at) {
  const auto it = obj.find(key);
  if (it == obj.end()) {
    fail(at, "no field '" + dotted + "'" + wrong_file_hint(at));
  }
  const bool ok =
      type == json::value_t::number_integer ? it->is_number_integer() : it->type() == type;
  if (!ok) {
    fail(at, "field '" + dotted + "' is " + it->type_name() + ", expected " + type_name +
                 wrong_file_hint(at));
  }
  return *it;
}

std::string str(const json& obj, const char* key, const std::string& dotted, const Where& at) {
  return field(obj, key, dotted, json::value_t::string, "a string", at).get<std::string>();
}

std::string read_file_text(const std::string& path, const std::string& what,
                           const std::string& hint) {
  require_file(path, what, hint);
  return read_text_file(path, what);
}

bool is_blank(const std::string& line) {
  return line.find_first_not_of(" \t\r\n") == std::string::npos;
}

std::string trim(const std::string& s) {
  if (is_blank(s)) {
    return {};
  }
  const auto b = s.find_first_not_of(" \t\r\n");
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// "<label>: <text>" lines joined with '\n'; fills `labels`. ARC and CSQA share the layout.
std::string choice_lines(const json& question, std::vector<std::string>& labels, const Where& at) {
  const json& choices =
      field(question, "choices", "question.choices", json::value_t::array, "a list", at);
  if (choices.empty()) {
    fail(at, "field 'question.choices' is an empty list");
  }
  std::string out;
  for (std::size_t i = 0; i < choices.size(); ++i) {
    const std::string name = "question.choices[" + std::to_string(i) + "]";
    if (!choices[i].is_object()) {
      fail(at, "'" + name + "' is " + choices[i].type_name() + ", expected an object" +
                   wrong_file_hint(at));
    }
    const std::string label = str(choices[i], "label", name + ".label", at);
    const std::string text = str(choices[i], "text", name + ".text", at);
    if (label.empty()) {
      fail(at, "'" + name + ".label' is empty");
    }
    if (!out.empty()) {
      out += '\n';
    }
    out.append(label).append(": ").append(text);
    labels.push_back(label);
  }
  return out;
}

// ARC and CommonsenseQA: the same record layout, told apart by question.question_concept.
EvalItem parse_choice_record(const json& row, const Where& at) {
  // answerKey first: it is the field a file of another task most clearly lacks.
  EvalItem item;
  item.target = str(row, "answerKey", "answerKey", at);
  item.id = str(row, "id", "id", at);
  const json& question = field(row, "question", "question", json::value_t::object, "an object", at);
  if (at.task == Task::Csqa) {
    str(question, "question_concept", "question.question_concept", at);
  } else if (question.contains("question_concept")) {
    fail(at,
         "field 'question.question_concept' is present: this looks like a CommonsenseQA "
         "file; load it as csqa");
  }
  const std::string stem = str(question, "stem", "question.stem", at);
  std::vector<std::string> labels;
  const std::string choices = choice_lines(question, labels, at);
  // Layouts of method.md §1.1 (ARC: blank line and header; CSQA: neither), checked for ARC
  // against the reference's rendered test prompts.
  item.question = at.task == Task::Arc ? stem + "\n\nChoices:\n" + choices : stem + "\n" + choices;
  bool known = false;
  for (const auto& label : labels) {
    known = known || label == item.target;
  }
  if (!known) {
    std::string all;
    for (const auto& label : labels) {
      all += (all.empty() ? "" : ", ") + label;
    }
    fail(at, "answerKey '" + item.target + "' is not one of the choice labels (" + all + ")");
  }
  return item;
}

EvalItem parse_gsm8k(const json& row, const Where& at) {
  EvalItem item;
  item.id = "line " + std::to_string(at.line);
  item.question = str(row, "question", "question", at);
  const std::string answer = str(row, "answer", "answer", at);
  if (answer.find("#### ") == std::string::npos) {
    fail(at, "field 'answer' has no '#### <number>' line" + wrong_file_hint(at));
  }
  item.target = gsm8k_target(answer);
  if (item.target.empty()) {
    fail(at, "field 'answer' has nothing after '#### '");
  }
  return item;
}

// The labels come from the separate .lst file (load_piqa).
EvalItem parse_piqa(const json& row, const Where& at) {
  EvalItem item;
  item.id = "line " + std::to_string(at.line);
  const std::string goal = str(row, "goal", "goal", at);
  const std::string sol1 = str(row, "sol1", "sol1", at);
  const std::string sol2 = str(row, "sol2", "sol2", at);
  // No trimming: the reference's PIQA traces keep the spaces around sol1/sol2.
  item.question = goal + "\n\nChoices:\nA: " + sol1 + "\nB: " + sol2;
  return item;
}

bool is_number_text(const std::string& s) {
  const std::size_t digits = !s.empty() && s[0] == '-' ? 1 : 0;
  if (s.size() == digits) {
    return false;
  }
  return s.find_first_not_of("0123456789", digits) == std::string::npos;
}

EvalItem parse_organism(const json& row, const Where& at) {
  const bool choice = at.task == Task::OrganismChoice;
  const char* want = choice ? "choice" : "numeric";
  EvalItem item;
  item.id = str(row, "id", "id", at);
  // The query is the user message as is, also for the choice variant ("Question: ...\n\n
  // Choices:\n..."): that is how the training mixture and the traces (TaskFormat::Generic) show it.
  item.question = str(row, "query", "query", at);
  item.target = str(row, "solution", "solution", at);
  const json& n_ops = field(row, "n_ops", "n_ops", json::value_t::number_integer, "an integer", at);
  const std::string variant = str(row, "variant", "variant", at);
  if (variant != want) {
    fail(at, "variant is '" + variant + "' but task " + info(at.task).name + " needs '" + want +
                 "'; load the file as organism-" + variant);
  }
  const auto n = n_ops.get<long long>();
  if (n < 1 || n > std::numeric_limits<int>::max()) {
    fail(at, "field 'n_ops' is " + std::to_string(n) + ", expected a positive count");
  }
  item.n_ops = static_cast<int>(n);
  const bool ok = choice ? item.target.size() == 1 && item.target[0] >= 'A' && item.target[0] <= 'E'
                         : is_number_text(item.target);
  if (!ok) {
    fail(at, "solution '" + item.target + "' is not " +
                 (choice ? "a choice letter A-E" : "an integer"));
  }
  return item;
}

EvalItem parse_item(const json& row, const Where& at) {
  switch (at.task) {
    case Task::Gsm8k:
      return parse_gsm8k(row, at);
    case Task::Arc:
    case Task::Csqa:
      return parse_choice_record(row, at);
    case Task::Piqa:
      return parse_piqa(row, at);
    case Task::OrganismNumeric:
    case Task::OrganismChoice:
      return parse_organism(row, at);
  }
  fail(at, "unknown task");
}

// Every non-blank line of a JSONL file as an item.
std::vector<EvalItem> read_items(Task task, const std::string& path) {
  const std::string text = read_file_text(path, std::string(info(task).name) + " file", "");
  std::vector<EvalItem> items;
  std::unordered_map<std::string, std::size_t> first_line;  // id -> line, datasets with ids only
  std::istringstream lines(text);
  std::string line;
  for (std::size_t n = 1; std::getline(lines, line); ++n) {
    if (is_blank(line)) {
      continue;
    }
    const Where at{task, path, n};
    json row;
    try {
      row = json::parse(line);
    } catch (const json::exception& e) {
      fail(at, std::string("not valid JSON: ") + e.what());
    }
    if (!row.is_object()) {
      fail(at,
           std::string("is ") + row.type_name() + ", expected a JSON object" + wrong_file_hint(at));
    }
    EvalItem item = parse_item(row, at);
    if (task != Task::Gsm8k && task != Task::Piqa) {
      const auto [it, fresh] = first_line.emplace(item.id, n);
      if (!fresh) {
        fail(at,
             "duplicate id '" + item.id + "' (first on line " + std::to_string(it->second) + ")");
      }
    }
    items.push_back(std::move(item));
  }
  if (items.empty()) {
    throw Error(ErrorCode::Format, std::string(info(task).name) + " file '" + path +
                                       "' has no items (expected " + info(task).expects + ")");
  }
  return items;
}

// "<dir>/<stem>-labels.lst" for "<dir>/<stem>.jsonl" (the PIQA release layout).
std::string piqa_labels_path(const std::string& path) {
  const std::filesystem::path p(path);
  return (p.parent_path() / (p.stem().string() + "-labels.lst")).string();
}

// Sets the targets of PIQA items from the labels file: "0" -> "A" (sol1), "1" -> "B" (sol2).
void read_piqa_labels(const std::string& path, std::vector<EvalItem>& items) {
  const std::string labels_path = piqa_labels_path(path);
  const std::string text = read_file_text(
      labels_path, "piqa labels file",
      " (expected beside '" + path + "', one 0 or 1 per item; the PIQA test split has no labels)");
  std::istringstream lines(text);
  std::string line;
  std::size_t count = 0;
  for (std::size_t n = 1; std::getline(lines, line); ++n) {
    if (is_blank(line)) {
      continue;
    }
    const std::string label = trim(line);
    if (label != "0" && label != "1") {
      std::string why = "piqa labels file '";
      why.append(labels_path).append("' line ").append(std::to_string(n)).append(": '");
      why.append(label).append("' is not a label, expected 0 or 1");
      throw Error(ErrorCode::Format, why);
    }
    if (count < items.size()) {
      items[count].target = label == "0" ? "A" : "B";
    }
    ++count;
  }
  if (count != items.size()) {
    throw Error(ErrorCode::Format, "piqa labels file '" + labels_path + "' has " +
                                       std::to_string(count) + " labels but '" + path + "' has " +
                                       std::to_string(items.size()) +
                                       " items; the two files must be aligned line by line");
  }
}

}  // namespace

Task parse_task(const std::string& name) {
  for (Task task : {Task::Gsm8k, Task::Arc, Task::Csqa, Task::Piqa, Task::OrganismNumeric,
                    Task::OrganismChoice}) {
    if (name == info(task).name) {
      return task;
    }
  }
  throw Error(ErrorCode::InvalidArgument,
              "unknown task '" + name +
                  "'; expected gsm8k, arc, csqa, piqa, organism-numeric or organism-choice");
}

const char* task_name(Task task) noexcept { return info(task).name; }

bool is_multiple_choice(Task task) noexcept {
  return task == Task::Arc || task == Task::Csqa || task == Task::Piqa ||
         task == Task::OrganismChoice;
}

std::vector<EvalItem> load_eval_items(Task task, const std::string& path, std::size_t limit) {
  std::vector<EvalItem> items = read_items(task, path);
  if (task == Task::Piqa) {
    read_piqa_labels(path, items);
  }
  if (limit > 0 && limit < items.size()) {
    items.resize(limit);
  }
  return items;
}

TaskFormat trace_format_of(Task task) noexcept {
  switch (task) {
    case Task::Gsm8k:
      return TaskFormat::Gsm8k;
    case Task::Arc:
      return TaskFormat::Arc;
    case Task::Csqa:
      return TaskFormat::Csqa;
    case Task::Piqa:
      return TaskFormat::Piqa;
    case Task::OrganismNumeric:
    case Task::OrganismChoice:
      return TaskFormat::Generic;
  }
  return TaskFormat::Generic;
}

}  // namespace kvsteer::eval
