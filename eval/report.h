// The evaluation report: reads the summary JSON of `kvsteer eval` and the sweep JSON of
// `kvsteer sweep`, and writes report.md, a self-contained report.html and SVG figures drawn by
// gnuplot (Debian package gnuplot-nox).
//
// Input formats (version 1; the contract with the eval and sweep commands):
//   summary: {"kind":"kvsteer-eval-summary","version":1,"task":..,"method":..,"label":..,"n":..,
//             "correct":..,"accuracy":..,"ci95":[lo,hi],"reasoning_rate":..,"mean_tokens":..,
//             "median_tokens":..,"lengths":[..],"model":{"path":..,"fingerprint":..},
//             "commit":.., "config":{"data":..,"limit":..}, ...}
//   sweep:   {"kind":"kvsteer-sweep","version":1,"task":..,"method":..,"settings":[{..}, ..],
//             "config":{"data":..,"limit":..,"vector":..,"steering":{"offset_token":..}}}
//            cache and cache+cot settings carry "c_k", "c_v", "layers"; caa settings carry
//            "layer", "c"; all carry "n", "accuracy" and optionally "correct", "ci95",
//            "reasoning_rate", "mean_tokens".
//   "config" and each of its fields are optional: they say which items a run answered and, for a
//   cache-steering sweep, its protocol.
// Percentages (accuracy, ci95, rates) are in [0, 100]; lengths are generated tokens per item.
//
// Thread-compatible: the functions share no state; distinct output folders may be written from
// distinct threads.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace kvsteer::eval {

inline constexpr const char* kSummaryKind = "kvsteer-eval-summary";
inline constexpr const char* kSweepKind = "kvsteer-sweep";
// Newest input version this code reads; a file with a larger "version" is refused.
inline constexpr int kReportInputVersion = 1;

// A 95 % confidence interval in percent, [lo, hi].
struct Interval {
  double lo = 0.0;
  double hi = 0.0;
};

// Which items a run or sweep answered: its test file and --limit, where its file says.
struct ItemSet {
  std::string data;           // "" when unknown
  std::optional<long> limit;  // 0: all items; nullopt when unknown
  // False only when both name their files and limits and those differ: then a baseline of one is
  // no reference for the other.
  bool may_equal(const ItemSet& other) const;
};

// One run of `kvsteer eval` on one (task, method).
struct EvalSummary {
  std::string file;  // path it was read from
  std::string task;
  std::string method;  // baseline, cot, fewshot, caa, cache, cache+cot (others are kept as is)
  std::string label;   // "label", or the method when absent
  long n = 0;          // items evaluated
  long correct = 0;
  double accuracy = 0.0;          // percent
  std::optional<Interval> ci95;   // percent; absent when the file has null
  double reasoning_rate = 0.0;    // percent of answers that reason
  double mean_tokens = 0.0;       // generated tokens per item
  double median_tokens = 0.0;     // generated tokens per item
  std::vector<double> lengths;    // [n] generated tokens per item
  std::string model_path;         // "" when the file has none
  std::string model_fingerprint;  // "" when the file has none
  std::string commit;             // "" when the file has none
  ItemSet items;
};

// One setting of a coefficient sweep.
struct SweepSetting {
  // Cache steering (methods cache, cache+cot): key and value coefficients and the layer list.
  double c_k = 0.0;
  double c_v = 0.0;
  std::string layers;
  // Activation steering (method caa): the layer index and the coefficient.
  long layer = 0;
  double c = 0.0;

  long n = 0;
  double accuracy = 0.0;  // percent
  std::optional<Interval> ci95;
  std::optional<double> reasoning_rate;  // percent
  std::optional<double> mean_tokens;
};

// A sweep over coefficients for one (task, method).
struct Sweep {
  std::string file;
  std::string task;
  std::string method;       // cache, cache+cot or caa
  bool activation = false;  // true for caa (settings use layer/c), false for cache steering
  std::vector<SweepSetting> settings;
  ItemSet items;
  // Cache steering's protocol, "" when the file does not say: the vector file's name without its
  // folder and extension, and the offset token ("none", or its id).
  std::string vector;
  std::string offset;
};

struct ReportInputs {
  std::vector<EvalSummary> summaries;  // in the order the files were given / found
  std::vector<Sweep> sweeps;
};

// Reads one summary or sweep file. Throws Error(NotFound) when the file is missing, and
// Error(Format) naming the file for invalid JSON, an unknown "kind", a "version" newer than
// kReportInputVersion, or a missing or mistyped field (the message names the field, e.g.
// "settings[2].c_v").
void load_report_file(const std::string& path, ReportInputs& into);

// Reads every path: a file is read with load_report_file (any other kind is an error); a folder is
// scanned non-recursively, in name order, for *.json files whose "kind" is a summary or a sweep
// (other JSON files are skipped; a .json file that does not parse is an error). A file reached
// twice (named twice, or named and inside a folder also named) is read once. Throws
// Error(InvalidArgument) when there is nothing to report, and Error(Format) when two summaries
// have the same task, method and label.
ReportInputs load_report_inputs(const std::vector<std::string>& paths);

struct ReportOptions {
  std::string out_dir;  // created when missing
  std::string title = "kvsteer evaluation report";
  std::string gnuplot = "gnuplot";  // executable: a name searched on PATH, or a path
};

// Writes out_dir/report.md, out_dir/report.html and the SVG figures (stability-<task>.svg for
// each task with sweeps, lengths-<task>.svg for each task with answer lengths). Everything is made
// in a staging folder inside out_dir first and moved into place only once complete, so a failure
// leaves no partial report. Returns the paths written, figures first, report.html last.
// Throws Error(NotFound) when gnuplot cannot be found (the message names gnuplot-nox),
// Error(Backend) when gnuplot fails, Error(Io) when a file cannot be written.
std::vector<std::string> write_report(const ReportInputs& inputs, const ReportOptions& options);

}  // namespace kvsteer::eval
