// report.md and report.html. Both are built from the same tables; the HTML inlines the SVG files
// so that it is one self-contained file, the markdown links them by relative path.
#include <algorithm>
#include <initializer_list>
#include <map>
#include <set>
#include <sstream>
#include <string_view>
#include <tuple>

#include "eval/report_render.h"

namespace kvsteer::eval::detail {
namespace {

constexpr const char* kNone = "—";

struct Table {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::size_t text_columns = 1;  // leading columns of text, left-aligned; the rest are numbers
};

// The row name of each summary in the accuracy table: the method, or, where some task has more
// than one run of the method, the run's label (with the method named).
std::map<const EvalSummary*, std::string> row_names(const ReportInputs& inputs) {
  std::map<std::pair<std::string, std::string>, int> runs;  // (method, task) -> count
  for (const EvalSummary& s : inputs.summaries) {
    ++runs[{s.method, s.task}];
  }
  std::set<std::string> split;
  for (const auto& [key, count] : runs) {
    if (count > 1) {
      split.insert(key.first);
    }
  }
  std::map<const EvalSummary*, std::string> out;
  for (const EvalSummary& s : inputs.summaries) {
    if (split.count(s.method) == 0) {
      out[&s] = s.method;
    } else {
      out[&s] = s.label.rfind(s.method, 0) == 0 ? s.label : s.method + " (" + s.label + ")";
    }
  }
  return out;
}

// Summaries ordered by method, then row name, then task.
std::vector<const EvalSummary*> ordered(const ReportInputs& inputs,
                                        const std::map<const EvalSummary*, std::string>& names) {
  std::vector<const EvalSummary*> out;
  for (const EvalSummary& s : inputs.summaries) {
    out.push_back(&s);
  }
  std::stable_sort(out.begin(), out.end(), [&](const EvalSummary* a, const EvalSummary* b) {
    return std::tuple(method_rank(a->method), names.at(a), a->task) <
           std::tuple(method_rank(b->method), names.at(b), b->task);
  });
  return out;
}

std::string accuracy_cell(const EvalSummary& s) {
  std::string cell = fmt_fixed(s.accuracy);
  if (s.ci95) {
    cell += " [" + fmt_fixed(s.ci95->lo) + ", " + fmt_fixed(s.ci95->hi) + "]";
  }
  return cell + " (n=" + std::to_string(s.n) + ")";
}

// Method x task: accuracy with the 95 % interval and n.
Table accuracy_table(const ReportInputs& inputs) {
  const auto names = row_names(inputs);
  std::vector<std::string> tasks;
  for (const std::string& task : report_tasks(inputs)) {
    const bool has_summary = std::any_of(inputs.summaries.begin(), inputs.summaries.end(),
                                         [&](const EvalSummary& s) { return s.task == task; });
    if (has_summary) {
      tasks.push_back(task);
    }
  }
  Table table;
  table.header.push_back("method");
  table.header.insert(table.header.end(), tasks.begin(), tasks.end());
  std::map<std::string, std::size_t> row_of;
  for (const EvalSummary* s : ordered(inputs, names)) {
    const std::string& name = names.at(s);
    if (row_of.count(name) == 0) {
      row_of[name] = table.rows.size();
      table.rows.emplace_back(tasks.size() + 1, kNone);
      table.rows.back()[0] = name;
    }
    const auto column = std::find(tasks.begin(), tasks.end(), s->task) - tasks.begin();
    table.rows[row_of[name]][static_cast<std::size_t>(column) + 1] = accuracy_cell(*s);
  }
  return table;
}

// One row per run: reasoning rate and answer lengths.
Table length_table(const ReportInputs& inputs) {
  const auto names = row_names(inputs);
  std::vector<const EvalSummary*> runs = ordered(inputs, names);
  std::stable_sort(runs.begin(), runs.end(),
                   [](const EvalSummary* a, const EvalSummary* b) { return a->task < b->task; });
  Table table{{"task", "method", "reasoning (%)", "mean tokens", "median tokens", "n"}, {}, 2};
  for (const EvalSummary* s : runs) {
    table.rows.push_back({s->task, names.at(s), fmt_fixed(s->reasoning_rate),
                          fmt_fixed(s->mean_tokens), fmt_num(s->median_tokens),
                          std::to_string(s->n)});
  }
  return table;
}

std::string setting_text(const Sweep& sweep, const SweepSetting& st) {
  if (sweep.activation) {
    return "layer " + std::to_string(st.layer) + ", c=" + fmt_num(st.c);
  }
  return "c_k=" + fmt_num(st.c_k) + ", c_v=" + fmt_num(st.c_v) + ", layers " + st.layers;
}

// One row per sweep: its size and its best setting.
Table sweep_table(const ReportInputs& inputs) {
  std::vector<const Sweep*> sweeps;
  for (const Sweep& s : inputs.sweeps) {
    sweeps.push_back(&s);
  }
  std::stable_sort(sweeps.begin(), sweeps.end(), [](const Sweep* a, const Sweep* b) {
    return std::tuple(a->task, method_rank(a->method)) <
           std::tuple(b->task, method_rank(b->method));
  });
  Table table{{"task", "method", "best setting", "accuracy (%)", "n", "settings"}, {}, 3};
  for (const Sweep* sweep : sweeps) {
    const auto best = std::max_element(
        sweep->settings.begin(), sweep->settings.end(),
        [](const SweepSetting& a, const SweepSetting& b) { return a.accuracy < b.accuracy; });
    if (best == sweep->settings.end()) {
      table.rows.push_back({sweep->task, sweep->method, kNone, kNone, kNone, "0"});
      continue;
    }
    std::string accuracy = fmt_fixed(best->accuracy);
    if (best->ci95) {
      accuracy += " [" + fmt_fixed(best->ci95->lo) + ", " + fmt_fixed(best->ci95->hi) + "]";
    }
    const std::string protocol = sweep_protocol(inputs, *sweep);
    const std::string method =
        protocol.empty() ? sweep->method : sweep->method + " (" + protocol + ")";
    table.rows.push_back({sweep->task, method, setting_text(*sweep, *best), accuracy,
                          std::to_string(best->n), std::to_string(sweep->settings.size())});
  }
  return table;
}

std::string or_none(const std::string& text) { return text.empty() ? kNone : text; }

// One row per input file.
Table inputs_table(const ReportInputs& inputs) {
  Table table{{"file", "kind", "task", "method", "label", "model fingerprint", "commit"}, {}, 7};
  for (const EvalSummary& s : inputs.summaries) {
    table.rows.push_back({s.file, "summary", s.task, s.method, s.label,
                          or_none(s.model_fingerprint), or_none(s.commit)});
  }
  for (const Sweep& s : inputs.sweeps) {
    table.rows.push_back({s.file, "sweep", s.task, s.method, kNone, kNone, kNone});
  }
  return table;
}

// "`a` (3 files), `b` (1 file)" over the summaries' values of a field; "" when none has one.
std::map<std::string, int> value_counts(const ReportInputs& inputs,
                                        std::string EvalSummary::*field) {
  std::map<std::string, int> counts;
  for (const EvalSummary& s : inputs.summaries) {
    if (!(s.*field).empty()) {
      ++counts[s.*field];
    }
  }
  return counts;
}

// Plain sentences about provenance, shared by both formats (code spans marked with `).
std::vector<std::string> provenance_notes(const ReportInputs& inputs) {
  std::vector<std::string> notes;
  const auto list = [](const std::map<std::string, int>& counts) {
    std::string out;
    for (const auto& [value, count] : counts) {
      out += (out.empty() ? "" : ", ") + std::string("`") + value + "` (" + std::to_string(count) +
             (count == 1 ? " summary)" : " summaries)");
    }
    return out;
  };
  const auto fingerprints = value_counts(inputs, &EvalSummary::model_fingerprint);
  const auto commits = value_counts(inputs, &EvalSummary::commit);
  notes.push_back("Model fingerprints: " +
                  (fingerprints.empty() ? std::string("none recorded") : list(fingerprints)) + ".");
  notes.push_back("Commits: " + (commits.empty() ? std::string("none recorded") : list(commits)) +
                  ".");
  if (fingerprints.size() > 1) {
    notes.push_back("Warning: the summaries come from " + std::to_string(fingerprints.size()) +
                    " different models; compare their numbers with care.");
  }
  return notes;
}

// --- markdown ----------------------------------------------------------------------------------

std::string md_cell(const std::string& text) {
  std::string out;
  for (char ch : text) {
    if (ch == '|') {
      out += '\\';
    }
    out += (ch == '\n' || ch == '\r') ? ' ' : ch;
  }
  return out;
}

std::string md_table(const Table& table) {
  std::ostringstream s;
  const auto row = [&](const std::vector<std::string>& cells) {
    s << '|';
    for (const std::string& c : cells) {
      s << ' ' << md_cell(c) << " |";
    }
    s << '\n';
  };
  row(table.header);
  s << '|';
  for (std::size_t i = 0; i < table.header.size(); ++i) {
    s << (i < table.text_columns ? " --- |" : " ---: |");
  }
  s << '\n';
  for (const auto& r : table.rows) {
    row(r);
  }
  return s.str();
}

void md_figures(std::ostringstream& s, const std::vector<Figure>& figures, const char* prefix) {
  for (const Figure& f : figures) {
    if (f.file.rfind(prefix, 0) != 0) {
      continue;
    }
    s << "### " << f.task << "\n\n![" << f.caption << "](" << f.file << ")\n\n";
  }
}

// --- HTML --------------------------------------------------------------------------------------

std::string html_escape(const std::string& text) {
  std::string out;
  for (char ch : text) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += ch;
    }
  }
  return out;
}

// Escaped text with `code spans` as <code>.
std::string html_text(const std::string& text) {
  std::string out;
  bool code = false;
  for (char ch : text) {
    if (ch == '`') {
      out += code ? "</code>" : "<code>";
      code = !code;
    } else {
      out += html_escape(std::string(1, ch));
    }
  }
  return code ? out + "</code>" : out;
}

std::string html_table(const Table& table) {
  std::ostringstream s;
  s << "<table>\n<thead><tr>";
  for (const std::string& h : table.header) {
    s << "<th>" << html_escape(h) << "</th>";
  }
  s << "</tr></thead>\n<tbody>\n";
  for (const auto& row : table.rows) {
    s << "<tr>";
    for (std::size_t i = 0; i < row.size(); ++i) {
      s << (i < table.text_columns ? "<td>" : "<td class=\"v\">") << html_escape(row[i]) << "</td>";
    }
    s << "</tr>\n";
  }
  s << "</tbody>\n</table>\n";
  return s.str();
}

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  for (std::size_t at = text.find(from); at != std::string::npos;
       at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
}

// The parts joined in one allocation (inline_svg builds two strings per id of every figure).
std::string concat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view part : parts) {
    out.append(part);
  }
  return out;
}

// The SVG element of a figure, ready to inline: the XML prolog dropped, the <title> set to the
// caption, and every id prefixed so that the figures of one page do not share ids.
std::string inline_svg(const Figure& figure, const std::string& prefix) {
  std::string svg = figure.svg.substr(figure.svg.find("<svg"));
  std::set<std::string> ids;
  for (const char* open : {"id='", "id=\""}) {
    const char close = open[3];
    for (std::size_t at = svg.find(open); at != std::string::npos; at = svg.find(open, at + 1)) {
      const std::size_t begin = at + 4;
      const std::size_t end = svg.find(close, begin);
      if (end != std::string::npos) {
        ids.insert(svg.substr(begin, end - begin));
      }
    }
  }
  for (const std::string& id : ids) {
    for (const char* q : {"'", "\""}) {
      replace_all(svg, concat({"id=", q, id, q}), concat({"id=", q, prefix, id, q}));
      replace_all(svg, concat({"#", id, q}), concat({"#", prefix, id, q}));
    }
    replace_all(svg, concat({"url(#", id, ")"}), concat({"url(#", prefix, id, ")"}));
  }
  replace_all(svg, "<title>Gnuplot</title>", "<title>" + html_escape(figure.caption) + "</title>");
  return svg;
}

void html_figures(std::ostringstream& s, const std::vector<Figure>& figures, const char* prefix) {
  for (std::size_t i = 0; i < figures.size(); ++i) {
    const Figure& f = figures[i];
    if (f.file.rfind(prefix, 0) != 0) {
      continue;
    }
    s << "<h3>" << html_escape(f.task) << "</h3>\n<figure>\n"
      << inline_svg(f, "f" + std::to_string(i) + "-") << "\n<figcaption>" << html_escape(f.caption)
      << " (<code>" << html_escape(f.file) << "</code>)</figcaption>\n</figure>\n";
  }
}

constexpr const char* kCss =
    R"(body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em}th{background:#f2f2f2}td.v{text-align:right}
tbody tr:nth-child(even){background:#fafafa}
figure{margin:1em 0}figure svg{width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}code{font-size:.9em;background:#f4f4f4;padding:0 .2em}
)";

bool has_figure(const std::vector<Figure>& figures, const char* prefix) {
  return std::any_of(figures.begin(), figures.end(),
                     [&](const Figure& f) { return f.file.rfind(prefix, 0) == 0; });
}

constexpr const char* kAccuracyNote =
    "Accuracy in % with its 95 % confidence interval in brackets; n = items evaluated.";
constexpr const char* kLengthNote =
    "Reasoning: % of answers that reason before answering. Lengths are generated tokens per "
    "answer.";
constexpr const char* kStabilityNote =
    "Accuracy, reasoning rate and mean answer length against the steering coefficient: cache "
    "steering against c_v (one line per c_k, layer set and, where the sweeps differ in them, "
    "offset protocol and vector), activation steering against c (one line per layer). The table "
    "gives each sweep's most accurate setting. The dashed line is the task's baseline, drawn "
    "unless its run names other items than the sweeps' (another test file or limit).";

}  // namespace

std::string render_markdown(const ReportInputs& inputs, const std::vector<Figure>& figures,
                            const std::string& title) {
  std::ostringstream s;
  s << "# " << title << "\n\n## Accuracy\n\n";
  if (inputs.summaries.empty()) {
    s << "No evaluation summaries were given.\n\n";
  } else {
    s << kAccuracyNote << "\n\n" << md_table(accuracy_table(inputs)) << "\n";
    s << "## Reasoning and answer length\n\n"
      << kLengthNote << "\n\n"
      << md_table(length_table(inputs)) << "\n";
  }
  if (!inputs.sweeps.empty()) {
    s << "## Stability\n\n" << kStabilityNote << "\n\n" << md_table(sweep_table(inputs)) << "\n";
    md_figures(s, figures, "stability-");
  }
  if (has_figure(figures, "lengths-")) {
    s << "## Answer lengths\n\n";
    md_figures(s, figures, "lengths-");
  }
  s << "## Inputs\n\n" << md_table(inputs_table(inputs)) << "\n";
  for (const std::string& note : provenance_notes(inputs)) {
    s << note << "\n\n";
  }
  return s.str();
}

std::string render_html(const ReportInputs& inputs, const std::vector<Figure>& figures,
                        const std::string& title) {
  std::ostringstream s;
  s << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>"
    << html_escape(title) << "</title>\n<style>\n"
    << kCss << "</style>\n</head>\n<body>\n<h1>" << html_escape(title)
    << "</h1>\n<h2>Accuracy</h2>\n";
  if (inputs.summaries.empty()) {
    s << "<p>No evaluation summaries were given.</p>\n";
  } else {
    s << "<p>" << html_escape(kAccuracyNote) << "</p>\n" << html_table(accuracy_table(inputs));
    s << "<h2>Reasoning and answer length</h2>\n<p>" << html_escape(kLengthNote) << "</p>\n"
      << html_table(length_table(inputs));
  }
  if (!inputs.sweeps.empty()) {
    s << "<h2>Stability</h2>\n<p>" << html_escape(kStabilityNote) << "</p>\n"
      << html_table(sweep_table(inputs));
    html_figures(s, figures, "stability-");
  }
  if (has_figure(figures, "lengths-")) {
    s << "<h2>Answer lengths</h2>\n";
    html_figures(s, figures, "lengths-");
  }
  s << "<h2>Inputs</h2>\n" << html_table(inputs_table(inputs));
  for (const std::string& note : provenance_notes(inputs)) {
    s << "<p>" << html_text(note) << "</p>\n";
  }
  s << "</body>\n</html>\n";
  return s.str();
}

}  // namespace kvsteer::eval::detail
