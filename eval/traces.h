// Teacher traces (JSONL: `query` or `question`, `steps`, `solution`), read and formatted per task
// exactly as the reference implementation does (method.md §1.1).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace kvsteer::eval {

// How a trace row's question text is formatted (method.md §1.1).
enum class TaskFormat {
  Generic,  // `query` or `question` as is; answer = solution
  Arc,      // "Question: q\n\nChoices:\nA: ..." -> q + "\n\nChoices:\n" + choices
  Csqa,     // same split, q + "\n" + choices (no blank line, no header)
  Piqa,     // `question` as is
  Gsm8k,    // `query` as is; answer = solution with ',' removed
};
TaskFormat parse_task_format(const std::string& name);  // throws Error(InvalidArgument)
const char* task_format_name(TaskFormat format);

struct TraceRow {
  std::string source;  // `source` field, or "row <n>"; keys few-shot maps
  std::string question;
  std::vector<std::string> steps;
  std::string answer;
};

struct Traces {
  std::vector<TraceRow> rows;
  std::string sha256;  // of the file's bytes
};

// Reads every non-empty line. Throws Error(NotFound) for a missing file and Error(Format) naming
// the line for invalid JSON or a missing/mistyped field.
Traces load_traces(const std::string& path, TaskFormat format);

// Formats one raw question string for the task (exposed for tests).
std::string format_question(const std::string& raw, TaskFormat format);

std::string sha256_hex(const std::string& bytes);

}  // namespace kvsteer::eval
