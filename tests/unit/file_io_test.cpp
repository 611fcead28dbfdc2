// Whole-file writes and reads: atomic replacement and errors that name the file.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/durable.h"
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

// A folder opens as an empty stream: read as a file it would be a file without rows ("traces
// file has no rows"), so every reader refuses it by name first.
TEST(FileIo, AFolderIsRefusedAsAFileAndAMissingPathIsNotFound) {
  test::TempDir dir;
  const auto code_and_message = [](const auto& call) -> std::pair<ErrorCode, std::string> {
    try {
      call();
    } catch (const Error& e) {
      return {e.code(), e.what()};
    }
    return {ErrorCode::Cancelled, "no error"};
  };
  const std::string folder = dir.path();
  for (const auto& [code, message] :
       {code_and_message([&] { (void)read_text_file(folder, "traces file"); }),
        code_and_message([&] { require_file(folder, "traces file"); }),
        code_and_message([&] { require_regular_file(folder, "traces file"); })}) {
    EXPECT_EQ(code, ErrorCode::InvalidArgument) << message;
    EXPECT_EQ(message, "traces file '" + folder + "' is a directory, not a file");
  }
  const std::string missing = dir.file("absent.jsonl");
  const auto [code, message] =
      code_and_message([&] { require_file(missing, "arc file", "; hint: --data"); });
  EXPECT_EQ(code, ErrorCode::NotFound);
  EXPECT_EQ(message, "arc file '" + missing + "' does not exist; hint: --data");

  // A device reads as a file; loaders that need a regular file say why they refuse it.
  EXPECT_EQ(read_text_file("/dev/null"), "");
  const auto device = code_and_message([&] { require_regular_file("/dev/null", "model file"); });
  EXPECT_EQ(device.first, ErrorCode::InvalidArgument);
  EXPECT_NE(device.second.find("'/dev/null' is not a regular file"), std::string::npos)
      << device.second;
  const std::string path = dir.file("v.gguf");
  write_file_atomic(path, "x");
  EXPECT_NO_THROW(require_regular_file(path, "steering vector file"));

  // Outputs: a folder, a missing folder and an empty path are refused; a new or an existing
  // file in an existing folder is not.
  const auto folder_out = code_and_message([&] { require_output_file(folder, "output file"); });
  EXPECT_EQ(folder_out.first, ErrorCode::InvalidArgument);
  EXPECT_EQ(folder_out.second, "output file '" + folder + "' is a directory, not a file");
  const auto nowhere =
      code_and_message([&] { require_output_file(dir.file("a/b.gguf"), "output file"); });
  EXPECT_EQ(nowhere.first, ErrorCode::NotFound);
  EXPECT_EQ(nowhere.second, "output file '" + dir.file("a/b.gguf") + "': its folder '" +
                                dir.file("a") + "' does not exist");
  EXPECT_THROW(require_output_file("", "output file"), Error);
  EXPECT_NO_THROW(require_output_file(path, "output file"));
  EXPECT_NO_THROW(require_output_file(dir.file("new.gguf"), "output file"));
  EXPECT_NO_THROW(require_output_file("relative-new.gguf", "output file"));

  // A file whose folders are made when it is written: only what stands in the way is refused.
  EXPECT_NO_THROW(require_creatable_file(dir.file("p/q/sweep.json"), "sweep output"));
  EXPECT_EQ(code_and_message([&] { require_creatable_file(folder, "sweep output"); }).second,
            "sweep output '" + folder + "' is a directory, not a file");
  EXPECT_EQ(
      code_and_message([&] { require_creatable_file(path + "/q/s.json", "sweep output"); }).second,
      "sweep output '" + path + "/q/s.json': '" + path + "' is a file, not a folder");

  // Folders: made with their parents, an existing one is fine, one under a file is refused.
  create_folder(dir.file("x/y/z"), "output folder");
  EXPECT_TRUE(std::filesystem::is_directory(dir.file("x/y/z")));
  EXPECT_NO_THROW(create_folder(dir.file("x/y"), "output folder"));
  const auto under_file = code_and_message([&] { create_folder(path + "/sub", "output folder"); });
  EXPECT_EQ(under_file.first, ErrorCode::InvalidArgument);
  EXPECT_EQ(under_file.second,
            "output folder '" + path + "/sub': '" + path + "' is a file, not a folder");
}

std::size_t files_in(const std::string& dir) {
  std::size_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    (void)entry;
    ++n;
  }
  return n;
}

// A writer with a FILE* of its own (the GGUF writers): the file appears at commit, whole.
TEST(FileIo, AtomicFileAppearsAtCommitAndLeavesNothingWhenAbandoned) {
  test::TempDir dir;
  const std::string path = dir.file("model.gguf");
  write_file_atomic(path, "old");
  {
    detail::AtomicFile file(path);
    std::FILE* f = std::fopen(file.tmp().c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fputs("new contents", f);
    std::fclose(f);
    EXPECT_EQ(read_text_file(path), "old") << "visible before commit";
    file.commit();
  }
  EXPECT_EQ(read_text_file(path), "new contents");
  EXPECT_EQ(files_in(dir.path()), 1u);
  {
    detail::AtomicFile file(path);  // an error on the way: never committed
    std::FILE* f = std::fopen(file.tmp().c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fputs("half", f);
    std::fclose(f);
  }
  EXPECT_EQ(read_text_file(path), "new contents");
  EXPECT_EQ(files_in(dir.path()), 1u) << "the abandoned temporary file was left behind";
  // A commit that cannot happen (nothing was written to the temporary) names the file.
  try {
    detail::AtomicFile file(path);
    file.commit();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io);
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_THROW(detail::AtomicFile(""), Error);
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
