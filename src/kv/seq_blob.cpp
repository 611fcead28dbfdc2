#include "kv/seq_blob.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>

#include "ggml.h"
#include "kvsteer/error.h"

namespace kvsteer::detail {
namespace {

// Bounds-checked little-endian reader over a blob.
class BlobReader {
 public:
  explicit BlobReader(std::span<const std::uint8_t> data) : data_(data) {}

  template <typename T>
  T read(const char* field) {
    T value;
    need(sizeof(T), field);
    std::memcpy(&value, data_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }
  std::size_t skip(std::uint64_t n, const char* field) {
    need(n, field);
    std::size_t at = pos_;
    pos_ += static_cast<std::size_t>(n);
    return at;
  }
  std::size_t pos() const { return pos_; }
  std::size_t remaining() const { return data_.size() - pos_; }

 private:
  void need(std::uint64_t n, const char* field) const {
    if (n > data_.size() - pos_) {
      throw Error(ErrorCode::Format, std::string("sequence state blob truncated: ") + field +
                                         " needs " + std::to_string(n) + " bytes at offset " +
                                         std::to_string(pos_) + ", blob has " +
                                         std::to_string(data_.size()));
    }
  }
  std::span<const std::uint8_t> data_;
  std::size_t pos_ = 0;
};

[[noreturn]] void fail(const std::string& what) {
  throw Error(ErrorCode::Format, "sequence state blob: " + what +
                                     " (the llama.cpp state layout is not the pinned v0.4.0 one?)");
}

void expect_eq(std::uint64_t got, std::uint64_t want, const std::string& field) {
  if (got != want) {
    fail(field + " is " + std::to_string(got) + ", expected " + std::to_string(want));
  }
}

bool valid_type(std::int32_t type) {
  if (type == GGML_TYPE_F32) {
    return true;
  }
  if (type < 0 || type >= GGML_TYPE_COUNT) {
    return false;
  }
  const auto* traits = ggml_get_type_traits(static_cast<ggml_type>(type));
  return traits->type_size > 0 && traits->to_float != nullptr;
}

// ggml has no to_float/from_float for F32 itself.
void to_floats(ggml_type type, const std::uint8_t* src, float* dst, std::size_t n) {
  if (type == GGML_TYPE_F32) {
    std::memcpy(dst, src, n * sizeof(float));
  } else {
    ggml_get_type_traits(type)->to_float(src, dst, static_cast<std::int64_t>(n));
  }
}

void from_floats(ggml_type type, const float* src, std::uint8_t* dst, std::size_t n) {
  if (type == GGML_TYPE_F32) {
    std::memcpy(dst, src, n * sizeof(float));
  } else if (const auto* traits = ggml_get_type_traits(type); traits->from_float_ref != nullptr) {
    traits->from_float_ref(src, dst, static_cast<std::int64_t>(n));
  } else {
    ggml_quantize_chunk(type, src, dst, 0, 1, static_cast<std::int64_t>(n), nullptr);
  }
}

RowSection read_row_header(BlobReader& in, std::uint32_t n_embd, std::uint32_t n_cells,
                           const std::string& what) {
  RowSection s;
  s.n_embd = n_embd;
  s.type = in.read<std::int32_t>("row type");
  if (!valid_type(s.type)) {
    fail(what + " has unknown tensor type " + std::to_string(s.type));
  }
  const auto type = static_cast<ggml_type>(s.type);
  s.row_bytes = in.read<std::uint64_t>("row size");
  if (n_embd % ggml_blck_size(type) != 0) {
    fail(what + " width " + std::to_string(n_embd) + " is not a multiple of the " +
         ggml_type_name(type) + " block size");
  }
  expect_eq(s.row_bytes, ggml_row_size(type, n_embd), what + " row size");
  s.offset = in.skip(s.row_bytes * n_cells, "row data");
  return s;
}

RowSection read_transposed_header(BlobReader& in, std::uint32_t n_embd, std::uint32_t n_cells,
                                  const std::string& what) {
  RowSection s;
  s.transposed = true;
  s.type = in.read<std::int32_t>("V type");
  if (!valid_type(s.type)) {
    fail(what + " has unknown tensor type " + std::to_string(s.type));
  }
  const auto type = static_cast<ggml_type>(s.type);
  if (ggml_is_quantized(type)) {
    fail(what + " is transposed but quantized");
  }
  s.el_size = in.read<std::uint32_t>("V element size");
  expect_eq(s.el_size, ggml_type_size(type), what + " element size");
  s.n_embd = in.read<std::uint32_t>("V width");
  expect_eq(s.n_embd, n_embd, what + " width");
  s.row_bytes = static_cast<std::uint64_t>(s.el_size) * n_embd;
  s.offset = in.skip(s.row_bytes * n_cells, "V data");
  return s;
}

BlobStream read_stream(BlobReader& in, std::uint32_t n_cells, const BlockShape& shape,
                       const std::string& where) {
  BlobStream stream;
  stream.cells.resize(n_cells);
  for (auto& cell : stream.cells) {
    cell.pos = in.read<std::int32_t>("cell pos");
    const auto n_seq_id = in.read<std::uint32_t>("cell n_seq_id");
    if (n_seq_id == 0 || n_seq_id > 256) {
      fail(where + ": cell n_seq_id is " + std::to_string(n_seq_id) + ", expected 1..256");
    }
    cell.seq_ids.resize(n_seq_id);
    for (auto& id : cell.seq_ids) {
      id = in.read<std::int32_t>("cell seq_id");
    }
  }
  const auto v_trans = in.read<std::uint32_t>("v_trans");
  if (v_trans > 1) {
    fail(where + ": v_trans is " + std::to_string(v_trans) + ", expected 0 or 1");
  }
  stream.v_trans = v_trans == 1;
  const auto n_layer = in.read<std::uint32_t>("n_layer");
  expect_eq(n_layer, shape.n_embd_k.size(), where + " n_layer");
  for (std::uint32_t l = 0; l < n_layer; ++l) {
    stream.k.push_back(read_row_header(in, shape.n_embd_k[l], n_cells,
                                       where + " layer " + std::to_string(l) + " K"));
  }
  for (std::uint32_t l = 0; l < n_layer; ++l) {
    const std::string what = where + " layer " + std::to_string(l) + " V";
    stream.v.push_back(stream.v_trans ? read_transposed_header(in, shape.n_embd_v[l], n_cells, what)
                                      : read_row_header(in, shape.n_embd_v[l], n_cells, what));
  }
  return stream;
}

}  // namespace

const char* ggml_type_label(std::int32_t type) {
  return valid_type(type) ? ggml_type_name(static_cast<ggml_type>(type)) : "unknown";
}

SeqBlob parse_seq_blob(std::span<const std::uint8_t> blob, std::span<const BlockShape> shapes) {
  BlobReader in(blob);
  SeqBlob out;
  const auto magic = in.read<std::uint32_t>("magic");
  if (magic != kSeqBlobMagic) {
    fail("magic is " + std::to_string(magic) + ", expected 0xaf143cd8");
  }
  out.seq_id = in.read<std::int32_t>("seq_id");
  for (std::size_t b = 0; b < shapes.size(); ++b) {
    const std::string where = "block " + std::to_string(b);
    const auto n_stream = in.read<std::uint32_t>("n_stream");
    if (n_stream == 0 || n_stream > 4096) {
      fail(where + ": n_stream is " + std::to_string(n_stream) + ", expected 1..4096");
    }
    BlobBlock block;
    for (std::uint32_t s = 0; s < n_stream; ++s) {
      const auto n_cells = in.read<std::uint32_t>("cell_count");
      // Each cell takes at least 12 bytes of metadata: reject absurd counts before allocating.
      if (n_cells > in.remaining() / 12) {
        fail(where + ": cell_count " + std::to_string(n_cells) + " exceeds the blob");
      }
      block.streams.push_back(n_cells == 0 ? BlobStream{}
                                           : read_stream(in, n_cells, shapes[b],
                                                         where + " stream " + std::to_string(s)));
    }
    out.blocks.push_back(std::move(block));
  }
  if (in.remaining() != 0) {
    fail(std::to_string(in.remaining()) + " bytes left after " + std::to_string(shapes.size()) +
         " block(s)");
  }
  return out;
}

std::vector<BlockShape> block_shapes(std::int32_t n_layer, std::uint32_t n_embd_k_gqa,
                                     std::uint32_t n_embd_v_gqa, const std::vector<bool>& swa) {
  const bool iswa = std::any_of(swa.begin(), swa.end(), [](bool b) { return b; });
  std::vector<BlockShape> shapes(iswa ? 2 : 1);
  for (std::int32_t il = 0; il < n_layer; ++il) {
    BlockShape& shape = shapes[iswa && swa[static_cast<std::size_t>(il)] ? 1 : 0];
    shape.n_embd_k.push_back(n_embd_k_gqa);
    shape.n_embd_v.push_back(n_embd_v_gqa);
  }
  return shapes;
}

namespace {

class BlobWriter {
 public:
  template <typename T>
  void put(T value) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(&value);
    out_.insert(out_.end(), p, p + sizeof(T));
  }
  void put_floats(ggml_type type, std::span<const float> values) {
    const std::size_t at = out_.size();
    out_.resize(at + ggml_row_size(type, static_cast<std::int64_t>(values.size())));
    from_floats(type, values.data(), out_.data() + at, values.size());
  }
  std::vector<std::uint8_t> take() { return std::move(out_); }

 private:
  std::vector<std::uint8_t> out_;
};

}  // namespace

std::vector<std::uint8_t> write_seq_blob(const BlobLayout& layout, const BlobValue& value) {
  const auto type_k = static_cast<ggml_type>(layout.type_k);
  const auto type_v = static_cast<ggml_type>(layout.type_v);
  for (const auto& [type, n_embd, what] : {std::tuple{layout.type_k, layout.n_embd_k, "K"},
                                           std::tuple{layout.type_v, layout.n_embd_v, "V"}}) {
    if (!valid_type(type)) {
      throw Error(ErrorCode::InvalidArgument,
                  std::string(what) + " type " + std::to_string(type) + " is not a cache type");
    }
    if (n_embd % ggml_blck_size(static_cast<ggml_type>(type)) != 0) {
      throw Error(ErrorCode::InvalidArgument, std::string(what) + " width " +
                                                  std::to_string(n_embd) +
                                                  " is not a multiple of the type's block size");
    }
  }
  if (layout.v_trans && ggml_is_quantized(type_v)) {
    throw Error(ErrorCode::InvalidArgument, "a transposed V cannot be quantized");
  }
  const auto n_cells = static_cast<std::uint32_t>(layout.positions.size());
  const auto at = [&](std::uint32_t l, std::uint32_t c, std::uint32_t j, bool v) {
    return value ? value(l, c, j, v) : 0.0f;
  };
  BlobWriter w;
  w.put<std::uint32_t>(kSeqBlobMagic);
  w.put<std::int32_t>(0);   // seq_id
  w.put<std::uint32_t>(1);  // n_stream
  w.put<std::uint32_t>(n_cells);
  for (std::int32_t pos : layout.positions) {
    w.put<std::int32_t>(pos);
    w.put<std::uint32_t>(1);  // n_seq_id
    w.put<std::int32_t>(0);
  }
  w.put<std::uint32_t>(layout.v_trans ? 1 : 0);
  w.put<std::uint32_t>(layout.n_layer);
  // One layer's K or V rows: a cell after another (llama_kv_cache::state_write_data).
  std::vector<float> row;
  const auto put_rows = [&](std::uint32_t l, ggml_type type, std::uint32_t n_embd, bool v) {
    w.put<std::int32_t>(type);
    w.put<std::uint64_t>(ggml_row_size(type, n_embd));
    row.resize(n_embd);
    for (std::uint32_t c = 0; c < n_cells; ++c) {
      for (std::uint32_t j = 0; j < n_embd; ++j) {
        row[j] = at(l, c, j, v);
      }
      w.put_floats(type, row);
    }
  };
  for (std::uint32_t l = 0; l < layout.n_layer; ++l) {
    put_rows(l, type_k, layout.n_embd_k, false);
  }
  for (std::uint32_t l = 0; l < layout.n_layer; ++l) {
    if (!layout.v_trans) {
      put_rows(l, type_v, layout.n_embd_v, true);
      continue;
    }
    // Transposed: element j of every cell, then element j + 1.
    w.put<std::int32_t>(type_v);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(ggml_type_size(type_v)));
    w.put<std::uint32_t>(layout.n_embd_v);
    for (std::uint32_t j = 0; j < layout.n_embd_v; ++j) {
      for (std::uint32_t c = 0; c < n_cells; ++c) {
        const float x = at(l, c, j, true);
        w.put_floats(type_v, {&x, 1});
      }
    }
  }
  return w.take();
}

namespace {

std::size_t row_offset(const RowSection& s, std::size_t cell) {
  return s.offset + cell * static_cast<std::size_t>(s.row_bytes);
}

void check_cell(const RowSection& s, std::size_t n_cells, std::size_t cell, std::size_t n) {
  if (cell >= n_cells || n != s.n_embd) {
    throw Error(ErrorCode::InvalidArgument,
                "cell row access out of range: cell " + std::to_string(cell) + " of " +
                    std::to_string(n_cells) + ", width " + std::to_string(n) + " of " +
                    std::to_string(s.n_embd));
  }
}

}  // namespace

void read_cell_row(std::span<const std::uint8_t> blob, const RowSection& s, std::size_t n_cells,
                   std::size_t cell, std::span<float> out) {
  check_cell(s, n_cells, cell, out.size());
  const auto type = static_cast<ggml_type>(s.type);
  if (!s.transposed) {
    to_floats(type, blob.data() + row_offset(s, cell), out.data(), s.n_embd);
    return;
  }
  for (std::size_t j = 0; j < s.n_embd; ++j) {
    to_floats(type, blob.data() + s.offset + (j * n_cells + cell) * s.el_size, &out[j], 1);
  }
}

double largest_storable(std::int32_t type) {
  constexpr double kF16Max = 65504.0;
  switch (type) {
    case GGML_TYPE_F32:
      return std::numeric_limits<float>::max();
    case GGML_TYPE_F16:
      return kF16Max;
    case GGML_TYPE_BF16:
      return 3.3895313892515355e38;  // 0x7f7f: bf16's largest finite value
    case GGML_TYPE_Q8_0:
      return 127.0 * kF16Max;
    case GGML_TYPE_Q4_0:
      return 8.0 * kF16Max;
    default:
      return 0.0;
  }
}

namespace {

// The edited row does not fit its type: say where, how large it got, and what the type holds.
[[noreturn]] void refuse_row(std::string_view what, const RowSection& s,
                             std::span<const float> row) {
  float largest = 0.0f;
  bool finite = true;
  for (float x : row) {
    if (!std::isfinite(x)) {
      finite = false;
      largest = x;
      break;
    }
    largest = std::max(largest, std::fabs(x));
  }
  char value[32];
  std::snprintf(value, sizeof value, "%.4g", static_cast<double>(largest));
  std::string message = std::string(what) + " gives " +
                        (finite ? std::string("values up to ") + value + " in magnitude"
                                : std::string("a non-finite value (") + value + ")") +
                        ", which a " + ggml_type_label(s.type) + " cache cannot hold";
  if (const double limit = largest_storable(s.type); limit > 0.0) {
    std::snprintf(value, sizeof value, "%.6g", limit);
    message += std::string(" (largest storable magnitude ") + value + ")";
  }
  throw Error(ErrorCode::InvalidArgument,
              message +
                  "; nothing was written. Lower the coefficient, or use a wider cache type "
                  "(--ctk/--ctv f32)");
}

}  // namespace

void add_to_cell_row(std::span<std::uint8_t> blob, const RowSection& s, std::size_t n_cells,
                     std::size_t cell, std::span<const float> delta, std::string_view what) {
  check_cell(s, n_cells, cell, delta.size());
  if (std::all_of(delta.begin(), delta.end(), [](float x) { return x == 0.0f; })) {
    return;
  }
  std::vector<float> row(s.n_embd);
  read_cell_row(blob, s, n_cells, cell, row);
  for (std::size_t j = 0; j < row.size(); ++j) {
    row[j] += delta[j];
  }
  // Round to the type in a scratch buffer and read it back: only a row whose every stored value
  // is finite is written, so a refused edit leaves the blob as it was. Checking after rounding
  // catches what a range check on the floats would miss (F16 rounds 65519 down, 65520 up to inf;
  // a Q8_0 block fails through its F16 scale, not through any one value).
  const auto type = static_cast<ggml_type>(s.type);
  const std::size_t stride = s.transposed ? s.el_size : 0;
  std::vector<std::uint8_t> encoded(s.transposed ? s.el_size * s.n_embd : s.row_bytes);
  std::vector<float> back(s.n_embd);
  if (!s.transposed) {
    from_floats(type, row.data(), encoded.data(), s.n_embd);
    to_floats(type, encoded.data(), back.data(), s.n_embd);
  } else {
    for (std::size_t j = 0; j < s.n_embd; ++j) {
      from_floats(type, &row[j], encoded.data() + j * stride, 1);
      to_floats(type, encoded.data() + j * stride, &back[j], 1);
    }
  }
  if (!std::all_of(back.begin(), back.end(), [](float x) { return std::isfinite(x); })) {
    refuse_row(what, s, row);
  }
  if (!s.transposed) {
    std::memcpy(blob.data() + row_offset(s, cell), encoded.data(), encoded.size());
    return;
  }
  for (std::size_t j = 0; j < s.n_embd; ++j) {
    std::memcpy(blob.data() + s.offset + (j * n_cells + cell) * s.el_size,
                encoded.data() + j * stride, stride);
  }
}

}  // namespace kvsteer::detail
