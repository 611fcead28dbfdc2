// The readers of files other people make: test sets of every task (eval/datasets.h), teacher
// traces in every task format (eval/traces.h), few-shot map files (eval/contrastive.h) and the
// item records a resumed run reads back (items.jsonl, sweep journals). Each is documented to
// throw kvsteer::Error for bad input; any other exception escaping is a finding.
//
// Input: one selector byte, then the file's bytes. PIQA takes its labels file from the part
// after a "\n#LABELS\n" line.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/contrastive.h"
#include "eval/datasets.h"
#include "eval/runner.h"
#include "eval/traces.h"
#include "fuzz_util.h"
#include "kvsteer/error.h"

namespace {

using namespace kvsteer;
using namespace kvsteer::eval;

constexpr Task kTasks[] = {Task::Gsm8k,           Task::Arc,           Task::Csqa, Task::Piqa,
                           Task::OrganismNumeric, Task::OrganismChoice};
constexpr TaskFormat kFormats[] = {TaskFormat::Generic, TaskFormat::Arc, TaskFormat::Csqa,
                                   TaskFormat::Piqa, TaskFormat::Gsm8k};

const fuzz::ScratchFile& data_file() {
  static const fuzz::ScratchFile f("piqa.jsonl");
  return f;
}
const fuzz::ScratchFile& labels_file() {
  // load_eval_items finds "<stem>-labels.lst" beside "<stem>.jsonl".
  static const fuzz::ScratchFile f("piqa-labels.lst");
  return f;
}

void fuzz_dataset(Task task, std::string_view body) {
  std::string_view data = body, labels;
  if (const auto cut = body.find("\n#LABELS\n"); cut != std::string_view::npos) {
    data = body.substr(0, cut + 1);
    labels = body.substr(cut + 9);
  }
  labels_file().write(labels);
  const auto items = load_eval_items(task, data_file().write(data), 2);
  if (items.empty() || items.size() > 2) std::abort();  // the contract: >= 1 item, limit kept
  for (const auto& item : items) {
    if (is_multiple_choice(task) && item.target.empty()) std::abort();
  }
}

void fuzz_traces(TaskFormat format, std::string_view body) {
  const Traces t = load_traces(data_file().write(body), format);
  if (t.rows.empty() || t.sha256.size() != 64) std::abort();
}

// A few-shot map for four rows with sources "a".."d".
void fuzz_fewshot_map(std::size_t k, std::string_view body) {
  std::vector<TraceRow> rows(4);
  for (std::size_t i = 0; i < rows.size(); ++i) rows[i].source = std::string(1, char('a' + i));
  const NeighbourMap map = neighbours_from_map_file(data_file().write(body), rows, k);
  if (map.size() != rows.size()) std::abort();
  for (std::size_t i = 0; i < map.size(); ++i) {
    if (map[i].size() != k) std::abort();
    for (std::size_t j : map[i]) {
      if (j >= rows.size() || j == i) std::abort();
    }
  }
}

// One line of items.jsonl: parsed as run_eval's resume does (json errors and missing or
// mistyped fields are caught there as std::exception and turned into Error(Format)).
void fuzz_item_record(std::string_view body) {
  try {
    const auto j = nlohmann::ordered_json::parse(body);
    const ItemResult r = ItemResult::from_json(j);
    // What is read back must write out again (as run_eval appends it).
    (void)r.to_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } catch (const nlohmann::json::exception&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t selector = data[0];
  const std::string_view body = fuzz::as_text(data + 1, size - 1);
  try {
    if (selector < 6) {
      fuzz_dataset(kTasks[selector], body);
    } else if (selector < 11) {
      fuzz_traces(kFormats[selector - 6], body);
    } else if (selector < 14) {
      fuzz_fewshot_map(selector - 10, body);
    } else if (selector == 14) {
      fuzz_item_record(body);
    }
  } catch (const Error&) {
    // The documented refusal.
  }
  return 0;
}
