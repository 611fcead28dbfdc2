// The evaluation report: tables, figures (through gnuplot), the HTML, and every refused input.
#include "eval/report.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "kvsteer/error.h"
#include "support/test_env.h"

namespace kvsteer::eval {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json summary(const std::string& task, const std::string& method, double accuracy, long n,
             std::vector<int> lengths) {
  return {{"kind", "kvsteer-eval-summary"},
          {"version", 1},
          {"task", task},
          {"method", method},
          {"label", method},
          {"n", n},
          {"correct", static_cast<long>(accuracy * static_cast<double>(n) / 100.0)},
          {"accuracy", accuracy},
          {"ci95", {accuracy - 5.5, accuracy + 5.7}},
          {"reasoning_rate", 80.1},
          {"mean_tokens", 35.2},
          {"median_tokens", 33},
          {"lengths", lengths},
          {"elapsed_s", 12.5},
          {"items_per_s", 24.0},
          {"model", {{"path", "/models/organism.gguf"}, {"fingerprint", "llama-4L-ab12"}}},
          {"vector", nullptr},
          {"config", {{"seed", 1}}},
          {"commit", "abc123"}};
}

json cache_sweep(const std::string& task) {
  json settings = json::array();
  for (double c_k : {0.0, 0.5}) {
    for (double c_v : {1.0, 2.0, 4.0, 8.0}) {
      settings.push_back({{"c_k", c_k},
                          {"c_v", c_v},
                          {"layers", "1-"},
                          {"n", 100},
                          {"correct", 40},
                          {"accuracy", 30.0 + c_v * 2.0 + c_k * 10.0},
                          {"ci95", {25.0, 50.0}},
                          {"reasoning_rate", 55.0},
                          {"mean_tokens", 30.1}});
    }
  }
  return {{"kind", "kvsteer-sweep"},
          {"version", 1},
          {"task", task},
          {"method", "cache"},
          {"settings", settings}};
}

json caa_sweep(const std::string& task) {
  json settings = json::array();
  for (int layer : {2, 3}) {
    for (double c : {0.5, 1.0, 2.0}) {
      settings.push_back({{"layer", layer},
                          {"c", c},
                          {"n", 100},
                          {"correct", 35},
                          {"accuracy", 35.0 + c * layer},
                          {"ci95", {26.0, 45.0}},
                          {"reasoning_rate", 40.0},
                          {"mean_tokens", 20.0}});
    }
  }
  return {{"kind", "kvsteer-sweep"},
          {"version", 1},
          {"task", task},
          {"method", "caa"},
          {"settings", settings}};
}

std::vector<int> some_lengths(int offset) {
  std::vector<int> out;
  for (int i = 0; i < 60; ++i) out.push_back(offset + (i * 7) % 40);
  return out;
}

// The error a call throws; fails the test when it throws none.
Error error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "expected a kvsteer::Error";
  return Error(ErrorCode::Cancelled, "(none)");
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class EvalReport : public ::testing::Test {
 protected:
  std::string put(const std::string& name, const json& value) {
    const std::string path = dir_.file(name);
    test::write_file(path, value.dump(2));
    return path;
  }
  // Two tasks, three methods each; sweeps for the first task only.
  std::vector<std::string> full_inputs() {
    return {
        put("num-baseline.json",
            summary("organism-numeric", "baseline", 41.3, 300, some_lengths(10))),
        put("num-cot.json", summary("organism-numeric", "cot", 52.0, 300, some_lengths(30))),
        put("num-cache.json", summary("organism-numeric", "cache", 47.5, 300, some_lengths(20))),
        put("choice-baseline.json",
            summary("organism-choice", "baseline", 25.0, 200, some_lengths(5))),
        put("choice-caa.json", summary("organism-choice", "caa", 28.5, 200, {})),
        put("sweep-cache.json", cache_sweep("organism-numeric")),
        put("sweep-caa.json", caa_sweep("organism-numeric"))};
  }
  std::vector<std::string> write(const std::vector<std::string>& paths) {
    ReportOptions options;
    options.out_dir = out();
    return write_report(load_report_inputs(paths), options);
  }
  std::string out() const { return dir_.file("out"); }
  std::string out_file(const std::string& name) const { return out() + "/" + name; }

  test::TempDir dir_;
};

TEST_F(EvalReport, MarkdownTablesHoldEveryMethodAndTask) {
  write(full_inputs());
  const std::string md = test::read_file(out_file("report.md"));
  EXPECT_TRUE(contains(md, "| method | organism-choice | organism-numeric |")) << md;
  EXPECT_TRUE(contains(md, "| baseline | 25.0 [19.5, 30.7] (n=200) | 41.3 [35.8, 47.0] (n=300) |"))
      << md;
  EXPECT_TRUE(contains(md, "| cot | — | 52.0 [46.5, 57.7] (n=300) |")) << md;
  EXPECT_TRUE(contains(md, "| caa | 28.5 [23.0, 34.2] (n=200) | — |")) << md;
  EXPECT_TRUE(contains(md, "| cache | — | 47.5 [42.0, 53.2] (n=300) |")) << md;
  // Rows follow the method order baseline, cot, fewshot, caa, cache, cache+cot.
  EXPECT_LT(md.find("| baseline |"), md.find("| cot |"));
  EXPECT_LT(md.find("| cot |"), md.find("| caa |"));
  EXPECT_LT(md.find("| caa |"), md.find("| cache |"));
  // Second table: reasoning rate, mean and median length, n.
  EXPECT_TRUE(contains(md, "| task | method | reasoning (%) | mean tokens | median tokens | n |"));
  EXPECT_TRUE(contains(md, "| organism-numeric | cot | 80.1 | 35.2 | 33 | 300 |")) << md;
  EXPECT_TRUE(contains(md, "| organism-choice | baseline | 80.1 | 35.2 | 33 | 200 |")) << md;
  // Best sweep settings, figures by relative path, and the inputs section.
  EXPECT_TRUE(contains(
      md, "| organism-numeric | cache | c_k=0.5, c_v=8, layers 1- | 51.0 [25.0, 50.0] | 100 | 8 |"))
      << md;
  EXPECT_TRUE(
      contains(md, "| organism-numeric | caa | layer 3, c=2 | 41.0 [26.0, 45.0] | 100 | 6 |"))
      << md;
  EXPECT_TRUE(contains(md, "](stability-organism-numeric.svg)"));
  EXPECT_TRUE(contains(md, "](lengths-organism-numeric.svg)"));
  EXPECT_TRUE(contains(md, "](lengths-organism-choice.svg)"));
  EXPECT_FALSE(contains(md, "stability-organism-choice.svg"));  // that task has no sweep
  EXPECT_TRUE(contains(md, "## Inputs"));
  EXPECT_TRUE(contains(md, dir_.file("num-cot.json")));
  EXPECT_TRUE(contains(md, "`llama-4L-ab12` (5 summaries)"));
  EXPECT_TRUE(contains(md, "`abc123` (5 summaries)"));
}

TEST_F(EvalReport, WritesWellFormedSvgFiguresAndReturnsThePaths) {
  const auto written = write(full_inputs());
  const std::vector<std::string> expected = {
      out_file("lengths-organism-choice.svg"), out_file("stability-organism-numeric.svg"),
      out_file("lengths-organism-numeric.svg"), out_file("report.md"), out_file("report.html")};
  EXPECT_EQ(written, expected);
  for (const std::string& path : written) EXPECT_TRUE(fs::is_regular_file(path)) << path;
  for (const char* name : {"stability-organism-numeric.svg", "lengths-organism-numeric.svg",
                           "lengths-organism-choice.svg"}) {
    const std::string svg = test::read_file(out_file(name));
    EXPECT_TRUE(contains(svg, "<svg")) << name;
    EXPECT_TRUE(contains(svg, "</svg>")) << name;
    EXPECT_LT(svg.find("<svg"), svg.rfind("</svg>")) << name;
  }
  const std::string stability = test::read_file(out_file("stability-organism-numeric.svg"));
  EXPECT_TRUE(contains(stability, "Cache steering: accuracy vs c_v"));
  EXPECT_TRUE(contains(stability, "Activation steering: accuracy vs c"));
  EXPECT_TRUE(contains(stability, "c_k=0.5, layers 1-"));  // one line per c_k / layers
  EXPECT_TRUE(contains(stability, "layer 3"));             // one line per layer
  // Reasoning and answer length against the coefficient beside accuracy, one key for the rows.
  for (const char* title :
       {"Cache steering: reasoning vs c_v", "Cache steering: answer length vs c_v",
        "Activation steering: reasoning vs c", "Activation steering: answer length vs c"}) {
    EXPECT_TRUE(contains(stability, title)) << title;
  }
  EXPECT_TRUE(contains(stability, "baseline (dashed): 41.3 %, reasoning 80.1 %, 35.2 tokens"));
  const std::string lengths = test::read_file(out_file("lengths-organism-numeric.svg"));
  EXPECT_TRUE(contains(lengths, "cot (n=60)"));
  // Nothing of the staging folder is left behind.
  for (const auto& entry : fs::directory_iterator(out())) {
    EXPECT_FALSE(entry.path().filename().string().rfind(".kvsteer-report", 0) == 0) << entry.path();
  }
}

TEST_F(EvalReport, HtmlIsSelfContainedWithInlineSvgs) {
  write(full_inputs());
  const std::string html = test::read_file(out_file("report.html"));
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_TRUE(contains(html, "</html>"));
  EXPECT_TRUE(contains(html, "<style>"));
  std::size_t n_svg = 0;
  for (auto at = html.find("<svg"); at != std::string::npos; at = html.find("<svg", at + 1)) {
    ++n_svg;
  }
  EXPECT_EQ(n_svg, 3u);
  EXPECT_FALSE(contains(html, "<?xml"));
  EXPECT_FALSE(contains(html, "src=\""));  // no external image or script
  EXPECT_TRUE(contains(html, "Cache steering: accuracy vs c_v"));
  EXPECT_TRUE(contains(html, "Activation steering: accuracy vs c"));
  EXPECT_TRUE(contains(html, "<td class=\"v\">41.3 [35.8, 47.0] (n=300)</td>"));
  // The figures' ids are made distinct per figure.
  EXPECT_TRUE(contains(html, "id='f0-gpPt0'"));
  EXPECT_TRUE(contains(html, "id='f1-gpPt0'"));
  EXPECT_FALSE(contains(html, "id='gpPt0'"));
}

TEST_F(EvalReport, FolderIsScannedForSummariesAndSweepsOnly) {
  full_inputs();
  put("other.json", {{"kind", "something-else"}, {"version", 1}});
  put("array.json", json::array({1, 2}));
  test::write_file(dir_.file("items.jsonl"), "not json\n");
  const ReportInputs inputs = load_report_inputs({dir_.path()});
  EXPECT_EQ(inputs.summaries.size(), 5u);
  EXPECT_EQ(inputs.sweeps.size(), 2u);
  // Name order: choice-baseline.json comes first.
  EXPECT_EQ(inputs.summaries.front().task, "organism-choice");
  EXPECT_EQ(inputs.summaries.front().model_fingerprint, "llama-4L-ab12");
  EXPECT_TRUE(inputs.sweeps.front().activation);  // sweep-caa.json
  EXPECT_EQ(inputs.sweeps.front().settings.size(), 6u);
  EXPECT_EQ(inputs.sweeps.back().settings.front().layers, "1-");
  // A file reached twice is read once.
  const ReportInputs again = load_report_inputs(
      {dir_.path(), dir_.file("num-cot.json"), dir_.file("sweep-caa.json"), dir_.path()});
  EXPECT_EQ(again.summaries.size(), 5u);
  EXPECT_EQ(again.sweeps.size(), 2u);
}

// Sweeps of one task that differ in more than coefficients (the offset protocol, the vector) are
// lines of their own, named by what differs; a baseline of other items is no reference line.
TEST_F(EvalReport, SweepsOfOtherProtocolsAreTheirOwnLinesAndABaselineOfOtherItemsIsNotDrawn) {
  const auto with_config = [](json sweep, const json& offset, const std::string& vector) {
    sweep["config"] = {{"data", "/data/selection.jsonl"},
                       {"limit", 64},
                       {"vector", "/out/vectors/" + vector + ".gguf"},
                       {"steering", {{"c_k", 0.0}, {"offset_token", offset}}}};
    return sweep;
  };
  json baseline = summary("arc", "baseline", 25.6, 320, some_lengths(10));
  baseline["config"] = {{"data", "/data/test.jsonl"}, {"limit", 320}};
  const std::vector<std::string> inputs = {
      put("baseline.json", baseline),
      put("paper.json", with_config(cache_sweep("arc"), 198, "arc-last")),
      put("no-offset.json", with_config(cache_sweep("arc"), nullptr, "arc-last")),
      put("no-offset-aligned.json", with_config(cache_sweep("arc"), nullptr, "arc-second-last"))};
  write(inputs);
  const std::string svg = test::read_file(out_file("stability-arc.svg"));
  for (const char* line : {"c_k=0, layers 1-, offset token 198, vector arc-last",
                           "c_k=0, layers 1-, no offset, vector arc-last",
                           "c_k=0, layers 1-, no offset, vector arc-second-last"}) {
    EXPECT_TRUE(contains(svg, line)) << line;
  }
  EXPECT_FALSE(contains(svg, "baseline (dashed)"));  // test items, the sweeps ran on selection
  const std::string md = test::read_file(out_file("report.md"));
  EXPECT_TRUE(contains(md, "| arc | cache (no offset, vector arc-second-last) | c_k=0.5, c_v=8"))
      << md;

  // The baseline of the sweeps' own items is drawn; so is one whose items its file does not name.
  baseline["config"] = {{"data", "/data/./selection.jsonl"}, {"limit", 64}};
  fs::remove_all(out());
  write({put("baseline.json", baseline), inputs[1], inputs[2], inputs[3]});
  EXPECT_TRUE(contains(test::read_file(out_file("stability-arc.svg")), "baseline (dashed)"));
  baseline.erase("config");
  fs::remove_all(out());
  write({put("baseline.json", baseline), inputs[1]});
  const std::string one = test::read_file(out_file("stability-arc.svg"));
  EXPECT_TRUE(contains(one, "baseline (dashed)"));
  // Sweeps that share their protocol are not told apart by it.
  EXPECT_TRUE(contains(one, "c_k=0, layers 1-"));
  EXPECT_FALSE(contains(one, "offset token"));

  json bad = with_config(cache_sweep("arc"), "newline", "arc-last");
  const Error e = error_of([&] { load_report_inputs({put("bad.json", bad)}); });
  EXPECT_EQ(e.code(), ErrorCode::Format);
  EXPECT_TRUE(contains(e.what(), "field 'config.steering.offset_token' is \"newline\""))
      << e.what();
}

TEST_F(EvalReport, SweepsAloneMakeAReport) {
  const auto written = write({put("s.json", cache_sweep("gsm8k"))});
  EXPECT_EQ(written.size(), 3u);
  const std::string svg = test::read_file(out_file("stability-gsm8k.svg"));
  EXPECT_TRUE(contains(svg, "no activation-steering sweep"));
  EXPECT_TRUE(contains(svg, "Activation steering: accuracy vs c"));
  EXPECT_TRUE(contains(test::read_file(out_file("report.md")), "No evaluation summaries"));
}

TEST_F(EvalReport, MissingFileIsNotFound) {
  const std::string path = dir_.file("nope.json");
  const Error e = error_of([&] { load_report_inputs({path}); });
  EXPECT_EQ(e.code(), ErrorCode::NotFound);
  EXPECT_EQ(std::string(e.what()), "report input '" + path + "' does not exist");
}

TEST_F(EvalReport, InvalidJsonNamesTheFile) {
  const std::string path = dir_.file("bad.json");
  test::write_file(path, "{\"kind\": \"kvsteer-sweep\",\n \"version\": ");
  for (const auto& paths : {std::vector<std::string>{path}, {dir_.path()}}) {
    const Error e = error_of([&] { load_report_inputs(paths); });
    EXPECT_EQ(e.code(), ErrorCode::Format);
    EXPECT_TRUE(contains(e.what(), path)) << e.what();
    EXPECT_TRUE(contains(e.what(), "not valid JSON")) << e.what();
    EXPECT_FALSE(contains(e.what(), "\n")) << e.what();
  }
}

TEST_F(EvalReport, UnknownKindIsRefusedWhenGivenExplicitly) {
  const std::string path = put("other.json", {{"kind", "kvsteer-bench"}, {"version", 1}});
  const Error e = error_of([&] { load_report_inputs({path}); });
  EXPECT_EQ(e.code(), ErrorCode::Format);
  EXPECT_TRUE(contains(e.what(), path)) << e.what();
  EXPECT_TRUE(contains(e.what(), "unknown kind \"kvsteer-bench\"")) << e.what();
  const std::string no_kind = put("nokind.json", {{"version", 1}});
  const Error e2 = error_of([&] { load_report_inputs({no_kind}); });
  EXPECT_EQ(e2.code(), ErrorCode::Format);
  EXPECT_TRUE(contains(e2.what(), "missing field 'kind'")) << e2.what();
}

TEST_F(EvalReport, NewerVersionIsRefused) {
  json s = summary("t", "baseline", 40.0, 10, {1, 2});
  s["version"] = 2;
  const std::string path = put("v2.json", s);
  const Error e = error_of([&] { load_report_inputs({path}); });
  EXPECT_EQ(e.code(), ErrorCode::Format);
  EXPECT_TRUE(contains(e.what(), path)) << e.what();
  EXPECT_TRUE(contains(e.what(), "version 2 is newer")) << e.what();
}

TEST_F(EvalReport, MissingFieldNamesFileAndField) {
  json s = summary("t", "baseline", 40.0, 10, {1, 2});
  s.erase("accuracy");
  const std::string path = put("nofield.json", s);
  Error e = error_of([&] { load_report_inputs({path}); });
  EXPECT_EQ(e.code(), ErrorCode::Format);
  EXPECT_EQ(std::string(e.what()), "'" + path + "': missing field 'accuracy'");

  json sweep = cache_sweep("t");
  sweep["settings"][1].erase("c_v");
  const std::string sweep_path = put("nocv.json", sweep);
  e = error_of([&] { load_report_inputs({sweep_path}); });
  EXPECT_EQ(e.code(), ErrorCode::Format);
  EXPECT_EQ(std::string(e.what()), "'" + sweep_path + "': missing field 'settings[1].c_v'");

  json caa = caa_sweep("t");
  caa["settings"][0].erase("layer");
  e = error_of([&] { load_report_inputs({put("nolayer.json", caa)}); });
  EXPECT_TRUE(contains(e.what(), "missing field 'settings[0].layer'")) << e.what();

  json typed = summary("t", "baseline", 40.0, 10, {1, 2});
  typed["n"] = "ten";
  e = error_of([&] { load_report_inputs({put("typed.json", typed)}); });
  EXPECT_EQ(e.code(), ErrorCode::Format);
  EXPECT_TRUE(contains(e.what(), "field 'n' is string, expected a number")) << e.what();
}

TEST_F(EvalReport, NoInputsIsAUsageError) {
  Error e = error_of([] { load_report_inputs({}); });
  EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(contains(e.what(), "no inputs")) << e.what();
  // A folder without summaries or sweeps is no input either.
  put("other.json", {{"kind", "something-else"}});
  e = error_of([&] { load_report_inputs({dir_.path()}); });
  EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(contains(e.what(), "no inputs")) << e.what();
}

TEST_F(EvalReport, DuplicateRunsAreRefused) {
  const std::string a = put("a.json", summary("t", "cache", 40.0, 10, {1}));
  const std::string b = put("b.json", summary("t", "cache", 41.0, 10, {1}));
  const Error e = error_of([&] { load_report_inputs({a, b}); });
  EXPECT_EQ(e.code(), ErrorCode::Format);
  EXPECT_TRUE(contains(e.what(), a) && contains(e.what(), b)) << e.what();
  // Distinct labels make distinct rows.
  json c = summary("t", "cache", 45.0, 10, {1});
  c["label"] = "cache c_v=4";
  write({a, put("c.json", c)});
  const std::string md = test::read_file(out_file("report.md"));
  EXPECT_TRUE(contains(md, "| cache | 40.0 [34.5, 45.7] (n=10) |")) << md;
  EXPECT_TRUE(contains(md, "| cache c_v=4 | 45.0 [39.5, 50.7] (n=10) |")) << md;
}

TEST_F(EvalReport, MissingGnuplotWritesNothing) {
  const ReportInputs inputs = load_report_inputs(full_inputs());
  for (const char* gnuplot : {"/nonexistent/gnuplot", "kvsteer-no-such-gnuplot"}) {
    ReportOptions options;
    options.out_dir = out();
    options.gnuplot = gnuplot;
    const Error e = error_of([&] { write_report(inputs, options); });
    EXPECT_EQ(e.code(), ErrorCode::NotFound);
    EXPECT_TRUE(contains(e.what(), "gnuplot-nox")) << e.what();
    EXPECT_FALSE(fs::exists(out()));
  }
}

TEST_F(EvalReport, FailingGnuplotLeavesNoPartialReport) {
  const std::string fake = dir_.file("fake-gnuplot");
  test::write_file(fake, "#!/bin/sh\necho 'line 3: boom' >&2\nexit 1\n");
  ::chmod(fake.c_str(), 0755);
  fs::create_directories(out());
  test::write_file(out_file("report.md"), "old report\n");
  ReportOptions options;
  options.out_dir = out();
  options.gnuplot = fake;
  const Error e = error_of([&] { write_report(load_report_inputs(full_inputs()), options); });
  EXPECT_EQ(e.code(), ErrorCode::Backend);
  EXPECT_TRUE(contains(e.what(), "boom")) << e.what();
  EXPECT_EQ(test::read_file(out_file("report.md")), "old report\n");
  std::vector<std::string> left;
  for (const auto& entry : fs::directory_iterator(out())) {
    left.push_back(entry.path().filename().string());
  }
  EXPECT_EQ(left, std::vector<std::string>{"report.md"});
}

}  // namespace
}  // namespace kvsteer::eval
