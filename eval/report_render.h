// Internals of the report (eval/report.cpp): gnuplot scripts and the markdown and HTML texts.
// Not installed; exposed to the report's translation units only.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "eval/report.h"

namespace kvsteer::eval::detail {

// A figure drawn into the output folder.
struct Figure {
  std::string task;
  std::string caption;
  std::string file;  // name inside the output folder, e.g. "stability-gsm8k.svg"
  std::string svg;   // the file's contents
};

// A gnuplot script without its terminal and output lines.
struct PlotScript {
  std::string size;  // "width,height" in SVG pixels
  std::string body;
};

// Numbers as the report prints them: percentages and means with one decimal ("41.3"), others in the
// shortest form, up to 6 significant digits ("4", "0.25", "33.5").
std::string fmt_fixed(double x);
std::string fmt_num(double x);

// Known methods in the order tables list them, then any other method by name.
int method_rank(const std::string& method);
// Every task of the inputs, sorted by name.
std::vector<std::string> report_tasks(const ReportInputs& inputs);

// The stability figure of a task: accuracy, reasoning rate and mean answer length against c_v for
// cache steering and against c for activation steering (three rows of two panels); nullopt when
// the task has no sweep.
std::optional<PlotScript> stability_script(const ReportInputs& inputs, const std::string& task);
// The answer-length histograms of a task, one line per summary; nullopt when no summary of the
// task has lengths.
std::optional<PlotScript> lengths_script(const ReportInputs& inputs, const std::string& task);

// Titles of the stability figure's panels (the tests look for them in the SVG).
inline constexpr const char* kCachePanelTitle = "Cache steering: accuracy vs c_v";
inline constexpr const char* kActivationPanelTitle = "Activation steering: accuracy vs c";
inline constexpr const char* kCacheReasoningTitle = "Cache steering: reasoning vs c_v";
inline constexpr const char* kActivationReasoningTitle = "Activation steering: reasoning vs c";
inline constexpr const char* kCacheLengthTitle = "Cache steering: answer length vs c_v";
inline constexpr const char* kActivationLengthTitle = "Activation steering: answer length vs c";

// What tells a cache-steering sweep from the task's others when more than a coefficient does:
// "no offset" or "offset token 198", "vector arc-last", for the parts in which the task's
// cache-steering sweeps differ; "" when they share them (and for activation sweeps).
std::string sweep_protocol(const ReportInputs& inputs, const Sweep& sweep);

std::string render_markdown(const ReportInputs& inputs, const std::vector<Figure>& figures,
                            const std::string& title);
std::string render_html(const ReportInputs& inputs, const std::vector<Figure>& figures,
                        const std::string& title);

}  // namespace kvsteer::eval::detail
