// gnuplot scripts of the report's figures. The data go inline as datablocks ($name << EOD), so a
// figure is one self-contained script.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "eval/report_render.h"

namespace kvsteer::eval::detail {
namespace {

// A gnuplot double-quoted string: backslash and quote escaped, one line.
std::string quoted(const std::string& text) {
  std::string out = "\"";
  for (char ch : text) {
    if (ch == '\\' || ch == '"') {
      out += '\\';
    }
    out += (ch == '\n' || ch == '\r') ? ' ' : ch;
  }
  return out + "\"";
}

std::string data_value(double x) {
  std::array<char, 32> buf{};
  std::snprintf(buf.data(), buf.size(), "%.10g", x);
  return buf.data();
}

// What a row of the stability figure plots against the coefficient.
enum class Metric { Accuracy, Reasoning, Tokens };

std::optional<double> value_of(const SweepSetting& st, Metric metric) {
  switch (metric) {
    case Metric::Accuracy:
      return st.accuracy;
    case Metric::Reasoning:
      return st.reasoning_rate;
    case Metric::Tokens:
      return st.mean_tokens;
  }
  return std::nullopt;
}

double value_of(const EvalSummary& s, Metric metric) {
  switch (metric) {
    case Metric::Accuracy:
      return s.accuracy;
    case Metric::Reasoning:
      return s.reasoning_rate;
    case Metric::Tokens:
      return s.mean_tokens;
  }
  return 0.0;
}

// One line of a panel: the settings of one protocol, as (coefficient, setting) pairs sorted by
// the coefficient.
struct Line {
  std::string title;
  std::vector<std::pair<double, const SweepSetting*>> settings;
};

// Cache-steering lines: one per (method, c_k, layers, offset, vector), x = c_v.
std::vector<Line> cache_lines(const ReportInputs& inputs, const std::string& task) {
  std::map<std::tuple<int, std::string, double, std::string, std::string, std::string>, Line> lines;
  for (const Sweep& sweep : inputs.sweeps) {
    if (sweep.task != task || sweep.activation) {
      continue;
    }
    const std::string protocol = sweep_protocol(inputs, sweep);
    for (const SweepSetting& st : sweep.settings) {
      Line& line = lines[{method_rank(sweep.method), sweep.method, st.c_k, st.layers, sweep.offset,
                          sweep.vector}];
      if (line.title.empty()) {
        line.title = "c_k=" + fmt_num(st.c_k) + ", layers " + st.layers;
        if (!protocol.empty()) {
          line.title += ", " + protocol;
        }
        if (sweep.method != "cache") {
          line.title += " (" + sweep.method + ")";
        }
      }
      line.settings.emplace_back(st.c_v, &st);
    }
  }
  std::vector<Line> out;
  out.reserve(lines.size());
  for (auto& [key, line] : lines) {
    out.push_back(std::move(line));
  }
  return out;
}

// Activation-steering lines: one per layer, x = c.
std::vector<Line> activation_lines(const ReportInputs& inputs, const std::string& task) {
  std::map<long, Line> lines;
  for (const Sweep& sweep : inputs.sweeps) {
    if (sweep.task != task || !sweep.activation) {
      continue;
    }
    for (const SweepSetting& st : sweep.settings) {
      Line& line = lines[st.layer];
      line.title = "layer " + std::to_string(st.layer);
      line.settings.emplace_back(st.c, &st);
    }
  }
  std::vector<Line> out;
  out.reserve(lines.size());
  for (auto& [key, line] : lines) {
    out.push_back(std::move(line));
  }
  return out;
}

// The datablock of a line in one metric: "$<name> << EOD" with the settings that have the value.
// Returns false (and writes nothing) when none has it.
bool write_datablock(std::ostringstream& s, const std::string& name, const Line& line,
                     Metric metric) {
  std::vector<std::pair<double, double>> points;
  for (const auto& [x, st] : line.settings) {
    if (const auto y = value_of(*st, metric)) {
      points.emplace_back(x, *y);
    }
  }
  if (points.empty()) {
    return false;
  }
  s << "$" << name << " << EOD\n";
  for (const auto& [x, y] : points) {
    s << data_value(x) << ' ' << data_value(y) << '\n';
  }
  s << "EOD\n";
  return true;
}

struct Panel {
  bool activation;
  const char* xlabel;
  const char* empty_text;
  const char* prefix;  // datablock names: <prefix><metric><line>
  std::vector<Line> lines;
  // The task's baseline where it may have answered the panel's items (ItemSet::may_equal).
  const EvalSummary* baseline = nullptr;
};

struct Row {
  Metric metric;
  const char* ylabel;
  const char* yrange;
  const char* cache_title;
  const char* activation_title;
};

// One panel of the stability figure; an empty panel says that no sweep of its kind was given.
// Line i keeps linetype i + 1 in every row, so that one key (the last row's) names them all; a
// line without values in this row's metric is in the key only.
void write_panel(std::ostringstream& s, const Panel& panel, const Row& row, bool with_key) {
  s << "set title " << quoted(panel.activation ? row.activation_title : row.cache_title) << '\n';
  s << "set xlabel " << quoted(panel.xlabel) << "\nset ylabel " << quoted(row.ylabel) << '\n'
    << (with_key ? "set key below\n" : "unset key\n");
  std::ostringstream blocks, plot;
  bool any = false;
  for (std::size_t i = 0; i < panel.lines.size(); ++i) {
    const std::string name = std::string(panel.prefix) +
                             std::to_string(static_cast<int>(row.metric)) + "_" + std::to_string(i);
    const std::string style = " with linespoints lt " + std::to_string(i + 1) +
                              " pt 7 ps 0.6 lw 1.5 title " + quoted(panel.lines[i].title);
    plot << (i == 0 ? "plot " : ", \\\n     ");
    if (write_datablock(blocks, name, panel.lines[i], row.metric)) {
      plot << "$" << name << " using 1:2" << style;
      any = true;
    } else {
      plot << "NaN" << style;
    }
  }
  if (!any) {
    // gnuplot cannot autoscale a panel without a point; its text says why it is empty.
    s << "set label 1 "
      << quoted(panel.lines.empty() ? panel.empty_text : "the sweeps give no values for this")
      << " at graph 0.5, graph 0.5 center\nset xrange [0:1]\nset yrange [0:100]\nplot NaN notitle\n"
      << "unset label 1\nset autoscale x\n";
    return;
  }
  s << blocks.str() << "set yrange " << row.yrange << '\n';
  if (panel.baseline != nullptr) {
    const EvalSummary& b = *panel.baseline;
    plot << ", \\\n     " << data_value(value_of(b, row.metric))
         << " with lines dt 2 lw 1.5 lc rgb 'gray40' title "
         << quoted("baseline (dashed): " + fmt_fixed(b.accuracy) + " %, reasoning " +
                   fmt_fixed(b.reasoning_rate) + " %, " + fmt_fixed(b.mean_tokens) + " tokens");
  }
  s << plot.str() << '\n';
}

// A bin width of 1, 2 or 5 times a power of ten, at least `raw`.
double nice_width(double raw) {
  if (raw <= 1.0) {
    return 1.0;
  }
  const double decade = std::pow(10.0, std::floor(std::log10(raw)));
  for (double step : {1.0, 2.0, 5.0, 10.0}) {
    if (step * decade >= raw) {
      return step * decade;
    }
  }
  return 10.0 * decade;
}

// Summaries of a task in table order.
std::vector<const EvalSummary*> task_summaries(const ReportInputs& inputs,
                                               const std::string& task) {
  std::vector<const EvalSummary*> out;
  for (const EvalSummary& s : inputs.summaries) {
    if (s.task == task) {
      out.push_back(&s);
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const EvalSummary* a, const EvalSummary* b) {
    return std::tuple(method_rank(a->method), a->method, a->label) <
           std::tuple(method_rank(b->method), b->method, b->label);
  });
  return out;
}

}  // namespace

std::string fmt_fixed(double x) {
  std::array<char, 32> buf{};
  std::snprintf(buf.data(), buf.size(), "%.1f", x);
  return buf.data();
}

std::string fmt_num(double x) {
  std::array<char, 32> buf{};
  std::snprintf(buf.data(), buf.size(), "%g", x);
  return buf.data();
}

int method_rank(const std::string& method) {
  static const std::array<const char*, 6> kOrder = {"baseline", "cot",   "fewshot",
                                                    "caa",      "cache", "cache+cot"};
  for (std::size_t i = 0; i < kOrder.size(); ++i) {
    if (method == kOrder[i]) {
      return static_cast<int>(i);
    }
  }
  return static_cast<int>(kOrder.size());
}

std::vector<std::string> report_tasks(const ReportInputs& inputs) {
  std::set<std::string> tasks;
  for (const EvalSummary& s : inputs.summaries) {
    tasks.insert(s.task);
  }
  for (const Sweep& s : inputs.sweeps) {
    tasks.insert(s.task);
  }
  return {tasks.begin(), tasks.end()};
}

std::string sweep_protocol(const ReportInputs& inputs, const Sweep& sweep) {
  if (sweep.activation) {
    return {};
  }
  std::set<std::string> offsets, vectors;
  for (const Sweep& other : inputs.sweeps) {
    if (other.task != sweep.task || other.activation) {
      continue;
    }
    offsets.insert(other.offset);
    vectors.insert(other.vector);
  }
  std::vector<std::string> parts;
  if (offsets.size() > 1) {
    parts.push_back(sweep.offset.empty()     ? "offset unknown"
                    : sweep.offset == "none" ? "no offset"
                                             : "offset token " + sweep.offset);
  }
  if (vectors.size() > 1) {
    parts.push_back(sweep.vector.empty() ? "vector unknown" : "vector " + sweep.vector);
  }
  std::string text;
  for (const std::string& part : parts) {
    text += (text.empty() ? "" : ", ") + part;
  }
  return text;
}

std::optional<PlotScript> stability_script(const ReportInputs& inputs, const std::string& task) {
  const bool has_sweep = std::any_of(inputs.sweeps.begin(), inputs.sweeps.end(),
                                     [&](const Sweep& s) { return s.task == task; });
  if (!has_sweep) {
    return std::nullopt;
  }
  std::array<Panel, 2> panels = {
      Panel{false, "c_v (value coefficient)", "no cache-steering sweep", "c",
            cache_lines(inputs, task)},
      Panel{true, "c (activation coefficient)", "no activation-steering sweep", "a",
            activation_lines(inputs, task)}};
  const EvalSummary* baseline = nullptr;
  for (const EvalSummary* s : task_summaries(inputs, task)) {
    if (s->method == "baseline") {
      baseline = s;
      break;
    }
  }
  for (std::size_t p = 0; p < panels.size(); ++p) {
    for (Line& line : panels[p].lines) {
      std::stable_sort(line.settings.begin(), line.settings.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
    }
    const bool same_items =
        baseline != nullptr &&
        std::all_of(inputs.sweeps.begin(), inputs.sweeps.end(), [&](const Sweep& sweep) {
          return sweep.task != task || sweep.activation != panels[p].activation ||
                 sweep.items.may_equal(baseline->items);
        });
    panels[p].baseline = same_items ? baseline : nullptr;
  }
  const std::array<Row, 3> rows = {
      Row{Metric::Accuracy, "accuracy (%)", "[0:100]", kCachePanelTitle, kActivationPanelTitle},
      Row{Metric::Reasoning, "answers that reason (%)", "[0:100]", kCacheReasoningTitle,
          kActivationReasoningTitle},
      Row{Metric::Tokens, "mean answer length (tokens)", "[0:*]", kCacheLengthTitle,
          kActivationLengthTitle}};
  std::ostringstream s;
  // Fixed margins give every panel the same plot area whatever the key below the last row holds.
  s << "set multiplot layout 3,2 margins 0.085,0.98,0.2,0.93 spacing 0.1,0.09 title "
    << quoted("Steering coefficient against accuracy, reasoning and answer length: " + task) << '\n'
    << "set grid\nset offsets graph 0.04, graph 0.04, 0, 0\n";
  for (std::size_t r = 0; r < rows.size(); ++r) {
    for (std::size_t p = 0; p < panels.size(); ++p) {
      write_panel(s, panels[p], rows[r], r + 1 == rows.size());
    }
  }
  s << "unset multiplot\n";
  return PlotScript{"1100,1150", s.str()};
}

std::optional<PlotScript> lengths_script(const ReportInputs& inputs, const std::string& task) {
  std::vector<const EvalSummary*> runs;
  double max_len = 0.0;
  for (const EvalSummary* s : task_summaries(inputs, task)) {
    if (s->lengths.empty()) {
      continue;
    }
    runs.push_back(s);
    max_len = std::max(max_len, *std::max_element(s->lengths.begin(), s->lengths.end()));
  }
  if (runs.empty()) {
    return std::nullopt;
  }
  // About 25 bins over [0, longest answer]; lengths are whole tokens, so bins are >= 1 wide.
  const double width = nice_width(max_len / 25.0);
  const auto n_bins = static_cast<std::size_t>(std::floor(max_len / width)) + 1;
  std::ostringstream s;
  for (std::size_t r = 0; r < runs.size(); ++r) {
    std::vector<double> counts(n_bins, 0.0);
    for (double len : runs[r]->lengths) {
      const auto bin = static_cast<std::size_t>(std::max(0.0, std::floor(len / width)));
      counts[std::min(bin, n_bins - 1)] += 1.0;
    }
    s << "$l" << r << " << EOD\n";
    for (std::size_t b = 0; b < n_bins; ++b) {
      const double share = 100.0 * counts[b] / static_cast<double>(runs[r]->lengths.size());
      s << data_value((static_cast<double>(b) + 0.5) * width) << ' ' << data_value(share) << '\n';
    }
    s << "EOD\n";
  }
  s << "set title " << quoted("Answer lengths: " + task) << '\n'
    << "set xlabel \"generated tokens per answer (bins of " << fmt_num(width) << ")\"\n"
    << "set ylabel \"answers (%)\"\nset grid\nset key top right\n"
    << "set xrange [0:" << data_value(static_cast<double>(n_bins) * width) << "]\n"
    << "set yrange [0:*]\nplot ";
  for (std::size_t r = 0; r < runs.size(); ++r) {
    s << (r == 0 ? "" : ", \\\n     ") << "$l" << r << " using 1:2 with histeps lw 2 title "
      << quoted(runs[r]->label + " (n=" + std::to_string(runs[r]->lengths.size()) + ")");
  }
  s << '\n';
  return PlotScript{"900,440", s.str()};
}

}  // namespace kvsteer::eval::detail
