// kvsteer report: evaluation summaries and sweeps -> report.md, report.html and SVG figures.
#include <cstdio>

#include "common.h"
#include "eval/report.h"

namespace kvsteer::cli {
namespace {

struct ReportCliOptions {
  std::vector<std::string> inputs;
  eval::ReportOptions report;
};

void run(const ReportCliOptions& o) {
  const eval::ReportInputs inputs = eval::load_report_inputs(o.inputs);
  for (const std::string& path : eval::write_report(inputs, o.report)) {
    std::printf("%s\n", path.c_str());
  }
}

}  // namespace

void add_report(CLI::App& app) {
  auto opts = std::make_shared<ReportCliOptions>();
  auto* sub = app.add_subcommand(
      "report",
      "write report.md, report.html and SVG figures (gnuplot) from kvsteer eval summaries and "
      "kvsteer sweep files; prints the paths written");
  sub->add_option("-o,--out", opts->report.out_dir, "output folder (created when missing)")
      ->required();
  sub->add_option("inputs", opts->inputs,
                  "summary or sweep JSON files, or folders (their *.json files of those kinds)")
      ->required();
  sub->add_option("--title", opts->report.title, "report title")->capture_default_str();
  sub->add_option("--gnuplot", opts->report.gnuplot,
                  "gnuplot executable (Debian package gnuplot-nox)")
      ->capture_default_str();
  sub->callback([opts] { run(*opts); });
}

}  // namespace kvsteer::cli
