// Session::Impl, shared by session.cpp (context, decoding) and cell_access.cpp (KV cells).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kv/seq_blob.h"
#include "kvsteer/session.h"
#include "llama-cpp.h"
#include "llama/batch.h"

namespace kvsteer {
namespace detail {

// Graph tensors recorded by the scheduler callback (SessionParams::capture_residual and
// capture_tensors): per name, the last token's row of every layer.
struct TensorCapture {
  std::map<std::string, std::vector<std::vector<float>>, std::less<>> rows;  // name -> [n_layer]
  std::map<std::string, std::size_t, std::less<>> width;  // name -> values per token
  bool has = false;
  bool window = false;  // record the attention window (capture_attention_window)
  AttentionWindow last_window;
  bool has_window = false;
};

}  // namespace detail

struct Session::Impl {
  std::shared_ptr<const Model> model;
  SessionParams params;
  llama_context_ptr ctx;
  llama_memory_t mem = nullptr;  // borrowed from ctx
  detail::Batch batch{1};
  bool k_rotated = false;
  SeqId scratch_seq = -1;  // reserved for one-cell edits; -1 with the full-sequence route
  std::vector<std::vector<float>> logits;  // [n_seq][n_vocab] last logits per sequence
  std::vector<bool> has_logits;            // [n_seq]
  detail::TensorCapture capture;           // with capture_residual / capture_tensors

  // Cache blocks as the blob lists them, and where each model layer lives.
  std::vector<detail::BlockShape> block_shapes;
  struct LayerSlot {
    std::size_t block = 0;
    std::size_t index = 0;  // layer index inside the block
  };
  std::vector<LayerSlot> layer_slots;  // [n_layer]

  void check_seq(SeqId seq) const;
  void decode_chunked(std::span<const DecodeItem> items);
  // One-cell and full-sequence access (cell_access.cpp).
  std::vector<std::uint8_t> get_state(SeqId seq);
  void set_state(SeqId seq, std::span<const std::uint8_t> blob);
  KvCell read_cell(SeqId seq, Pos pos);
  std::vector<KvCell> read_cells(SeqId seq);
  void add_to_cell(SeqId seq, Pos pos, const CellDelta& delta);
  void self_test();
};

}  // namespace kvsteer
