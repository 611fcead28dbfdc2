#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "kvsteer/error.h"
#include "organism/trainer/dataset.h"
#include "organism/trainer/test_util.h"

namespace kvsteer::train {
namespace {

Record make_record(std::vector<int32_t> tokens, std::vector<uint8_t> mask) {
  return Record{std::move(tokens), std::move(mask)};
}

TEST(KvsdFile, RoundTrips) {
  test::TempDir dir;
  const std::vector<Record> recs = {make_record({1, 5, 7}, {0, 1, 1}), make_record({}, {}),
                                    make_record({300, 2}, {1, 0})};
  save_dataset(dir.file("d.kvsd"), recs);
  const std::vector<Record> back = load_dataset(dir.file("d.kvsd"));
  ASSERT_EQ(back.size(), recs.size());
  for (size_t i = 0; i < recs.size(); ++i) {
    EXPECT_EQ(back[i].tokens, recs[i].tokens);
    EXPECT_EQ(back[i].loss_mask, recs[i].loss_mask);
  }
}

TEST(KvsdFile, HasDocumentedLayout) {
  test::TempDir dir;
  save_dataset(dir.file("d.kvsd"), {make_record({258}, {1})});
  std::ifstream in(dir.file("d.kvsd"), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string expected("KVSD\x01\0\0\0\x01\0\0\0\x02\x01\0\0\x01", 17);
  EXPECT_EQ(bytes, expected);
}

TEST(KvsdFile, RejectsWrongMagicVersionAndTruncation) {
  test::TempDir dir;
  auto write = [&](const std::string& bytes) {
    std::ofstream(dir.file("bad.kvsd"), std::ios::binary) << bytes;
    return dir.file("bad.kvsd");
  };
  EXPECT_THROW(load_dataset(write("KVSX\x01\0\0\0")), Error);
  EXPECT_THROW(load_dataset(write(std::string("KVSD\x02\0\0\0", 8))), Error);
  EXPECT_THROW(load_dataset(write(std::string("KVSD\x01\0\0\0\x02\0\0\0\x01\0", 14))), Error);
  EXPECT_THROW(load_dataset(write(std::string("KVSD\x01\0\0\0\x01\0\0\0\x01\0\0\0\x07", 17))),
               Error);
  EXPECT_THROW(load_dataset(dir.file("missing.kvsd")), Error);
}

TEST(PackRecords, NeverSplitsRecordsAndPadsWithMaskZero) {
  const std::vector<Record> recs = {make_record({1, 10, 11, 12}, {0, 1, 1, 1}),
                                    make_record({1, 20, 21}, {0, 0, 1}),
                                    make_record({1, 30, 31, 32, 33}, {1, 1, 1, 1, 1})};
  PackStats st;
  const auto seqs = pack_records(recs, 8, 64, &st);
  ASSERT_EQ(seqs.size(), 2u);
  EXPECT_EQ(st.n_records, 3);
  // Sequence 0: record 0 (4 tokens) + record 1 (3 tokens) + 1 pad; record 2 did not fit.
  EXPECT_EQ(seqs[0].tokens, (std::vector<int32_t>{1, 10, 11, 12, 1, 20, 21, 0}));
  EXPECT_EQ(seqs[0].doc_begin, (std::vector<int32_t>{0, 0, 0, 0, 4, 4, 4, 7}));
  // Row t predicts token t+1: record 0 rows 0..2, record 1 row 5 (token 21); never across records.
  EXPECT_EQ(seqs[0].loss_rows, (std::vector<uint8_t>{1, 1, 1, 0, 0, 1, 0, 0}));
  EXPECT_EQ(seqs[0].pos(5), 1);
  // Sequence 1: the first token's mask is ignored (no context), padding is untrained.
  EXPECT_EQ(seqs[1].loss_rows, (std::vector<uint8_t>{1, 1, 1, 1, 0, 0, 0, 0}));
  EXPECT_EQ(st.n_loss_tokens, 8);
}

TEST(PackRecords, RejectsLongRecordsAndBadTokens) {
  EXPECT_THROW(pack_records({make_record({1, 2, 3}, {1, 1, 1})}, 2, 64), Error);
  EXPECT_THROW(pack_records({make_record({1, 64}, {1, 1})}, 8, 64), Error);
  EXPECT_THROW(pack_records({make_record({1, -1}, {1, 1})}, 8, 64), Error);
}

TEST(PackRecords, DropsSequencesWithoutTrainedTokens) {
  PackStats st;
  const auto seqs =
      pack_records({make_record({1, 2, 3}, {0, 0, 0}), make_record({1, 2}, {0, 1})}, 3, 64, &st);
  EXPECT_EQ(seqs.size(), 1u);
  EXPECT_EQ(st.n_empty_dropped, 1);
}

TEST(EpochOrder, IsADeterministicPermutationThatChangesPerEpoch) {
  const auto a = epoch_order(100, 42, 0);
  EXPECT_EQ(a, epoch_order(100, 42, 0));
  EXPECT_EQ(std::set<uint32_t>(a.begin(), a.end()).size(), 100u);
  EXPECT_NE(a, epoch_order(100, 42, 1));
  EXPECT_NE(a, epoch_order(100, 43, 0));
  // Pinned values: the order must not change across platforms, compilers or releases, or a
  // checkpoint would resume on other data.
  EXPECT_EQ((std::vector<uint32_t>{a[0], a[1], a[2], a[99]}),
            (std::vector<uint32_t>{52, 10, 46, 23}));
}

TEST(SequenceStream, CrossesEpochBoundaries) {
  SequenceStream stream(3, 9);
  const auto e0 = epoch_order(3, 9, 0);
  const auto e1 = epoch_order(3, 9, 1);
  EXPECT_EQ(stream.at(2), e0[2]);
  EXPECT_EQ(stream.at(3), e1[0]);
  EXPECT_EQ(stream.at(1), e0[1]);
}

}  // namespace
}  // namespace kvsteer::train
