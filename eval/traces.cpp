#include "eval/traces.h"

#include <nettle/sha2.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kvsteer/error.h"
#include "kvsteer/file_io.h"

namespace kvsteer::eval {
namespace {

std::string strip(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) {
    return {};
  }
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string str_field(const nlohmann::json& row, const char* key, std::size_t line,
                      const std::string& path) {
  if (!row.contains(key) || !row[key].is_string()) {
    throw Error(ErrorCode::Format, "traces file '" + path + "' line " + std::to_string(line) +
                                       ": field '" + key + "' is missing or not a string");
  }
  return row[key].get<std::string>();
}

}  // namespace

TaskFormat parse_task_format(const std::string& name) {
  if (name == "generic") {
    return TaskFormat::Generic;
  }
  if (name == "arc") {
    return TaskFormat::Arc;
  }
  if (name == "csqa") {
    return TaskFormat::Csqa;
  }
  if (name == "piqa") {
    return TaskFormat::Piqa;
  }
  if (name == "gsm8k") {
    return TaskFormat::Gsm8k;
  }
  throw Error(ErrorCode::InvalidArgument,
              "unknown task '" + name + "'; expected generic, arc, csqa, piqa or gsm8k");
}

const char* task_format_name(TaskFormat format) {
  switch (format) {
    case TaskFormat::Generic:
      return "generic";
    case TaskFormat::Arc:
      return "arc";
    case TaskFormat::Csqa:
      return "csqa";
    case TaskFormat::Piqa:
      return "piqa";
    case TaskFormat::Gsm8k:
      return "gsm8k";
  }
  return "?";
}

std::string format_question(const std::string& raw, TaskFormat format) {
  if (format != TaskFormat::Arc && format != TaskFormat::Csqa) {
    return raw;
  }
  const auto at = raw.find("Choices:");
  if (at == std::string::npos) {
    throw Error(ErrorCode::Format, std::string("a ") + task_format_name(format) +
                                       " question has no 'Choices:' section: '" +
                                       raw.substr(0, 80) + "'");
  }
  std::string question = raw.substr(0, at);
  const std::string choices = strip(raw.substr(at + 8));
  const auto q = question.find("Question: ");
  if (q != std::string::npos) {
    question = question.substr(q + 10);
  }
  question = strip(question);
  return format == TaskFormat::Arc ? question + "\n\nChoices:\n" + choices
                                   : question + "\n" + choices;
}

Traces load_traces(const std::string& path, TaskFormat format) {
  Traces out;
  const std::string bytes = read_text_file(path, "traces file");
  out.sha256 = sha256_hex(bytes);
  std::istringstream lines(bytes);
  std::string line;
  std::size_t n = 0;
  while (std::getline(lines, line)) {
    ++n;
    if (strip(line).empty()) {
      continue;
    }
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(ErrorCode::Format, "traces file '" + path + "' line " + std::to_string(n) +
                                         " is not valid JSON: " + e.what());
    }
    if (!row.is_object()) {
      throw Error(ErrorCode::Format,
                  "traces file '" + path + "' line " + std::to_string(n) + " is not an object");
    }
    TraceRow r;
    const char* qkey = row.contains("query") ? "query" : "question";
    r.question = format_question(str_field(row, qkey, n, path), format);
    r.answer = str_field(row, "solution", n, path);
    if (format == TaskFormat::Gsm8k) {
      std::erase(r.answer, ',');
    }
    r.source = row.contains("source") && row["source"].is_string()
                   ? row["source"].get<std::string>()
                   : "row " + std::to_string(out.rows.size());
    // An empty list is valid: the reference joins it to "" (piqa_oai.jsonl has one such row).
    if (!row.contains("steps") || !row["steps"].is_array()) {
      throw Error(ErrorCode::Format, "traces file '" + path + "' line " + std::to_string(n) +
                                         ": field 'steps' is missing or not a list");
    }
    for (const auto& step : row["steps"]) {
      if (!step.is_string()) {
        throw Error(ErrorCode::Format, "traces file '" + path + "' line " + std::to_string(n) +
                                           ": a step is not a string");
      }
      r.steps.push_back(step.get<std::string>());
    }
    out.rows.push_back(std::move(r));
  }
  if (out.rows.empty()) {
    throw Error(ErrorCode::Format, "traces file '" + path + "' has no rows");
  }
  return out;
}

std::string sha256_hex(const std::string& bytes) {
  sha256_ctx ctx;
  sha256_init(&ctx);
  sha256_update(&ctx, bytes.size(), reinterpret_cast<const std::uint8_t*>(bytes.data()));
  std::uint8_t digest[SHA256_DIGEST_SIZE];
  sha256_digest(&ctx, SHA256_DIGEST_SIZE, digest);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (auto b : digest) {
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
}

}  // namespace kvsteer::eval
