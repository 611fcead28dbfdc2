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
    if (ch == '\\' || ch == '"') out += '\\';
    out += (ch == '\n' || ch == '\r') ? ' ' : ch;
  }
  return out + "\"";
}

std::string data_value(double x) {
  std::array<char, 32> buf{};
  std::snprintf(buf.data(), buf.size(), "%.10g", x);
  return buf.data();
}

struct Line {
  std::string title;
  std::vector<std::pair<double, double>> points;  // (x, accuracy %), sorted by x
};

void write_datablocks(std::ostringstream& s, const std::string& prefix,
                      const std::vector<Line>& lines) {
  for (std::size_t i = 0; i < lines.size(); ++i) {
    s << "$" << prefix << i << " << EOD\n";
    for (const auto& [x, y] : lines[i].points) s << data_value(x) << ' ' << data_value(y) << '\n';
    s << "EOD\n";
  }
}

// One panel of the stability figure; an empty panel says that no sweep of its kind was given.
void write_panel(std::ostringstream& s, const std::string& prefix, const std::vector<Line>& lines,
                 const char* title, const char* xlabel, const char* empty_text,
                 const EvalSummary* baseline) {
  s << "set title " << quoted(title) << "\nset xlabel " << quoted(xlabel) << '\n';
  if (lines.empty()) {
    s << "set label 1 " << quoted(empty_text) << " at graph 0.5, graph 0.5 center\n"
      << "set xrange [0:1]\nplot NaN notitle\nunset label 1\nset autoscale x\n";
    return;
  }
  s << "plot ";
  for (std::size_t i = 0; i < lines.size(); ++i) {
    s << (i == 0 ? "" : ", \\\n     ") << "$" << prefix << i
      << " using 1:2 with linespoints pt 7 ps 0.6 lw 1.5 title " << quoted(lines[i].title);
  }
  if (baseline != nullptr) {
    s << ", \\\n     " << data_value(baseline->accuracy)
      << " with lines dt 2 lw 1.5 lc rgb 'gray40' title "
      << quoted("baseline " + fmt_fixed(baseline->accuracy) + " %");
  }
  s << '\n';
}

// Cache-steering lines: one per (method, c_k, layers), x = c_v.
std::vector<Line> cache_lines(const ReportInputs& inputs, const std::string& task) {
  std::map<std::tuple<int, std::string, double, std::string>, Line> lines;
  for (const Sweep& sweep : inputs.sweeps) {
    if (sweep.task != task || sweep.activation) continue;
    for (const SweepSetting& st : sweep.settings) {
      Line& line = lines[{method_rank(sweep.method), sweep.method, st.c_k, st.layers}];
      if (line.title.empty()) {
        line.title = "c_k=" + fmt_num(st.c_k) + ", layers " + st.layers;
        if (sweep.method != "cache") line.title += " (" + sweep.method + ")";
      }
      line.points.emplace_back(st.c_v, st.accuracy);
    }
  }
  std::vector<Line> out;
  for (auto& [key, line] : lines) out.push_back(std::move(line));
  return out;
}

// Activation-steering lines: one per layer, x = c.
std::vector<Line> activation_lines(const ReportInputs& inputs, const std::string& task) {
  std::map<long, Line> lines;
  for (const Sweep& sweep : inputs.sweeps) {
    if (sweep.task != task || !sweep.activation) continue;
    for (const SweepSetting& st : sweep.settings) {
      Line& line = lines[st.layer];
      line.title = "layer " + std::to_string(st.layer);
      line.points.emplace_back(st.c, st.accuracy);
    }
  }
  std::vector<Line> out;
  for (auto& [key, line] : lines) out.push_back(std::move(line));
  return out;
}

// A bin width of 1, 2 or 5 times a power of ten, at least `raw`.
double nice_width(double raw) {
  if (raw <= 1.0) return 1.0;
  const double decade = std::pow(10.0, std::floor(std::log10(raw)));
  for (double step : {1.0, 2.0, 5.0, 10.0}) {
    if (step * decade >= raw) return step * decade;
  }
  return 10.0 * decade;
}

// Summaries of a task in table order.
std::vector<const EvalSummary*> task_summaries(const ReportInputs& inputs,
                                               const std::string& task) {
  std::vector<const EvalSummary*> out;
  for (const EvalSummary& s : inputs.summaries) {
    if (s.task == task) out.push_back(&s);
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
    if (method == kOrder[i]) return static_cast<int>(i);
  }
  return static_cast<int>(kOrder.size());
}

std::vector<std::string> report_tasks(const ReportInputs& inputs) {
  std::set<std::string> tasks;
  for (const EvalSummary& s : inputs.summaries) tasks.insert(s.task);
  for (const Sweep& s : inputs.sweeps) tasks.insert(s.task);
  return {tasks.begin(), tasks.end()};
}

std::optional<PlotScript> stability_script(const ReportInputs& inputs, const std::string& task) {
  const bool has_sweep = std::any_of(inputs.sweeps.begin(), inputs.sweeps.end(),
                                     [&](const Sweep& s) { return s.task == task; });
  if (!has_sweep) return std::nullopt;
  std::vector<Line> cache = cache_lines(inputs, task);
  std::vector<Line> activation = activation_lines(inputs, task);
  for (auto* lines : {&cache, &activation}) {
    for (Line& line : *lines) std::stable_sort(line.points.begin(), line.points.end());
  }
  const EvalSummary* baseline = nullptr;
  for (const EvalSummary* s : task_summaries(inputs, task)) {
    if (s->method == "baseline") {
      baseline = s;
      break;
    }
  }
  std::ostringstream s;
  write_datablocks(s, "c", cache);
  write_datablocks(s, "a", activation);
  // Fixed margins give both panels the same plot area whatever their keys hold.
  s << "set multiplot layout 1,2 margins 0.085,0.98,0.36,0.86 spacing 0.1,0 title "
    << quoted("Accuracy against the steering coefficient: " + task) << '\n'
    << "set grid\nset yrange [0:100]\nset ylabel \"accuracy (%)\"\n"
    << "set offsets graph 0.04, graph 0.04, 0, 0\nset key below\n";
  write_panel(s, "c", cache, kCachePanelTitle, "c_v (value coefficient)", "no cache-steering sweep",
              baseline);
  write_panel(s, "a", activation, kActivationPanelTitle, "c (activation coefficient)",
              "no activation-steering sweep", baseline);
  s << "unset multiplot\n";
  return PlotScript{"1100,480", s.str()};
}

std::optional<PlotScript> lengths_script(const ReportInputs& inputs, const std::string& task) {
  std::vector<const EvalSummary*> runs;
  double max_len = 0.0;
  for (const EvalSummary* s : task_summaries(inputs, task)) {
    if (s->lengths.empty()) continue;
    runs.push_back(s);
    max_len = std::max(max_len, *std::max_element(s->lengths.begin(), s->lengths.end()));
  }
  if (runs.empty()) return std::nullopt;
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
