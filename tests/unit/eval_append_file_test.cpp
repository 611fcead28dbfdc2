// The append-only files of resumable runs: whole appends, a full disk refused with the reason
// and the earlier lines kept.
#include "eval/append_file.h"

#include <gtest/gtest.h>

#include <string>

#include "kvsteer/error.h"
#include "support/test_env.h"

namespace kvsteer::eval {
namespace {

TEST(AppendFile, AppendsWholeLinesAndCreatesTheFile) {
  test::TempDir dir;
  {
    AppendFile f(dir.file("items.jsonl"));
    f.append("{\"a\":1}\n");
    f.append("{\"b\":2}\n{\"c\":3}\n");
  }
  AppendFile again(dir.file("items.jsonl"));
  again.append("{\"d\":4}\n");
  EXPECT_EQ(test::read_file(dir.file("items.jsonl")),
            "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n{\"d\":4}\n");
}

TEST(AppendFile, AFullDiskIsAnIoErrorWithTheReason) {
  AppendFile full("/dev/full");
  try {
    full.append("{\"a\":1}\n");
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io);
    EXPECT_NE(std::string(e.what()).find("/dev/full"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No space left"), std::string::npos) << e.what();
  }
}

TEST(AppendFile, RefusesAFolderItCannotWrite) {
  test::TempDir dir;
  EXPECT_THROW(AppendFile(dir.file("missing/items.jsonl")), Error);
}

}  // namespace
}  // namespace kvsteer::eval
