// Reading and editing single KV cache cells through llama.cpp's sequence-state blobs
// (llama-internals.md §1.4): the one-cell route copies the cell into the scratch sequence and
// patches that one-cell blob; the full-sequence route patches the whole sequence blob.
#include <cmath>
#include <map>
#include <string>

#include "kvsteer/error.h"
#include "llama/log.h"
#include "llama/model_impl.h"
#include "llama/session_impl.h"

namespace kvsteer {
namespace {

struct CellRef {
  const detail::BlobStream* stream = nullptr;  // null: the block does not hold the cell
  std::size_t index = 0;
};

CellRef find_cell(const detail::BlobBlock& block, Pos pos) {
  for (const auto& stream : block.streams) {
    for (std::size_t i = 0; i < stream.cells.size(); ++i) {
      if (stream.cells[i].pos == pos) {
        return {&stream, i};
      }
    }
  }
  return {};
}

void check_row(const std::vector<float>& row, std::size_t width, const char* half, std::size_t il) {
  if (row.empty()) {
    return;
  }
  if (row.size() != width) {
    throw Error(ErrorCode::InvalidArgument,
                std::string(half) + " delta of layer " + std::to_string(il) + " has " +
                    std::to_string(row.size()) + " values, expected " + std::to_string(width));
  }
  for (std::size_t j = 0; j < row.size(); ++j) {
    if (!std::isfinite(row[j])) {
      throw Error(ErrorCode::InvalidArgument,
                  std::string(half) + " delta of layer " + std::to_string(il) + " holds " +
                      std::to_string(row[j]) + " at index " + std::to_string(j) +
                      " (a NaN or infinite value); nothing was written");
    }
  }
}

}  // namespace

std::vector<std::uint8_t> Session::Impl::get_state(SeqId seq) {
  const std::size_t size = llama_state_seq_get_size(ctx.get(), seq);
  std::vector<std::uint8_t> blob(size);
  const std::size_t written = llama_state_seq_get_data(ctx.get(), blob.data(), size, seq);
  if (written != size) {
    detail::throw_backend("reading the state of sequence " + std::to_string(seq) + " gave " +
                          std::to_string(written) + " of " + std::to_string(size) + " bytes");
  }
  return blob;
}

void Session::Impl::set_state(SeqId seq, std::span<const std::uint8_t> blob) {
  const std::size_t read = llama_state_seq_set_data(ctx.get(), blob.data(), blob.size(), seq);
  if (read != blob.size()) {
    detail::throw_backend("restoring the state of sequence " + std::to_string(seq) +
                          " failed; clear that sequence before using it again");
  }
}

namespace {

void check_pos(llama_memory_t mem, SeqId seq, Pos pos) {
  const Pos lo = llama_memory_seq_pos_min(mem, seq);
  const Pos hi = llama_memory_seq_pos_max(mem, seq);
  if (lo < 0 || pos < lo || pos > hi) {
    throw Error(ErrorCode::InvalidArgument,
                "position " + std::to_string(pos) + " is not in sequence " + std::to_string(seq) +
                    (lo < 0 ? " (it is empty)"
                            : " (it holds positions " + std::to_string(lo) + ".." +
                                  std::to_string(hi) + ")"));
  }
}

}  // namespace

KvCell Session::Impl::read_cell(SeqId seq, Pos pos) {
  check_pos(mem, seq, pos);
  std::vector<std::uint8_t> blob;
  if (scratch_seq >= 0) {
    llama_memory_seq_rm(mem, scratch_seq, -1, -1);
    llama_memory_seq_cp(mem, seq, scratch_seq, pos, pos + 1);
    blob = get_state(scratch_seq);
    llama_memory_seq_rm(mem, scratch_seq, -1, -1);
  } else {
    blob = get_state(seq);
  }
  const auto parsed = detail::parse_seq_blob(blob, block_shapes);
  const auto& fp = model->fingerprint();
  KvCell cell;
  cell.pos = pos;
  cell.k.resize(static_cast<std::size_t>(fp.n_layer));
  cell.v.resize(static_cast<std::size_t>(fp.n_layer));
  bool found = false;
  for (std::size_t il = 0; il < layer_slots.size(); ++il) {
    const auto [b, index] = layer_slots[il];
    const CellRef ref = find_cell(parsed.blocks[b], pos);
    if (ref.stream == nullptr) {
      continue;  // sliding-window layer, cell outside the window
    }
    found = true;
    const auto n_cells = ref.stream->cells.size();
    cell.k[il].resize(ref.stream->k[index].n_embd);
    cell.v[il].resize(ref.stream->v[index].n_embd);
    detail::read_cell_row(blob, ref.stream->k[index], n_cells, ref.index, cell.k[il]);
    detail::read_cell_row(blob, ref.stream->v[index], n_cells, ref.index, cell.v[il]);
  }
  if (!found) {
    throw Error(ErrorCode::InvalidArgument, "sequence " + std::to_string(seq) +
                                                " has no cell at position " + std::to_string(pos));
  }
  return cell;
}

std::vector<KvCell> Session::Impl::read_cells(SeqId seq) {
  const std::vector<std::uint8_t> blob = get_state(seq);
  const auto parsed = detail::parse_seq_blob(blob, block_shapes);
  const auto n_layer = static_cast<std::size_t>(model->fingerprint().n_layer);
  std::map<Pos, KvCell> by_pos;
  for (std::size_t il = 0; il < layer_slots.size(); ++il) {
    const auto [b, index] = layer_slots[il];
    for (const auto& stream : parsed.blocks[b].streams) {
      for (std::size_t i = 0; i < stream.cells.size(); ++i) {
        KvCell& cell = by_pos[stream.cells[i].pos];
        cell.pos = stream.cells[i].pos;
        cell.k.resize(n_layer);
        cell.v.resize(n_layer);
        cell.k[il].resize(stream.k[index].n_embd);
        cell.v[il].resize(stream.v[index].n_embd);
        detail::read_cell_row(blob, stream.k[index], stream.cells.size(), i, cell.k[il]);
        detail::read_cell_row(blob, stream.v[index], stream.cells.size(), i, cell.v[il]);
      }
    }
  }
  std::vector<KvCell> cells;
  cells.reserve(by_pos.size());
  for (auto& [pos, cell] : by_pos) {
    cells.push_back(std::move(cell));
  }
  return cells;
}

void Session::Impl::add_to_cell(SeqId seq, Pos pos, const CellDelta& delta) {
  const auto& fp = model->fingerprint();
  const auto n_layer = static_cast<std::size_t>(fp.n_layer);
  for (const auto* rows : {&delta.k, &delta.v}) {
    if (!rows->empty() && rows->size() != n_layer) {
      throw Error(ErrorCode::InvalidArgument, "cell delta has " + std::to_string(rows->size()) +
                                                  " layers, the model has " +
                                                  std::to_string(n_layer));
    }
  }
  for (std::size_t il = 0; il < delta.k.size(); ++il) {
    check_row(delta.k[il], static_cast<std::size_t>(fp.n_embd_k_gqa), "K", il);
  }
  for (std::size_t il = 0; il < delta.v.size(); ++il) {
    check_row(delta.v[il], static_cast<std::size_t>(fp.n_embd_v_gqa), "V", il);
  }
  check_pos(mem, seq, pos);

  const SeqId holder = scratch_seq >= 0 ? scratch_seq : seq;
  if (scratch_seq >= 0) {
    llama_memory_seq_rm(mem, scratch_seq, -1, -1);
    llama_memory_seq_cp(mem, seq, scratch_seq, pos, pos + 1);
  }
  // Every layer is patched in this copy of the state before anything is restored: an edit that
  // does not fit the cache type in any layer is refused with the cache as it was.
  std::vector<std::uint8_t> blob;
  bool found = false;
  try {
    blob = get_state(holder);
    const auto parsed = detail::parse_seq_blob(blob, block_shapes);
    for (std::size_t il = 0; il < n_layer; ++il) {
      const auto [b, index] = layer_slots[il];
      const CellRef ref = find_cell(parsed.blocks[b], pos);
      if (ref.stream == nullptr) {
        continue;
      }
      found = true;
      const auto n_cells = ref.stream->cells.size();
      const std::string layer = " edit of layer " + std::to_string(il);
      if (il < delta.k.size() && !delta.k[il].empty()) {
        detail::add_to_cell_row(blob, ref.stream->k[index], n_cells, ref.index, delta.k[il],
                                "K" + layer);
      }
      if (il < delta.v.size() && !delta.v[il].empty()) {
        detail::add_to_cell_row(blob, ref.stream->v[index], n_cells, ref.index, delta.v[il],
                                "V" + layer);
      }
    }
  } catch (...) {
    if (scratch_seq >= 0) {
      llama_memory_seq_rm(mem, scratch_seq, -1, -1);
    }
    throw;
  }
  if (!found) {
    if (scratch_seq >= 0) {
      llama_memory_seq_rm(mem, scratch_seq, -1, -1);
    }
    throw Error(ErrorCode::InvalidArgument, "sequence " + std::to_string(seq) +
                                                " has no cell at position " + std::to_string(pos));
  }
  if (scratch_seq < 0) {
    set_state(seq, blob);
    return;
  }
  // Order matters: the cell must belong to the scratch sequence alone when set_state frees it,
  // so that the restore lands in the same physical cell (llama-internals.md §1.4, Route C).
  llama_memory_seq_rm(mem, seq, pos, pos + 1);
  set_state(scratch_seq, blob);
  llama_memory_seq_cp(mem, scratch_seq, seq, pos, pos + 1);
  llama_memory_seq_rm(mem, scratch_seq, -1, -1);
}

void Session::Impl::self_test() {
  const auto& fp = model->fingerprint();
  const Token t = model->bos().value_or(0);
  const std::vector<Token> tokens(4, t);
  llama_memory_clear(mem, true);
  decode_chunked(std::vector<DecodeItem>{{0, tokens, false}});
  const auto before = get_state(0);
  detail::parse_seq_blob(before, block_shapes);  // validates every header field
  const KvCell original = read_cell(0, 2);
  CellDelta zero;
  for (std::int32_t il = 0; il < fp.n_layer; ++il) {
    zero.k.emplace_back(static_cast<std::size_t>(fp.n_embd_k_gqa), 0.0f);
    zero.v.emplace_back(static_cast<std::size_t>(fp.n_embd_v_gqa), 0.0f);
  }
  add_to_cell(0, 2, zero);
  const auto after = get_state(0);
  const KvCell reread = read_cell(0, 2);
  llama_memory_clear(mem, true);
  if (before != after || original.k != reread.k || original.v != reread.v) {
    throw Error(ErrorCode::Unsupported,
                "KV cache self-test failed: a zero edit changed the cache (is libllama the "
                "pinned v0.4.0? set KVSTEER_LLAMA_PREFIX to a build of it)");
  }
}

}  // namespace kvsteer
