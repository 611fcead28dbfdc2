// The ONLY code that knows the byte layout of llama.cpp's per-sequence state blob
// (llama_state_seq_get_data, pinned llama.cpp v0.4.0; ../../docs/DESIGN.md "Sequence blobs").
// Every header field is validated; anything unexpected is Error(Format), never a guess.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

namespace kvsteer::detail {

inline constexpr std::uint32_t kSeqBlobMagic = 0xaf143cd8;

// One layer's K or V rows inside one stream of a blob.
struct RowSection {
  std::int32_t type = -1;       // ggml_type of the cache tensor
  std::uint32_t n_embd = 0;     // elements per cell (n_embd_k_gqa or n_embd_v_gqa)
  std::uint64_t row_bytes = 0;  // bytes of one cell's row (ggml_row_size)
  std::uint32_t el_size = 0;    // bytes of one element (transposed V only)
  bool transposed = false;      // V without flash attention: element-major, see cell_offset
  std::size_t offset = 0;       // first data byte in the blob
};

struct CellMeta {
  std::int32_t pos = -1;
  std::vector<std::int32_t> seq_ids;
};

// A stream (one per sequence unless the cache is unified). Cells are in cell-index order.
struct BlobStream {
  std::vector<CellMeta> cells;
  bool v_trans = false;
  std::vector<RowSection> k;  // [n_layer of the block]
  std::vector<RowSection> v;  // [n_layer of the block]
};

// A cache block: dense models have one; iSWA models a base block then a sliding-window block.
struct BlobBlock {
  std::vector<BlobStream> streams;
};

struct SeqBlob {
  std::int32_t seq_id = -1;
  std::vector<BlobBlock> blocks;
};

// What the caller knows about a block from the model: its layers' row widths, in block order.
struct BlockShape {
  std::vector<std::uint32_t> n_embd_k;  // [n_layer of the block]
  std::vector<std::uint32_t> n_embd_v;  // [n_layer of the block]
};

// The blocks of a model's blobs: the base block holds the full-attention layers, an iSWA
// model's second block the sliding-window ones (swa[il]), each in increasing layer order.
std::vector<BlockShape> block_shapes(std::int32_t n_layer, std::uint32_t n_embd_k_gqa,
                                     std::uint32_t n_embd_v_gqa, const std::vector<bool>& swa);

// Parses and validates a blob: magic, stream counts, cell counts, v_trans, layer counts and row
// widths against `shapes`, tensor types, row sizes, and that exactly blob.size() bytes are
// consumed. Throws Error(Format) naming the field, the value read and the value expected.
SeqBlob parse_seq_blob(std::span<const std::uint8_t> blob, std::span<const BlockShape> shapes);

// What write_seq_blob writes: one block with one stream, sequence 0, a cell per position.
struct BlobLayout {
  std::vector<std::int32_t> positions;
  std::uint32_t n_layer = 0;
  std::uint32_t n_embd_k = 0, n_embd_v = 0;
  std::int32_t type_k = 0, type_v = 0;  // ggml types (0: F32)
  bool v_trans = false;                 // V element-major, as llama.cpp without flash attention
};

// The inverse of parse_seq_blob for such a layout, for tests and benchmarks that need blobs
// without a model. Row values come from value(layer, cell, j, is_v), rounded to the section's
// type; without it every row is zero. Throws Error(InvalidArgument) for a transposed quantized V
// or a width that is not a multiple of the type's block size.
using BlobValue = std::function<float(std::uint32_t, std::uint32_t, std::uint32_t, bool)>;
std::vector<std::uint8_t> write_seq_blob(const BlobLayout& layout, const BlobValue& value = {});

// Reads cell `cell` (index among the stream's cells) of a section as floats. out: [n_embd].
void read_cell_row(std::span<const std::uint8_t> blob, const RowSection& section,
                   std::size_t n_cells, std::size_t cell, std::span<float> out);

// Adds delta to that cell's row, rounding to the section's type (dequantize, add, requantize for
// quantized rows). A delta of all zeros leaves the bytes untouched. Only the cell's own bytes
// change. When the result does not fit the type (a value that reads back from the rounded row as
// inf or NaN: F16 beyond 65504, a Q8_0 or Q4_0 block whose F16 scale overflows, a float sum that
// overflows), throws Error(InvalidArgument) naming `what` (e.g. "V edit of layer 3"), the largest
// |value| of the result and the type's range, and leaves the blob untouched.
void add_to_cell_row(std::span<std::uint8_t> blob, const RowSection& section, std::size_t n_cells,
                     std::size_t cell, std::span<const float> delta,
                     std::string_view what = "cell edit");

// Largest magnitude a row of this ggml type can hold without becoming inf: the type's largest
// finite value for float types, 127 (Q8_0) or 8 (Q4_0) times F16's 65504 for block formats
// whose scale is F16 (scale = amax/127, amax/8). 0 for types without a known bound.
double largest_storable(std::int32_t type);

// Name of a ggml type ("f16", "q8_0", ...), for messages.
const char* ggml_type_label(std::int32_t type);

}  // namespace kvsteer::detail
