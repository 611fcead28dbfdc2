// kvsteer-train's exit codes and messages (README.md): 0 success, 1 runtime error, 2 usage error,
// errors as one line "kvsteer-train: error: ..." on stderr.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "organism/trainer/test_util.h"

namespace kvsteer::train {
namespace {

struct CliResult {
  int exit_code = -1;
  std::string err;
};

CliResult run_cli(const test::TempDir& dir, const std::string& args) {
  const std::string err_path = dir.file("stderr.txt");
  const std::string cmd =
      std::string(KVSTEER_TRAIN_EXE) + " " + args + " > /dev/null 2> " + err_path;
  const int status = std::system(cmd.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err_path);
  std::stringstream ss;
  ss << in.rdbuf();
  r.err = ss.str();
  return r;
}

bool is_one_error_line(const std::string& err) {
  return err.rfind("kvsteer-train: error: ", 0) == 0 && err.find('\n') == err.size() - 1;
}

TEST(TrainCli, HelpExitsZero) {
  test::TempDir dir;
  EXPECT_EQ(run_cli(dir, "--help").exit_code, 0);
}

TEST(TrainCli, UsageErrorsExitTwo) {
  test::TempDir dir;
  const RunOptions o = test::tiny_run(dir, 2);
  const std::string base = "--model-in " + o.model_in + " --data " + o.data;
  for (const std::string& args :
       {std::string("--data x.kvsd --steps 2"), base, base + " --steps 2 --epochs 1",
        base + " --steps 2 --resume", base + " --steps 2 --no-such-flag", base + " --steps two"}) {
    const CliResult r = run_cli(dir, args);
    EXPECT_EQ(r.exit_code, 2) << args;
    EXPECT_TRUE(is_one_error_line(r.err)) << args << ": " << r.err;
  }
}

TEST(TrainCli, RuntimeErrorsExitOne) {
  test::TempDir dir;
  const RunOptions o = test::tiny_run(dir, 2);
  const std::string out = " --out " + dir.file("out.gguf");
  for (const std::string& args :
       {"--model-in " + dir.file("missing.gguf") + " --data " + o.data + " --steps 2" + out,
        "--model-in " + o.model_in + " --data " + dir.file("missing.kvsd") + " --steps 2" + out,
        "--model-in " + o.data + " --data " + o.data + " --steps 2" + out,
        "--model-in " + o.model_in + " --data " + o.data + " --steps 2 --ctx 8" + out}) {
    const CliResult r = run_cli(dir, args);
    EXPECT_EQ(r.exit_code, 1) << args;
    // Progress lines may come first; the error is the last line and the only one from ggml.
    const size_t last = r.err.rfind("kvsteer-train: error: ");
    ASSERT_NE(last, std::string::npos) << r.err;
    EXPECT_TRUE(is_one_error_line(r.err.substr(last))) << r.err;
    EXPECT_EQ(r.err.find("gguf_"), std::string::npos) << r.err;
  }
}

TEST(TrainCli, TrainsAndWritesTheModel) {
  test::TempDir dir;
  const RunOptions o = test::tiny_run(dir, 3);
  const CliResult r = run_cli(
      dir, "--model-in " + o.model_in + " --data " + o.data + " --val-data " + o.val_data +
               " --out " + dir.file("out.gguf") + " --ctx 64 --batch 2 --steps 3 --threads 1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(dir.file("out.gguf")));
  EXPECT_NE(r.err.find("step 3/3 | loss"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("val loss"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace kvsteer::train
