// Whole-file writes and reads: atomic replacement and errors that name the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "kvsteer/error.h"
#include "kvsteer/file_io.h"
#include "support/test_env.h"

namespace kvsteer {
namespace {

TEST(FileIo, WritesReplacesAndReadsBackWithoutLeavingTemporaries) {
  test::TempDir dir;
  const std::string path = dir.file("out.json");
  write_file_atomic(path, "first\n");
  write_file_atomic(path, std::string("second\0binary", 13));
  EXPECT_EQ(read_text_file(path), std::string("second\0binary", 13));
  std::size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    (void)entry;
    ++files;
  }
  EXPECT_EQ(files, 1u) << "a temporary file was left behind";
}

TEST(FileIo, ErrorsNameTheFile) {
  test::TempDir dir;
  const std::string missing = dir.file("no/such/folder/out.json");
  try {
    write_file_atomic(missing, "x");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io);
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  try {
    (void)read_text_file(missing, "traces file");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NotFound);
    EXPECT_NE(std::string(e.what()).find("traces file '"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  EXPECT_THROW(write_file_atomic("", "x"), Error);
}

TEST(FileIo, ConcurrentWritersOfOnePathLeaveOneWholeFile) {
  test::TempDir dir;
  const std::string path = dir.file("out.json");
  std::vector<std::thread> threads;
  for (char c : {'a', 'b', 'c', 'd'}) {
    threads.emplace_back([&path, c] {
      for (int i = 0; i < 50; ++i) write_file_atomic(path, std::string(4096, c));
    });
  }
  for (auto& t : threads) t.join();
  const std::string text = read_text_file(path);
  ASSERT_EQ(text.size(), 4096u);
  EXPECT_EQ(text, std::string(4096, text[0])) << "two writers shared a temporary file";
  std::size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    (void)entry;
    ++files;
  }
  EXPECT_EQ(files, 1u);
}

}  // namespace
}  // namespace kvsteer
