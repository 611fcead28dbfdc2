// config_differences, pending_batches and load_done (eval/run_support.h): when a recorded run
// configuration lets a run resume, which items a resumed run decodes together, and which journal
// lines it refuses.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "eval/run_support.h"
#include "kvsteer/error.h"
#include "support/test_env.h"

namespace kvsteer::eval {
namespace {

namespace fs = std::filesystem;
using Keys = std::vector<std::string>;

ordered_json config(const std::string& data, const std::string& vector) {
  return ordered_json{{"task", "arc"},    {"data", data},      {"limit", 64},
                      {"vector", vector}, {"model", "m.gguf"}, {"steering", {{"c_v", 6.0}}}};
}

TEST(RunConfig, TheSameFileSpelledAnotherWayIsTheSameConfiguration) {
  const fs::path here = fs::current_path();
  const ordered_json relative = config("out/sel.jsonl", "vectors/v.gguf");
  const ordered_json absolute =
      config((here / "out/sel.jsonl").string(), (here / "out/../vectors/./v.gguf").string());
  EXPECT_EQ(config_differences(relative, absolute), Keys{});
  EXPECT_EQ(config_differences(absolute, relative), Keys{});
}

TEST(RunConfig, NamesEveryKeyThatDiffers) {
  const ordered_json a = config("out/sel.jsonl", "vectors/v.gguf");
  ordered_json b = config("out/other.jsonl", "vectors/v.gguf");
  b["steering"]["c_v"] = 4.0;
  EXPECT_EQ(config_differences(a, b), (Keys{"data", "steering"}));
  EXPECT_EQ(join_keys(config_differences(a, b)), "data, steering");

  // Only path keys are compared as paths: a task spelled like a path is still another task.
  ordered_json c = a;
  c["task"] = "./arc";
  EXPECT_EQ(config_differences(a, c), Keys{"task"});
}

TEST(RunConfig, AKeyOnOneSideOnlyDiffers) {
  const ordered_json a = config("d.jsonl", "v.gguf");
  ordered_json b = a;
  b["selection"] = "chosen.json";
  EXPECT_EQ(config_differences(a, b), Keys{"selection"});
  EXPECT_EQ(config_differences(b, a), Keys{"selection"});
  ordered_json c = a;
  c["vector"] = "";  // an empty path names no file
  EXPECT_EQ(config_differences(a, c), Keys{"vector"});
}

TEST(RunBatches, KeepTheirSlicesAndLeaveOutFinishedItems) {
  const std::set<std::size_t> finished{1, 4, 5, 6, 7};
  const auto done = [&](std::size_t i) { return finished.count(i) != 0; };
  using Batches = std::vector<std::vector<std::size_t>>;
  EXPECT_EQ(pending_batches(10, 4, done), (Batches{{0, 2, 3}, {8, 9}}));
  EXPECT_EQ(pending_batches(10, 4, [](std::size_t) { return false; }),
            (Batches{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}}));
  EXPECT_EQ(pending_batches(3, 4, [](std::size_t) { return true; }), Batches{});
  EXPECT_EQ(pending_batches(0, 4, done), Batches{});
  EXPECT_THROW(pending_batches(3, 0, done), Error);
}

// A journal line whose numbers are not integers of their field's range is refused with the line
// and the field named, never converted (found by the jsonl fuzz target: an index of 3.5e67 was cast
// to size_t with undefined behaviour; input in fuzz/regressions/jsonl/).
TEST(RunConfig, JournalNumbersOutsideTheirFieldsAreRefused) {
  test::TempDir dir;
  const std::string good =
      R"({"index":0,"id":"a","prompt":"p","response":"r","extracted":"x","target":"x",)"
      R"("correct":true,"n_tokens":3,"n_steps":0,"reasoning":false,"forced":false})";
  const auto line_with = [&](const std::string& field, const std::string& value) {
    std::string l = good;
    const std::string key = "\"" + field + "\":";
    const std::size_t at = l.find(key) + key.size();
    return l.substr(0, at) + value + l.substr(l.find_first_of(",}", at));
  };
  test::write_file(dir.file("ok.jsonl"), good + "\n");
  EXPECT_EQ(load_done(dir.file("ok.jsonl")).size(), 1u);
  for (const auto& [field, value] : std::vector<std::pair<std::string, std::string>>{
           {"index", "35555555555555555555555555555555555555555555555555555555555555555555"},
           {"index", "-1"},
           {"index", "2.5"},
           {"n_tokens", "4294967296"},
           {"n_steps", "1e30"}}) {
    test::write_file(dir.file("bad.jsonl"), good + "\n" + line_with(field, value) + "\n");
    try {
      (void)load_done(dir.file("bad.jsonl"));
      ADD_FAILURE() << field << " " << value << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Format);
      const std::string what = e.what();
      EXPECT_NE(what.find("line 2"), std::string::npos) << what;
      EXPECT_NE(what.find("'" + field + "'"), std::string::npos) << what;
    }
  }
}

TEST(RunConfig, OnlyARaisedLimitExtends) {
  EXPECT_TRUE(limit_extends(8, 8));
  EXPECT_TRUE(limit_extends(8, 16));
  EXPECT_TRUE(limit_extends(8, 0));
  EXPECT_TRUE(limit_extends(0, 0));
  EXPECT_FALSE(limit_extends(8, 7));
  EXPECT_FALSE(limit_extends(0, 100));
}

}  // namespace
}  // namespace kvsteer::eval
