// Extraction checkpoint files: an exact round trip, and every damaged file refused by name.
#include "kvsteer/checkpoint_file.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "base/fnv1a64.h"
#include "kvsteer/error.h"
#include "support/test_env.h"

namespace kvsteer {
namespace {

ExtractionCheckpoint sample_checkpoint() {
  ExtractionCheckpoint cp;
  cp.identity = 0x0123456789abcdefULL;
  cp.n_pairs = 200;
  cp.pairs_done = 37;
  for (int p = 0; p < 2; ++p) {
    ExtractionCheckpoint::Sums s;
    for (int il = 0; il < 3; ++il) {
      if (il == 1 && p == 1) {  // a layer that never held the cell (sliding window)
        s.k.emplace_back();
        s.v.emplace_back();
        s.count.push_back(0);
        continue;
      }
      // Values that a decimal or float round trip would change.
      s.k.push_back({1.0 / 3.0, -0.1 * il, std::nextafter(1.0, 2.0), 1e-300, -0.0});
      s.v.push_back({std::numeric_limits<double>::denorm_min(), 7.25 * (p + 1), 1e300, -1.0 / 7.0,
                     2.0 / 3.0});
      s.count.push_back(74);
    }
    cp.sums.push_back(std::move(s));
  }
  return cp;
}

void expect_same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  ASSERT_EQ(a.size(), b.size());
  if (!a.empty()) {  // memcmp must not get an empty vector's null data()
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(double)), 0);
  }
}

TEST(CheckpointFile, RoundTripIsExact) {
  test::TempDir dir;
  const ExtractionCheckpoint cp = sample_checkpoint();
  save_extraction_checkpoint(dir.file("x.partial"), cp);
  const ExtractionCheckpoint got = load_extraction_checkpoint(dir.file("x.partial"));
  EXPECT_EQ(got.identity, cp.identity);
  EXPECT_EQ(got.n_pairs, cp.n_pairs);
  EXPECT_EQ(got.pairs_done, cp.pairs_done);
  ASSERT_EQ(got.sums.size(), cp.sums.size());
  for (std::size_t p = 0; p < cp.sums.size(); ++p) {
    EXPECT_EQ(got.sums[p].count, cp.sums[p].count);
    ASSERT_EQ(got.sums[p].k.size(), cp.sums[p].k.size());
    for (std::size_t il = 0; il < cp.sums[p].k.size(); ++il) {
      expect_same_bits(got.sums[p].k[il], cp.sums[p].k[il]);
      expect_same_bits(got.sums[p].v[il], cp.sums[p].v[il]);
    }
  }
}

void expect_format_error(const std::string& path, const std::string& words) {
  try {
    (void)load_extraction_checkpoint(path);
    ADD_FAILURE() << "accepted: " << words;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Format) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

// Every truncation of a good file and every flipped byte is refused by load.
template <typename Load>
void expect_every_damage_refused(const std::string& good, const std::string& path, Load load) {
  for (std::size_t n = 0; n < good.size(); ++n) {
    test::write_file(path, good.substr(0, n));
    EXPECT_THROW((void)load(path), Error) << "truncated to " << n;
  }
  for (std::size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x10);
    test::write_file(path, bad);
    EXPECT_THROW((void)load(path), Error) << "byte " << i << " flipped";
  }
}

TEST(CheckpointFile, RefusesEveryTruncationAndEveryFlippedByte) {
  test::TempDir dir;
  save_extraction_checkpoint(dir.file("good"), sample_checkpoint());
  const std::string good = test::read_file(dir.file("good"));
  const std::string path = dir.file("bad");
  expect_every_damage_refused(good, path, load_extraction_checkpoint);
  test::write_file(path, good + "x");
  expect_format_error(path, "checksum");
  // Fields that contradict each other under a valid checksum: 250 of 200 pairs done.
  std::string body = good.substr(0, good.size() - 8);
  const std::uint64_t done = 250;
  std::memcpy(body.data() + 8 + 4 + 4 + 8 + 8, &done, sizeof done);
  const std::uint64_t checksum = base::fnv1a64(body);
  test::write_file(path, body + std::string(reinterpret_cast<const char*>(&checksum), 8));
  expect_format_error(path, "250 pairs done of 200");
}

TEST(CheckpointFile, NamesWhatIsWrong) {
  test::TempDir dir;
  test::write_file(dir.file("text"), "{\"not\": \"a checkpoint\"}\n");
  expect_format_error(dir.file("text"), "no KVSXCKPT magic");
  save_extraction_checkpoint(dir.file("v"), sample_checkpoint());
  std::string newer = test::read_file(dir.file("v"));
  newer[8] = 9;  // the version field
  test::write_file(dir.file("newer"), newer);
  expect_format_error(dir.file("newer"), "format version 9");
  try {
    (void)load_extraction_checkpoint(dir.file("missing"));
    ADD_FAILURE() << "a missing file was read";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NotFound) << e.what();
  }
}

TEST(CheckpointFile, SavingReplacesTheFileWhole) {
  test::TempDir dir;
  ExtractionCheckpoint cp = sample_checkpoint();
  save_extraction_checkpoint(dir.file("x"), cp);
  cp.pairs_done = 38;
  save_extraction_checkpoint(dir.file("x"), cp);
  EXPECT_EQ(load_extraction_checkpoint(dir.file("x")).pairs_done, 38u);
  EXPECT_THROW(save_extraction_checkpoint(dir.file("no/such/folder/x"), cp), Error);
}

ResidualCheckpoint sample_residual_checkpoint() {
  ResidualCheckpoint cp;
  cp.identity = 0xfedcba9876543210ULL;
  cp.n_pairs = 200;
  cp.pairs_done = 12;
  cp.sum = {{1.0 / 3.0, -0.0, 1e-300}, {std::nextafter(1.0, 2.0), -1.0 / 7.0, 1e300}};
  return cp;
}

TEST(CheckpointFile, ResidualRoundTripIsExact) {
  test::TempDir dir;
  const ResidualCheckpoint cp = sample_residual_checkpoint();
  save_residual_checkpoint(dir.file("r.partial"), cp);
  const ResidualCheckpoint got = load_residual_checkpoint(dir.file("r.partial"));
  EXPECT_EQ(got.identity, cp.identity);
  EXPECT_EQ(got.n_pairs, cp.n_pairs);
  EXPECT_EQ(got.pairs_done, cp.pairs_done);
  ASSERT_EQ(got.sum.size(), cp.sum.size());
  for (std::size_t il = 0; il < cp.sum.size(); ++il) expect_same_bits(got.sum[il], cp.sum[il]);
}

TEST(CheckpointFile, ResidualFileRefusesDamageAndTheOtherKind) {
  test::TempDir dir;
  save_residual_checkpoint(dir.file("good"), sample_residual_checkpoint());
  const std::string good = test::read_file(dir.file("good"));
  expect_every_damage_refused(good, dir.file("bad"), load_residual_checkpoint);
  // Each kind's file is refused by the other's loader, by its magic.
  save_extraction_checkpoint(dir.file("kv"), sample_checkpoint());
  try {
    (void)load_residual_checkpoint(dir.file("kv"));
    ADD_FAILURE() << "a K/V checkpoint was read as a residual one";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no KVSRCKPT magic"), std::string::npos) << e.what();
  }
  expect_format_error(dir.file("good"), "no KVSXCKPT magic");
}

}  // namespace
}  // namespace kvsteer
