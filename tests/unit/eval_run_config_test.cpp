// config_differences (eval/run_support.h): when a recorded run configuration lets a run resume.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "eval/run_support.h"

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

}  // namespace
}  // namespace kvsteer::eval
