#include "kv/seq_blob.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "ggml.h"
#include "kvsteer/error.h"

namespace kvsteer::detail {
namespace {

// Blobs of one block and one stream: `positions.size()` cells, n_layer layers of K rows of `type`
// (value = 100*layer + 10*cell + j) and F32 V rows (value + 0.5).
class BlobBuilder {
 public:
  BlobBuilder(std::uint32_t n_layer, std::uint32_t width, bool v_trans,
              std::int32_t type = GGML_TYPE_F32)
      : n_layer_(n_layer), width_(width), v_trans_(v_trans), type_(type) {}

  std::vector<std::uint8_t> build(const std::vector<std::int32_t>& positions) const {
    return write_seq_blob({positions, n_layer_, width_, width_, type_, GGML_TYPE_F32, v_trans_},
                          [](std::uint32_t l, std::uint32_t c, std::uint32_t j, bool v) {
                            return value(l, c, j) + (v ? 0.5f : 0.0f);
                          });
  }

  static float value(std::uint32_t l, std::uint32_t c, std::uint32_t j) {
    return static_cast<float>(100 * l + 10 * c + j);
  }
  BlockShape shape() const {
    return {std::vector<std::uint32_t>(n_layer_, width_),
            std::vector<std::uint32_t>(n_layer_, width_)};
  }

 private:
  std::uint32_t n_layer_, width_;
  bool v_trans_;
  std::int32_t type_;
};

// The byte layout write_seq_blob must produce (llama-internals.md §1.2), written out field by
// field once, so that the writer and the parser cannot drift together.
TEST(SeqBlob, TheWriterLaysOutV040Blobs) {
  const auto blob = write_seq_blob({{7, 9}, 1, 2, 2, GGML_TYPE_F32, GGML_TYPE_F32, true},
                                   [](std::uint32_t, std::uint32_t c, std::uint32_t j, bool v) {
                                     return static_cast<float>(10 * c + j) + (v ? 0.5f : 0.0f);
                                   });
  std::vector<std::uint8_t> want;
  const auto put = [&want](auto x) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(&x);
    want.insert(want.end(), p, p + sizeof(x));
  };
  put(kSeqBlobMagic);
  put(std::int32_t{0});   // seq_id
  put(std::uint32_t{1});  // n_stream
  put(std::uint32_t{2});  // cell_count
  for (std::int32_t pos : {7, 9}) {
    put(pos);
    put(std::uint32_t{1});  // n_seq_id
    put(std::int32_t{0});   // seq_id
  }
  put(std::uint32_t{1});  // v_trans
  put(std::uint32_t{1});  // n_layer
  put(std::int32_t{GGML_TYPE_F32});
  put(std::uint64_t{8});  // K row size
  for (float x : {0.0f, 1.0f, 10.0f, 11.0f}) put(x);
  put(std::int32_t{GGML_TYPE_F32});
  put(std::uint32_t{4});                              // V element size
  put(std::uint32_t{2});                              // V width
  for (float x : {0.5f, 10.5f, 1.5f, 11.5f}) put(x);  // element-major
  EXPECT_EQ(blob, want);
  EXPECT_THROW(write_seq_blob({{0}, 1, 32, 32, GGML_TYPE_F32, GGML_TYPE_Q8_0, true}), Error);
  EXPECT_THROW(write_seq_blob({{0}, 1, 30, 32, GGML_TYPE_Q8_0, GGML_TYPE_F32, false}), Error);
}

TEST(SeqBlob, BlockShapesPutSlidingWindowLayersInTheSecondBlock) {
  const auto dense = block_shapes(3, 8, 4, {false, false, false});
  ASSERT_EQ(dense.size(), 1u);
  EXPECT_EQ(dense[0].n_embd_k, (std::vector<std::uint32_t>{8, 8, 8}));
  EXPECT_EQ(dense[0].n_embd_v, (std::vector<std::uint32_t>{4, 4, 4}));
  const auto iswa = block_shapes(5, 8, 4, {true, false, true, false, true});
  ASSERT_EQ(iswa.size(), 2u);
  EXPECT_EQ(iswa[0].n_embd_k.size(), 2u);
  EXPECT_EQ(iswa[1].n_embd_k.size(), 3u);
}

TEST(SeqBlob, ParsesRowsAndPositions) {
  BlobBuilder b(2, 4, false);
  const auto blob = b.build({5, 6, 7});
  const BlockShape shape = b.shape();
  const SeqBlob parsed = parse_seq_blob(blob, {&shape, 1});
  ASSERT_EQ(parsed.blocks.size(), 1u);
  const auto& stream = parsed.blocks[0].streams.at(0);
  ASSERT_EQ(stream.cells.size(), 3u);
  EXPECT_EQ(stream.cells[2].pos, 7);
  std::vector<float> row(4);
  read_cell_row(blob, stream.k[1], 3, 2, row);
  EXPECT_EQ(row, (std::vector<float>{120, 121, 122, 123}));
  read_cell_row(blob, stream.v[0], 3, 1, row);
  EXPECT_EQ(row, (std::vector<float>{10.5f, 11.5f, 12.5f, 13.5f}));
}

TEST(SeqBlob, ReadsTransposedV) {
  BlobBuilder b(2, 4, true);
  const auto blob = b.build({0, 1, 2});
  const BlockShape shape = b.shape();
  const SeqBlob parsed = parse_seq_blob(blob, {&shape, 1});
  const auto& stream = parsed.blocks[0].streams.at(0);
  EXPECT_TRUE(stream.v_trans);
  std::vector<float> row(4);
  read_cell_row(blob, stream.v[1], 3, 2, row);
  EXPECT_EQ(row, (std::vector<float>{120.5f, 121.5f, 122.5f, 123.5f}));
}

TEST(SeqBlob, EditTouchesOnlyTheTargetCellTransposed) {
  BlobBuilder b(2, 4, true);
  auto blob = b.build({0, 1, 2});
  const auto before = blob;
  const BlockShape shape = b.shape();
  const SeqBlob parsed = parse_seq_blob(blob, {&shape, 1});
  const auto& stream = parsed.blocks[0].streams.at(0);
  add_to_cell_row(blob, stream.v[1], 3, 1, std::vector<float>{1, 2, 3, 4});
  std::vector<float> row(4);
  read_cell_row(blob, stream.v[1], 3, 1, row);
  EXPECT_EQ(row, (std::vector<float>{111.5f, 113.5f, 115.5f, 117.5f}));
  std::size_t changed = 0;
  for (std::size_t i = 0; i < blob.size(); ++i) changed += blob[i] != before[i];
  // Four float elements, each of which changes in at most 4 bytes.
  EXPECT_GT(changed, 0u);
  EXPECT_LE(changed, 16u);
  read_cell_row(blob, stream.v[1], 3, 0, row);
  EXPECT_EQ(row, (std::vector<float>{100.5f, 101.5f, 102.5f, 103.5f}));
  read_cell_row(blob, stream.v[1], 3, 2, row);
  EXPECT_EQ(row, (std::vector<float>{120.5f, 121.5f, 122.5f, 123.5f}));
}

TEST(SeqBlob, ZeroDeltaLeavesQuantizedRowUntouched) {
  BlobBuilder b(1, 32, false, GGML_TYPE_Q8_0);
  auto blob = b.build({0, 1});
  const auto before = blob;
  const BlockShape shape = b.shape();
  const SeqBlob parsed = parse_seq_blob(blob, {&shape, 1});
  add_to_cell_row(blob, parsed.blocks[0].streams[0].k[0], 2, 1, std::vector<float>(32, 0.0f));
  EXPECT_EQ(blob, before);
  add_to_cell_row(blob, parsed.blocks[0].streams[0].k[0], 2, 1, std::vector<float>(32, 1.0f));
  std::vector<float> row(32);
  read_cell_row(blob, parsed.blocks[0].streams[0].k[0], 2, 1, row);
  for (std::size_t j = 0; j < 32; ++j) {
    // Two Q8_0 roundings (the stored row, then the edited one): max |x| / 127 each half-step.
    EXPECT_NEAR(row[j], BlobBuilder::value(0, 1, j) + 1.0f, 42.0f / 127.0f) << j;
  }
}

// An edit whose result a cache type cannot hold is refused with the blob untouched, naming what
// was edited, the largest value and the type's range; just inside the range it is written.
struct RangeCase {
  std::int32_t type;
  float fits;       // added to every element: the result stays storable
  float overflows;  // the result (or the block scale) becomes inf
  const char* limit;
};

class SeqBlobRange : public ::testing::TestWithParam<RangeCase> {};

TEST_P(SeqBlobRange, RefusesAnEditBeyondTheTypeAndWritesNothing) {
  const RangeCase& c = GetParam();
  BlobBuilder b(2, 32, false, c.type);
  auto blob = b.build({0, 1});
  const auto before = blob;
  const BlockShape shape = b.shape();
  const SeqBlob parsed = parse_seq_blob(blob, {&shape, 1});
  const RowSection& k1 = parsed.blocks[0].streams[0].k[1];
  try {
    add_to_cell_row(blob, k1, 2, 1, std::vector<float>(32, c.overflows), "K edit of layer 1");
    FAIL() << "expected a refusal";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    const std::string m = e.what();
    EXPECT_NE(m.find("K edit of layer 1"), std::string::npos) << m;
    EXPECT_NE(m.find(ggml_type_label(c.type)), std::string::npos) << m;
    EXPECT_NE(m.find(c.limit), std::string::npos) << m;
    EXPECT_NE(m.find("nothing was written"), std::string::npos) << m;
  }
  EXPECT_EQ(blob, before);
  add_to_cell_row(blob, k1, 2, 1, std::vector<float>(32, c.fits), "K edit of layer 1");
  std::vector<float> row(32);
  read_cell_row(blob, k1, 2, 1, row);
  for (float x : row) EXPECT_TRUE(std::isfinite(x));
  EXPECT_NE(blob, before);
}

INSTANTIATE_TEST_SUITE_P(CacheTypes, SeqBlobRange,
                         ::testing::Values(RangeCase{GGML_TYPE_F16, 6.0e4f, 7.0e4f, "65504"},
                                           RangeCase{GGML_TYPE_BF16, 1.0e38f, 3.4e38f,
                                                     "3.38953e+38"},
                                           RangeCase{GGML_TYPE_Q8_0, 8.0e6f, 9.0e6f, "8.31901e+06"},
                                           RangeCase{GGML_TYPE_Q4_0, 5.0e5f, 6.0e5f, "524032"}),
                         [](const ::testing::TestParamInfo<RangeCase>& tp) {
                           return std::string(ggml_type_label(tp.param.type));
                         });

TEST(SeqBlob, RefusesAFloatOverflowInTransposedV) {
  BlobBuilder b(1, 4, true);
  auto blob = b.build({0, 1});
  const BlockShape shape = b.shape();
  const SeqBlob parsed = parse_seq_blob(blob, {&shape, 1});
  const RowSection& v0 = parsed.blocks[0].streams[0].v[0];
  // F32 rounds FLT_MAX + 10 back to FLT_MAX, but twice FLT_MAX is inf.
  add_to_cell_row(blob, v0, 2, 1, std::vector<float>(4, std::numeric_limits<float>::max()));
  const auto before = blob;
  EXPECT_THROW(
      add_to_cell_row(blob, v0, 2, 1, std::vector<float>(4, std::numeric_limits<float>::max())),
      Error);
  EXPECT_EQ(blob, before);
}

TEST(SeqBlob, LargestStorableMagnitudes) {
  EXPECT_EQ(largest_storable(GGML_TYPE_F16), 65504.0);
  EXPECT_EQ(largest_storable(GGML_TYPE_F32), std::numeric_limits<float>::max());
  EXPECT_EQ(largest_storable(GGML_TYPE_Q8_0), 127.0 * 65504.0);
  EXPECT_EQ(largest_storable(GGML_TYPE_Q4_0), 8.0 * 65504.0);
  EXPECT_EQ(largest_storable(GGML_TYPE_Q5_1), 0.0);
}

TEST(SeqBlob, RejectsWrongMagic) {
  BlobBuilder b(1, 4, false);
  auto blob = b.build({0});
  blob[0] ^= 0xff;
  const BlockShape shape = b.shape();
  try {
    parse_seq_blob(blob, {&shape, 1});
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Format);
    EXPECT_NE(std::string(e.what()).find("magic"), std::string::npos) << e.what();
  }
}

TEST(SeqBlob, RejectsTruncatedAndTrailingBytes) {
  BlobBuilder b(2, 4, false);
  const auto blob = b.build({0, 1});
  const BlockShape shape = b.shape();
  for (std::size_t cut : {std::size_t{3}, std::size_t{20}, blob.size() - 1}) {
    std::vector<std::uint8_t> part(blob.begin(), blob.begin() + static_cast<long>(cut));
    EXPECT_THROW(parse_seq_blob(part, {&shape, 1}), Error) << "cut at " << cut;
  }
  auto longer = blob;
  longer.push_back(0);
  EXPECT_THROW(parse_seq_blob(longer, {&shape, 1}), Error);
}

TEST(SeqBlob, RejectsLayerCountAndRowSizeMismatch) {
  BlobBuilder b(2, 4, false);
  const auto blob = b.build({0});
  const BlockShape three_layers{{4, 4, 4}, {4, 4, 4}};
  EXPECT_THROW(parse_seq_blob(blob, {&three_layers, 1}), Error);
  const BlockShape wider{{8, 8}, {8, 8}};
  try {
    parse_seq_blob(blob, {&wider, 1});
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row size"), std::string::npos) << e.what();
  }
}

TEST(SeqBlob, RejectsOutOfRangeCellAccess) {
  BlobBuilder b(1, 4, false);
  const auto blob = b.build({0, 1});
  const BlockShape shape = b.shape();
  const SeqBlob parsed = parse_seq_blob(blob, {&shape, 1});
  std::vector<float> row(4);
  EXPECT_THROW(read_cell_row(blob, parsed.blocks[0].streams[0].k[0], 2, 2, row), Error);
  std::vector<float> narrow(3);
  EXPECT_THROW(read_cell_row(blob, parsed.blocks[0].streams[0].k[0], 2, 0, narrow), Error);
}

}  // namespace
}  // namespace kvsteer::detail
