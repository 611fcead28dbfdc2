// The CLI's progress line (tools/cli/progress.h): work resumed from a journal is the starting
// point, not work done at an infinite rate.
#include "progress.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "support/test_env.h"

namespace kvsteer::cli {
namespace {

// What the progress bar writes to stderr (not a terminal here: one line per tenth of the work).
std::vector<std::string> stderr_lines(const std::function<void()>& run) {
  test::TempDir dir;
  const std::string path = dir.file("stderr.txt");
  std::fflush(stderr);
  const int saved = ::dup(STDERR_FILENO);
  EXPECT_NE(std::freopen(path.c_str(), "w", stderr), nullptr);
  run();
  std::fflush(stderr);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  return test::read_lines(path);
}

TEST(CliProgress, ResumedWorkIsTheStartAndTheTimeLeftIsUnknownUntilMeasured) {
  const auto lines = stderr_lines([] {
    Progress bar("sweep arc caa", 384);
    bar.update(336);  // answers resumed from the journal
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    bar.update(352);
    bar.update(384);
    bar.finish();
  });
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_NE(lines[0].find("336/384  0.00/s  ETA ?"), std::string::npos) << lines[0];
  // 16 answers in about 50 ms: hundreds a second, not the 336 resumed ones counted as new work.
  EXPECT_NE(lines[1].find("352/384"), std::string::npos) << lines[1];
  EXPECT_EQ(lines[1].find("ETA ?"), std::string::npos) << lines[1];
  const double rate = std::stod(lines[1].substr(lines[1].find("352/384") + 9));
  EXPECT_GT(rate, 16.0);
  EXPECT_LT(rate, 16.0 / 0.05);
  EXPECT_NE(lines[2].find("384/384"), std::string::npos) << lines[2];
  EXPECT_NE(lines[2].find("ETA 0s"), std::string::npos) << lines[2];
}

}  // namespace
}  // namespace kvsteer::cli
