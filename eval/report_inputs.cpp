// Reading the report's inputs: summary and sweep JSON files, checked field by field.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <tuple>

#include "eval/report.h"
#include "kvsteer/error.h"
#include "kvsteer/file_io.h"

namespace kvsteer::eval {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw Error(ErrorCode::Format, "'" + file + "': " + what);
}

// Error messages are one line: the CLI prints exactly one.
std::string one_line(std::string text) {
  std::replace_if(
      text.begin(), text.end(), [](char ch) { return ch == '\n' || ch == '\r'; }, ' ');
  return text;
}

// Reads the fields of one JSON object and names the file and the field path in every error.
class Fields {
 public:
  Fields(const json& object, const std::string& file, std::string prefix)
      : object_(object), file_(file), prefix_(std::move(prefix)) {}

  // The field's value; absent is an error, null is returned as is.
  const json& get(const char* key) const {
    const auto it = object_.find(key);
    if (it == object_.end()) {
      fail(file_, "missing field '" + name(key) + "'");
    }
    return *it;
  }
  // nullptr when the field is absent or null.
  const json* find(const char* key) const {
    const auto it = object_.find(key);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }

  double number(const char* key) const { return as_number(get(key), key); }
  std::optional<double> optional_number(const char* key) const {
    const json* value = find(key);
    return value != nullptr ? std::optional<double>(as_number(*value, key)) : std::nullopt;
  }
  long integer(const char* key) const {
    const double value = number(key);
    if (value != std::floor(value) || value < 0 || value > 1e15) {
      wrong(key, "a non-negative integer", json(value).dump());
    }
    return static_cast<long>(value);
  }
  std::string string(const char* key, bool allow_empty = false) const {
    const json& value = get(key);
    if (!value.is_string()) {
      wrong(key, "a string", value.type_name());
    }
    std::string text = value.get<std::string>();
    if (text.empty() && !allow_empty) {
      wrong(key, "a non-empty string", "\"\"");
    }
    return text;
  }
  std::string optional_string(const char* key) const {
    const json* value = find(key);
    if (value == nullptr) {
      return {};
    }
    return value->is_string() ? value->get<std::string>() : value->dump();
  }
  // [lo, hi] in percent; the field must be present and may be null.
  std::optional<Interval> interval(const char* key, bool required) const {
    if (required) {
      get(key);
    }
    const json* value = find(key);
    if (value == nullptr) {
      return std::nullopt;
    }
    if (!value->is_array() || value->size() != 2 || !(*value)[0].is_number() ||
        !(*value)[1].is_number()) {
      wrong(key, "an array [lo, hi] of two numbers", value->dump());
    }
    return Interval{(*value)[0].get<double>(), (*value)[1].get<double>()};
  }
  std::vector<double> numbers(const char* key) const {
    const json& value = get(key);
    if (!value.is_array()) {
      wrong(key, "an array of numbers", value.type_name());
    }
    std::vector<double> out;
    out.reserve(value.size());
    for (std::size_t i = 0; i < value.size(); ++i) {
      const json& item = value[i];
      if (!item.is_number() || !std::isfinite(item.get<double>())) {
        fail(file_, "field '" + name(key) + "[" + std::to_string(i) + "]' is " + item.dump() +
                        ", expected a number");
      }
      out.push_back(item.get<double>());
    }
    return out;
  }

 private:
  std::string name(const char* key) const { return prefix_ + key; }
  [[noreturn]] void wrong(const char* key, const std::string& expected,
                          const std::string& got) const {
    fail(file_, "field '" + name(key) + "' is " + got + ", expected " + expected);
  }
  double as_number(const json& value, const char* key) const {
    if (!value.is_number()) {
      wrong(key, "a number", value.is_null() ? "null" : value.type_name());
    }
    const double x = value.get<double>();
    if (!std::isfinite(x)) {
      wrong(key, "a finite number", value.dump());
    }
    return x;
  }

  const json& object_;
  const std::string& file_;
  std::string prefix_;
};

// The optional "config" object: which items were answered and, for a sweep, its protocol.
struct RunConfig {
  ItemSet items;
  std::string vector;
  std::string offset;
};

RunConfig parse_config(const Fields& f, const std::string& file) {
  RunConfig out;
  const json* config = f.find("config");
  if (config == nullptr) {
    return out;
  }
  if (!config->is_object()) {
    fail(file, "field 'config' is " + config->dump() + ", expected an object");
  }
  const Fields c(*config, file, "config.");
  out.items.data = c.optional_string("data");
  if (c.find("limit") != nullptr) {
    out.items.limit = c.integer("limit");
  }
  if (const std::string vector = c.optional_string("vector"); !vector.empty()) {
    out.vector = fs::path(vector).stem().string();
  }
  if (const json* steering = c.find("steering"); steering != nullptr && steering->is_object()) {
    if (const auto it = steering->find("offset_token"); it != steering->end()) {
      if (it->is_null()) {
        out.offset = "none";
      } else if (it->is_number_integer()) {
        out.offset = std::to_string(it->get<long>());
      } else {
        fail(file, "field 'config.steering.offset_token' is " + it->dump() +
                       ", expected a token id or null");
      }
    }
  }
  return out;
}

EvalSummary parse_summary(const json& root, const std::string& file) {
  const Fields f(root, file, "");
  EvalSummary s;
  s.file = file;
  s.task = f.string("task");
  s.method = f.string("method");
  s.label = f.optional_string("label");
  if (s.label.empty()) {
    s.label = s.method;
  }
  s.n = f.integer("n");
  s.correct = f.integer("correct");
  s.accuracy = f.number("accuracy");
  s.ci95 = f.interval("ci95", true);
  s.reasoning_rate = f.number("reasoning_rate");
  s.mean_tokens = f.number("mean_tokens");
  s.median_tokens = f.number("median_tokens");
  s.lengths = f.numbers("lengths");
  if (const json* model = f.find("model"); model != nullptr) {
    if (!model->is_object()) {
      fail(file, "field 'model' is " + model->dump() + ", expected an object");
    }
    const Fields m(*model, file, "model.");
    s.model_path = m.optional_string("path");
    s.model_fingerprint = m.optional_string("fingerprint");
  }
  s.commit = f.optional_string("commit");
  s.items = parse_config(f, file).items;
  return s;
}

Sweep parse_sweep(const json& root, const std::string& file) {
  const Fields f(root, file, "");
  Sweep sweep;
  sweep.file = file;
  sweep.task = f.string("task");
  sweep.method = f.string("method");
  if (sweep.method == "caa") {
    sweep.activation = true;
  } else if (sweep.method != "cache" && sweep.method != "cache+cot") {
    fail(file,
         "sweep method '" + sweep.method + "' is not supported: expected cache, cache+cot or caa");
  }
  const json& settings = f.get("settings");
  if (!settings.is_array()) {
    fail(file, std::string("field 'settings' is ") + settings.type_name() + ", expected an array");
  }
  for (std::size_t i = 0; i < settings.size(); ++i) {
    const std::string prefix = "settings[" + std::to_string(i) + "].";
    if (!settings[i].is_object()) {
      fail(file, "field '" + prefix.substr(0, prefix.size() - 1) + "' is " + settings[i].dump() +
                     ", expected an object");
    }
    const Fields s(settings[i], file, prefix);
    SweepSetting setting;
    if (sweep.activation) {
      setting.layer = s.integer("layer");
      setting.c = s.number("c");
    } else {
      setting.c_k = s.number("c_k");
      setting.c_v = s.number("c_v");
      const json& layers = s.get("layers");
      setting.layers = layers.is_string() ? layers.get<std::string>() : layers.dump();
    }
    setting.n = s.integer("n");
    setting.accuracy = s.number("accuracy");
    setting.ci95 = s.interval("ci95", false);
    setting.reasoning_rate = s.optional_number("reasoning_rate");
    setting.mean_tokens = s.optional_number("mean_tokens");
    sweep.settings.push_back(std::move(setting));
  }
  RunConfig config = parse_config(f, file);
  sweep.items = std::move(config.items);
  sweep.vector = std::move(config.vector);
  sweep.offset = std::move(config.offset);
  return sweep;
}

json parse_json(const std::string& path) {
  try {
    return json::parse(read_text_file(path, "report input"));
  } catch (const json::parse_error& e) {
    std::string what = e.what();
    // Drop nlohmann's "[json.exception.parse_error.101] " tag; keep position and reason.
    if (const auto close = what.find("] "); what.rfind("[json.", 0) == 0 && close != what.npos) {
      what = what.substr(close + 2);
    }
    fail(path, "not valid JSON: " + one_line(what));
  }
}

// The "kind" of a parsed file, or "" when it has none.
std::string kind_of(const json& root) {
  if (!root.is_object()) {
    return {};
  }
  const auto it = root.find("kind");
  return it != root.end() && it->is_string() ? it->get<std::string>() : std::string();
}

void add_parsed(const json& root, const std::string& path, ReportInputs& into) {
  const std::string kind = kind_of(root);
  if (kind != kSummaryKind && kind != kSweepKind) {
    if (!root.is_object()) {
      fail(path, std::string("holds a JSON ") + root.type_name() + ", expected an object with " +
                     "\"kind\": \"" + kSummaryKind + "\" or \"" + kSweepKind + "\"");
    }
    if (!root.contains("kind")) {
      fail(path, std::string("missing field 'kind' (expected \"") + kSummaryKind + "\" or \"" +
                     kSweepKind + "\")");
    }
    fail(path, "unknown kind " + root["kind"].dump() + ": expected \"" + kSummaryKind +
                   "\" (kvsteer eval) or \"" + kSweepKind + "\" (kvsteer sweep)");
  }
  const long version = Fields(root, path, "").integer("version");
  if (version > kReportInputVersion) {
    fail(path, kind + " version " + std::to_string(version) +
                   " is newer than this kvsteer reads (" + std::to_string(kReportInputVersion) +
                   "): update kvsteer");
  }
  if (version < 1) {
    fail(path, "field 'version' is " + std::to_string(version) + ", expected 1");
  }
  if (kind == kSummaryKind) {
    into.summaries.push_back(parse_summary(root, path));
  } else {
    into.sweeps.push_back(parse_sweep(root, path));
  }
}

// The *.json files of a folder (not its subfolders), in name order.
std::vector<std::string> json_files_in(const std::string& folder) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(folder, ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".json") {
      files.push_back(entry.path().string());
    }
  }
  if (ec) {
    throw Error(ErrorCode::Io, "cannot list folder '" + folder + "': " + ec.message());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// True the first time a file is seen, so that a file named twice (or named and inside a folder
// also named) is read once.
bool first_visit(const std::string& path, std::set<std::string>& seen) {
  std::error_code ec;
  const fs::path canonical = fs::weakly_canonical(path, ec);
  return seen.insert(ec ? path : canonical.string()).second;
}

void check_duplicates(const ReportInputs& inputs) {
  std::map<std::tuple<std::string, std::string, std::string>, const EvalSummary*> seen;
  for (const EvalSummary& s : inputs.summaries) {
    const auto [it, fresh] = seen.emplace(std::tuple(s.task, s.method, s.label), &s);
    if (!fresh) {
      throw Error(ErrorCode::Format, "two summaries for task '" + s.task + "', method '" +
                                         s.method + "', label '" + s.label + "': '" +
                                         it->second->file + "' and '" + s.file +
                                         "'; give one of them, or distinct labels");
    }
  }
}

}  // namespace

bool ItemSet::may_equal(const ItemSet& other) const {
  if (data.empty() || other.data.empty() || !limit || !other.limit) {
    return true;
  }
  return fs::path(data).lexically_normal() == fs::path(other.data).lexically_normal() &&
         *limit == *other.limit;
}

void load_report_file(const std::string& path, ReportInputs& into) {
  add_parsed(parse_json(path), path, into);
}

ReportInputs load_report_inputs(const std::vector<std::string>& paths) {
  if (paths.empty()) {
    throw Error(ErrorCode::InvalidArgument,
                "no inputs: pass summary or sweep JSON files, or folders that hold them");
  }
  ReportInputs inputs;
  std::set<std::string> seen;
  for (const std::string& path : paths) {
    std::error_code ec;
    if (!fs::is_directory(path, ec)) {
      if (first_visit(path, seen)) {
        load_report_file(path, inputs);
      }
      continue;
    }
    for (const std::string& file : json_files_in(path)) {
      if (!first_visit(file, seen)) {
        continue;
      }
      const json root = parse_json(file);
      const std::string kind = kind_of(root);
      if (kind == kSummaryKind || kind == kSweepKind) {
        add_parsed(root, file, inputs);
      }
    }
  }
  if (inputs.summaries.empty() && inputs.sweeps.empty()) {
    throw Error(ErrorCode::InvalidArgument, std::string("no inputs: the folders given hold no \"") +
                                                kSummaryKind + "\" or \"" + kSweepKind +
                                                "\" JSON files");
  }
  check_duplicates(inputs);
  return inputs;
}

}  // namespace kvsteer::eval
