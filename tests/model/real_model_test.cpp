// The command line on the real model, SmolLM2-135M-Instruct (Q4_1): steering acts through the one
// edited cell, several extraction cells come from one pass, and files of the wrong model, corrupt
// or missing files are refused with one line and no output.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kvsteer/vector_file.h"
#include "support/run_command.h"
#include "support/test_env.h"

namespace kvsteer {
namespace {

using test::run_command;

class RealModel : public ::testing::Test {
 protected:
  void SetUp() override {
    cli_ = test::cli_path();
    model_ = test::smollm2_model_path();
    // Three ARC-style traces of our own (question with choices, steps, answer letter).
    test::write_file(
        dir_.file("traces.jsonl"),
        R"({"query": "Question: Which of these is a mammal?\n\nChoices:\nA: shark\nB: whale\nC: trout", "steps": ["Mammals breathe air and feed their young milk.", "A whale breathes air and nurses its calves."], "solution": "B"})"
        "\n"
        R"({"query": "Question: What makes a shadow?\n\nChoices:\nA: light blocked by an object\nB: sound\nC: heat", "steps": ["A shadow forms where an object stops light."], "solution": "A"})"
        "\n"
        R"({"query": "Question: Which state of water is ice?\n\nChoices:\nA: gas\nB: liquid\nC: solid", "steps": ["Ice is frozen water.", "Frozen water keeps its shape, so it is a solid."], "solution": "C"})"
        "\n");
  }
  std::vector<std::string> base(const std::string& sub) const {
    return {cli_, sub, "-m", model_, "-t", "1", "-c", "1024"};
  }
  test::CommandResult extract(std::vector<std::string> outs_and_positions) const {
    auto args = base("extract");
    for (const auto& a : std::vector<std::string>{"--task", "arc", "--traces",
                                                  dir_.file("traces.jsonl"), "-N", "3", "-k", "1"})
      args.push_back(a);
    args.insert(args.end(), outs_and_positions.begin(), outs_and_positions.end());
    return run_command(args);
  }
  std::string cli_, model_;
  test::TempDir dir_;
};

// `--offset "\n"` typed in a shell is a backslash and an n. Read as text, its first token would be
// the backslash's, silently another offset than the paper's newline (token 198 here); the escapes
// are read as llama.cpp's tools read them. The generated text starts with the offset's piece.
TEST_F(RealModel, AnOffsetTypedWithEscapesIsTheTokenItNames) {
  auto gen = [&](const std::vector<std::string>& extra) {
    auto args = base("generate");
    for (const auto& a : std::vector<std::string>{"-p", "Name a colour.", "-n", "2", "--json"})
      args.push_back(a);
    args.insert(args.end(), extra.begin(), extra.end());
    const auto r = run_command(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  };
  const std::string by_default = gen({});
  ASSERT_EQ(nlohmann::json::parse(by_default)["text"].get<std::string>().substr(0, 1), "\n");
  EXPECT_EQ(gen({"--offset-id", "198"}), by_default);
  EXPECT_EQ(gen({"--offset", "\\n"}), by_default);
  EXPECT_EQ(gen({"--offset", "\n"}), by_default);
  const auto backslash = nlohmann::json::parse(gen({"--offset", "\\\\"}));
  EXPECT_EQ(backslash["text"].get<std::string>().substr(0, 1), "\\");
}

TEST_F(RealModel, SteeringActsThroughTheEditedCellOnly) {
  ASSERT_EQ(extract({"-o", dir_.file("v.gguf")}).exit_code, 0);
  const std::string question =
      "Which object is attracted to a magnet?\n\nChoices:\nA: a wooden spoon\nB: an iron nail\nC: "
      "a glass cup";
  auto gen = [&](const std::vector<std::string>& extra) {
    auto args = base("generate");
    for (const auto& a : std::vector<std::string>{"-p", question, "-n", "24", "--json"})
      args.push_back(a);
    args.insert(args.end(), extra.begin(), extra.end());
    const auto r = run_command(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out);
  };
  const auto zero = gen({"--steer", dir_.file("v.gguf"), "--coef-v", "0"});
  const auto zero_again = gen({"--steer", dir_.file("v.gguf"), "--coef-v", "0"});
  const auto steered = gen({"--steer", dir_.file("v.gguf"), "--coef-v", "12"});
  EXPECT_EQ(zero["tokens"], zero_again["tokens"]);
  EXPECT_NE(zero["tokens"], steered["tokens"]) << "c_v 12 on every layer >= 1 changed nothing";
  EXPECT_FALSE(zero["text"].get<std::string>().empty());
}

TEST_F(RealModel, TwoCellsFromOnePassEqualTwoExtractions) {
  ASSERT_EQ(extract({"--position", "-1", "--position", "-2", "-o", dir_.file("a1.gguf"), "-o",
                     dir_.file("a2.gguf")})
                .exit_code,
            0);
  ASSERT_EQ(extract({"--position", "-2", "-o", dir_.file("b2.gguf")}).exit_code, 0);
  const auto a2 = load_steering_vector(dir_.file("a2.gguf"));
  const auto b2 = load_steering_vector(dir_.file("b2.gguf"));
  const auto a1 = load_steering_vector(dir_.file("a1.gguf"));
  EXPECT_EQ(a2.k, b2.k);
  EXPECT_EQ(a2.v, b2.v);
  EXPECT_EQ(a2.info.position, -2);
  EXPECT_EQ(a1.info.position, -1);
  EXPECT_NE(a1.v, a2.v);
  // Layer 0's V depends only on the token, and both prompts end in the same tokens.
  for (float x : a1.v.at(0)) EXPECT_EQ(x, 0.0f);
  const auto r = extract({"--position", "-1", "--position", "-2", "-o", dir_.file("c.gguf")});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("as many -o files"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir_.file("c.gguf")));
}

TEST_F(RealModel, WrongCorruptAndMissingFilesAreRefusedWithOneLine) {
  // A vector of another model: stories260K's.
  auto args = std::vector<std::string>{cli_,
                                       "extract",
                                       "-m",
                                       test::stories_model_path(),
                                       "-t",
                                       "1",
                                       "--traces",
                                       dir_.file("traces.jsonl"),
                                       "-N",
                                       "3",
                                       "-k",
                                       "1",
                                       "--chat-template",
                                       "chatml",
                                       "-o",
                                       dir_.file("stories.gguf")};
  ASSERT_EQ(run_command(args).exit_code, 0);
  // The first 16 MiB of the real model: a truncated download.
  {
    std::ifstream in(model_, std::ios::binary);
    std::vector<char> head(16u << 20);
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    std::ofstream(dir_.file("truncated.gguf"), std::ios::binary)
        .write(head.data(), static_cast<std::streamsize>(head.size()));
  }
  const std::string p = "Why is the sky blue?";
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{cli_, "generate", "-m", dir_.file("absent.gguf"), "-p", p}, "does not exist"},
      {{cli_, "generate", "-m", dir_.file("truncated.gguf"), "-p", p}, "cannot load model"},
      {{cli_, "generate", "-m", model_, "-p", p, "--steer", dir_.file("stories.gguf")},
       "another model"},
      {{cli_, "kv-dump", "-m", model_, "-p", p, "--steer", dir_.file("stories.gguf")},
       "another model"},
      {{cli_, "eval", "-m", model_, "--task", "arc", "--data",
        test::shared_dir() + "/data/arc/ARC-Challenge/ARC-Challenge-Dev.jsonl", "--limit", "2",
        "--method", "cache", "--vector", dir_.file("stories.gguf"), "-o", dir_.file("run")},
       "another model"},
  };
  for (const auto& [argv, message] : cases) {
    const auto r = run_command(argv);
    EXPECT_EQ(r.exit_code, 1) << argv[1] << "\n" << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << argv[1] << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
  // The refused eval wrote no answers.
  EXPECT_FALSE(std::filesystem::exists(dir_.file("run")));
}

}  // namespace
}  // namespace kvsteer
