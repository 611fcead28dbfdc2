// The organism command line: outputs, atomic writes and exit codes.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "organism/gen/commands.h"

namespace kvsteer::organism {
namespace {

namespace fs = std::filesystem;

class OrganismCommands : public ::testing::Test {
 protected:
  OrganismCommands()
      : dir_(fs::temp_directory_path() / ("kvsteer_organism_test_" + std::to_string(::getpid()))) {
    fs::create_directories(dir_);
  }
  ~OrganismCommands() override { fs::remove_all(dir_); }

  int run(std::vector<std::string> args) {
    args.insert(args.begin(), "kvsteer-organism-gen");
    std::vector<const char*> argv;
    for (const std::string& a : args) argv.push_back(a.c_str());
    return organism_main(static_cast<int>(argv.size()), argv.data());
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  static std::string read(const std::string& file) {
    std::ifstream in(file, std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
  }

  fs::path dir_;
};

TEST_F(OrganismCommands, GenWritesDeterministicJsonl) {
  const std::vector<std::string> args = {"gen",    "--seed",   "5",    "--n",
                                         "50",     "--split",  "test", "--variant",
                                         "choice", "--family", "chain"};
  auto with_out = [&](const std::string& out) {
    std::vector<std::string> a = args;
    a.insert(a.end(), {"--out", out});
    return a;
  };
  ASSERT_EQ(run(with_out(path("a.jsonl"))), 0);
  ASSERT_EQ(run(with_out(path("b.jsonl"))), 0);
  const std::string a = read(path("a.jsonl"));
  EXPECT_EQ(a, read(path("b.jsonl")));
  EXPECT_EQ(std::count(a.begin(), a.end(), '\n'), 50);
  EXPECT_NE(a.find("\"family\":\"chain\""), std::string::npos);
  // Only the two outputs remain: no temporary files.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 2);
}

TEST_F(OrganismCommands, MixtureAndVocabWriteFiles) {
  ASSERT_EQ(run({"mixture", "--seed", "1", "--n", "20", "--out", path("m.jsonl")}), 0);
  const std::string m = read(path("m.jsonl"));
  EXPECT_EQ(std::count(m.begin(), m.end(), '\n'), 20);
  EXPECT_NE(m.find("\"loss_on\":\"all_assistant\""), std::string::npos);
  ASSERT_EQ(run({"vocab", "--out", path("v.json")}), 0);
  EXPECT_NE(read(path("v.json")).find("\"model\": \"llama\""), std::string::npos);
}

TEST_F(OrganismCommands, GeneratorFlagsReachTheGenerator) {
  ASSERT_EQ(run({"gen", "--n", "30", "--family", "chain", "--min-ops", "4", "--distractors", "0",
                 "--no-shuffle", "--out", path("c.jsonl")}),
            0);
  std::ifstream in(path("c.jsonl"));
  for (std::string line; std::getline(in, line);) {
    EXPECT_NE(line.find("\"n_ops\":4"), std::string::npos) << line;
  }
}

TEST_F(OrganismCommands, UsageErrorsExitWithTwo) {
  EXPECT_EQ(run({}), 2);
  EXPECT_EQ(run({"gen", "--out", path("x.jsonl"), "--bogus"}), 2);
  EXPECT_EQ(run({"gen"}), 2);  // --out is required
  EXPECT_EQ(run({"gen", "--split", "dev", "--out", path("x.jsonl")}), 2);
  EXPECT_EQ(run({"gen", "--max-ops", "9", "--out", path("x.jsonl")}), 2);
  EXPECT_EQ(run({"mixture", "--share-offset", "1.5", "--out", path("x.jsonl")}), 2);
  EXPECT_FALSE(fs::exists(path("x.jsonl")));
}

TEST_F(OrganismCommands, IoErrorsExitWithOneAndLeaveNothing) {
  EXPECT_EQ(run({"gen", "--n", "3", "--out", path("missing/x.jsonl")}), 1);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 0);
}

TEST_F(OrganismCommands, HelpExitsWithZero) { EXPECT_EQ(run({"gen", "--help"}), 0); }

}  // namespace
}  // namespace kvsteer::organism
