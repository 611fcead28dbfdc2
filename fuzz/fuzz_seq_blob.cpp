// The sequence-state blob parser and patcher (src/kv/seq_blob.*), fed mutations of real blobs of
// llama.cpp sessions (corpus/seq_blob, written by kvsteer-fuzz-seeds). Parsing either refuses
// with Error(Format) or gives sections that lie inside the blob; reading any cell then stays in
// bounds, and an edit changes only that cell's own bytes, or is refused (the result does not fit
// the cache type) and changes nothing.
//
// Input: the shapes the caller would know from the model, then the blob:
//   u8 n_block (1..2), per block: u8 n_layer (1..64), n_layer x (u16 n_embd_k, u16 n_embd_v),
//   u8 edit (delta magnitude index and sign), blob bytes.
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fuzz_util.h"
#include "kv/seq_blob.h"
#include "kvsteer/error.h"

namespace {

using namespace kvsteer;
using namespace kvsteer::detail;

using fuzz::check;

class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  bool u8(std::uint32_t& out) {
    if (pos_ + 1 > size_) return false;
    out = data_[pos_++];
    return true;
  }
  bool u16(std::uint32_t& out) {
    if (pos_ + 2 > size_) return false;
    out = static_cast<std::uint32_t>(data_[pos_] | (data_[pos_ + 1] << 8));
    pos_ += 2;
    return true;
  }
  std::span<const std::uint8_t> rest() const { return {data_ + pos_, size_ - pos_}; }

 private:
  const std::uint8_t* data_;
  std::size_t size_, pos_ = 0;
};

// Byte offsets of one cell's row in a section (strided for transposed V).
std::vector<std::size_t> cell_bytes(const RowSection& s, std::size_t n_cells, std::size_t cell) {
  std::vector<std::size_t> out;
  if (!s.transposed) {
    for (std::size_t b = 0; b < s.row_bytes; ++b) out.push_back(s.offset + cell * s.row_bytes + b);
    return out;
  }
  for (std::size_t j = 0; j < s.n_embd; ++j) {
    for (std::size_t b = 0; b < s.el_size; ++b) {
      out.push_back(s.offset + (j * n_cells + cell) * s.el_size + b);
    }
  }
  return out;
}

void exercise(std::vector<std::uint8_t>& blob, const RowSection& s, std::size_t n_cells,
              float magnitude) {
  check(s.offset <= blob.size() && s.row_bytes * n_cells <= blob.size() - s.offset,
        "a section lies outside the blob");
  std::vector<float> row(s.n_embd);
  // The first and last cell: the edges are where offsets go wrong.
  for (std::size_t cell : {std::size_t{0}, n_cells - 1}) {
    read_cell_row(blob, s, n_cells, cell, row);
    std::vector<float> delta(s.n_embd);
    for (std::size_t j = 0; j < delta.size(); ++j) {
      delta[j] = (j % 2 == 0 ? magnitude : -magnitude) * static_cast<float>(j % 7 + 1) / 7.0f;
    }
    const std::vector<std::uint8_t> before = blob;
    try {
      add_to_cell_row(blob, s, n_cells, cell, delta, "fuzz edit");
    } catch (const Error& e) {
      check(e.code() == ErrorCode::InvalidArgument, "a refused edit gave another code");
      check(blob == before, "a refused edit changed the blob");
      continue;
    }
    std::vector<bool> own(blob.size(), false);
    for (std::size_t b : cell_bytes(s, n_cells, cell)) own[b] = true;
    for (std::size_t b = 0; b < blob.size(); ++b) {
      check(own[b] || blob[b] == before[b], "an edit changed bytes outside its cell");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  std::uint32_t n_block = 0, edit = 0;
  if (!in.u8(n_block) || n_block < 1 || n_block > 2) return 0;
  std::vector<BlockShape> shapes(n_block);
  for (auto& shape : shapes) {
    std::uint32_t n_layer = 0;
    if (!in.u8(n_layer) || n_layer < 1 || n_layer > 64) return 0;
    for (std::uint32_t l = 0; l < n_layer; ++l) {
      std::uint32_t k = 0, v = 0;
      if (!in.u16(k) || !in.u16(v) || k == 0 || v == 0) return 0;
      shape.n_embd_k.push_back(k);
      shape.n_embd_v.push_back(v);
    }
  }
  if (!in.u8(edit)) return 0;
  static constexpr float kMagnitudes[] = {0.0f, 1e-3f, 1.0f, 1e3f, 6e4f, 7e4f, 1e7f, 1e10f, 3e38f};
  const float magnitude = kMagnitudes[edit % std::size(kMagnitudes)];
  std::vector<std::uint8_t> blob(in.rest().begin(), in.rest().end());
  SeqBlob parsed;
  try {
    parsed = parse_seq_blob(blob, shapes);
  } catch (const Error& e) {
    check(e.code() == ErrorCode::Format, "a bad blob was refused with another code");
    return 0;
  }
  check(parsed.blocks.size() == shapes.size(), "block count differs from the shapes");
  for (const auto& block : parsed.blocks) {
    for (const auto& stream : block.streams) {
      const std::size_t n_cells = stream.cells.size();
      if (n_cells == 0) continue;
      for (const auto* sections : {&stream.k, &stream.v}) {
        for (const RowSection& s : *sections) exercise(blob, s, n_cells, magnitude);
      }
    }
  }
  return 0;
}
