// A llama context over one Model: decoding, and reading or editing single KV cache cells.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvsteer/model.h"
#include "kvsteer/types.h"

namespace kvsteer {

enum class FlashAttn { Auto, On, Off };  // Auto resolves to On on CPU (non-transposed V cache)

// How a cell edit reaches the cache (../docs/DESIGN.md, "Editing one cell").
enum class EditRoute {
  OneCell,       // copy the cell to a scratch sequence, patch its one-cell blob: O(1) in context
  FullSequence,  // patch the whole sequence blob and restore it: O(n_tokens)
};

// How the cache holds several sequences (../docs/DESIGN.md, "Cache layout").
enum class KvStreams {
  // One stream for all sequences: a token's attention is computed over every sequence's cells
  // (masked), and cells can be shared between sequences (the one-cell edit route needs this).
  Unified,
  // A stream per sequence, of n_ctx / n_seq cells (rounded up to 256): a token's attention runs
  // over its own sequence's cells only, and a sequence's cells lie in the order it decoded them
  // whoever shares the session. Measured on SmolLM2-135M, 16 sequences of 800 cells: decode 2.2x
  // faster than Unified with an F16 cache, 3.3x with F32 and flash attention off. Needs
  // EditRoute::FullSequence (a cell cannot be shared across streams).
  PerSequence,
};

// Names as the CLI and config.json spell them: "on", "off", "auto"; "unified", "per-sequence".
// The parsers throw Error(InvalidArgument) naming the accepted values.
FlashAttn parse_flash_attn(const std::string& name);
const char* flash_attn_name(FlashAttn fa) noexcept;
KvStreams parse_kv_streams(const std::string& name);
const char* kv_streams_name(KvStreams streams) noexcept;
// "one-cell", "full".
EditRoute parse_edit_route(const std::string& name);
const char* edit_route_name(EditRoute route) noexcept;

struct SessionParams {
  std::uint32_t n_ctx = 4096;   // cells of the cache, all sequences together
  std::uint32_t n_batch = 512;  // tokens per llama_decode call; n_ubatch is the same, so prefill
                                // chunking is fixed and results are reproducible
  std::uint32_t n_seq = 1;      // user sequences 0 .. n_seq-1 (one more is reserved as scratch)
  std::int32_t n_threads = 0;   // 0 = all hardware threads; results do not depend on it
  KvType type_k = KvType::F16;  // cache storage; quantized K is stored Hadamard-rotated
  KvType type_v = KvType::F16;  // quantized V needs flash attention
  FlashAttn flash_attn = FlashAttn::Auto;
  EditRoute edit_route = EditRoute::OneCell;
  KvStreams kv_streams = KvStreams::Unified;
  // Record the block outputs (the residual stream, llama.cpp's "l_out-<il>") of the last token
  // of every decode, for activation-steering extraction (last_residual()). Costs a graph split
  // per layer; leave off otherwise.
  bool capture_residual = false;
  // More graph tensors to record the same way, by llama.cpp name without the "-<il>" suffix
  // (e.g. "Qcur", "kqv_out"); when a name occurs several times in a layer (Qcur before and after
  // RoPE) the last node wins. Values per token: n_head * head size for "Qcur" and "kqv_out",
  // the K/V row for "Kcur"/"Vcur", n_embd for any other name. Read them with last_captured().
  // Each costs graph splits.
  std::vector<std::string> capture_tensors;
  // Record the attention window of each decode call (last_attention_window()): how many cache
  // cells llama.cpp computes attention over, and which of them the call's last token may see.
  // Costs a graph split at layer 0's attention output; leave off otherwise.
  bool capture_attention_window = false;
  // Asked by libllama while it computes a decode (from one of its compute threads, many times per
  // call); returning true stops the call: decode throws Error(Cancelled) and the sequences keep
  // only the tokens of the calls before it. Must be cheap and thread-safe (read an atomic flag);
  // exceptions it throws are swallowed and count as "go on". May be empty. Frontends use it to
  // stop long calls on Ctrl-C (the Python package).
  std::function<bool()> abort_callback;
};

// A session's settings by name, as the CLI's flags and the Python package's keywords give them.
struct SessionSettings {
  std::uint32_t n_ctx = 0;      // 0: the model's training context, clamped to [64, 8192]
  std::uint32_t n_batch = 512;  // capped at n_ctx
  std::int32_t n_threads = 0;
  std::string type_k = "f16", type_v = "f16";
  std::string flash_attn = "auto";
  std::string edit_route = "one-cell";
  std::string kv_streams = "unified";  // "per-sequence" implies the full-sequence edit route
};

// SessionParams for n_seq sequences of model. Throws Error(InvalidArgument) naming a bad name,
// a zero n_batch or negative threads; Session's constructor checks the rest.
SessionParams session_params(const Model& model, const SessionSettings& settings,
                             std::uint32_t n_seq = 1);

// The cells one decode call attended over (SessionParams::capture_attention_window), read from
// llama.cpp's attention mask at layer 0.
struct AttentionWindow {
  std::int32_t n_kv = 0;  // cells in the window: attention is computed over cells [0, n_kv)
  // Physical cell indices the call's last token attends to (its sequence's cells), ascending.
  std::vector<std::int32_t> visible_cells;
};

// Change to add to one cell: per model layer, a K row and a V row. An empty row leaves that
// layer's K (or V) untouched, so only the selected layers are rewritten.
struct CellDelta {
  std::vector<std::vector<float>> k;  // [n_layer][n_embd_k_gqa] or empty rows
  std::vector<std::vector<float>> v;  // [n_layer][n_embd_v_gqa] or empty rows
};

// Tokens to append to one sequence in a batched decode.
struct DecodeItem {
  SeqId seq = 0;
  std::span<const Token> tokens;
  bool logits_last = true;  // keep the logits of the last token (Session::logits)
};

// Thread-compatible: distinct Sessions may be used on distinct threads; one Session is not shared.
// Move-only. The Model is kept alive by the Session.
class Session {
 public:
  // Creates a libllama context. Throws Error(InvalidArgument) for inconsistent params,
  // Error(Backend) when libllama refuses, Error(Unsupported) when the model's cache cannot be
  // steered. Runs the blob self-test (a zero edit must be bit-identical) on first edit.
  Session(std::shared_ptr<const Model> model, const SessionParams& params);
  ~Session();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;

  const Model& model() const;
  const std::shared_ptr<const Model>& model_ptr() const;
  const SessionParams& params() const;
  std::uint32_t n_ctx() const;
  // Cells one sequence can hold: n_ctx() in a unified cache; with KvStreams::PerSequence its
  // stream's share, n_ctx / n_seq rounded up to 256 (llama.cpp's padding).
  std::uint32_t n_ctx_seq() const;
  // Whether the K cache is stored Hadamard-rotated (quantized K with a head size that is a
  // multiple of 64). Vectors must be extracted and applied in the same domain.
  bool k_rotated() const;

  void clear();                    // empties every sequence
  void clear_sequence(SeqId seq);  // removes all cells of seq
  // Keeps the cells of seq at positions [0, n) and removes the rest, so that decoding continues
  // at position n (a prompt cache: a later prompt that starts with the same n tokens). Throws
  // Error(InvalidArgument) for a bad seq or a negative n.
  void keep_prefix(SeqId seq, Pos n);
  // Makes dst a copy of src: dst's old cells are removed, then src's cells are shared with dst
  // (metadata only, no data is copied; with KvStreams::PerSequence the cells are copied).
  void copy_sequence(SeqId src, SeqId dst);
  // Position the next token of seq gets: last position + 1, or 0 for an empty sequence.
  Pos next_pos(SeqId seq) const;

  // Appends tokens to their sequences in one or more llama_decode calls of at most n_batch
  // tokens. Throws Error(InvalidArgument) for a bad seq id, an empty token list or a token
  // outside the vocabulary, and Error(InvalidArgument) naming --ctx-size when the cache is full.
  void decode(std::span<const DecodeItem> items);
  void decode(SeqId seq, std::span<const Token> tokens, bool logits_last = true);
  // Logits of the last token decoded for seq with logits_last = true: [n_vocab].
  // Valid until the next decode of seq. Throws when there are none.
  std::span<const float> logits(SeqId seq) const;

  // K and V of the cell at pos in seq, for every layer, as floats.
  KvCell read_cell(SeqId seq, Pos pos);
  // Every cell of seq, ordered by position, from one read of the sequence's state.
  std::vector<KvCell> read_cells(SeqId seq);

  // Activation steering (CAA) through llama.cpp's control-vector API: from now on every decoded
  // token gets directions[l] added to the output of block l, for layer_first <= l <= layer_last.
  // directions is [n_layer][n_embd] (rows outside the range may be empty). Applies to all
  // sequences of the session. Layer 0 cannot be steered this way (llama.cpp keeps no control
  // tensor for it). Throws Error(InvalidArgument) for a bad range, sizes or non-finite values.
  void set_control_vector(const std::vector<std::vector<float>>& directions,
                          std::int32_t layer_first, std::int32_t layer_last);
  void clear_control_vector();
  // Block outputs of the last token of the last decode call: [n_layer][n_embd]. When that call
  // held several sequences, "last token" is the last token of the batch, so decode one sequence
  // at a time for extraction. Throws Error(InvalidArgument) unless capture_residual is set and a
  // decode happened.
  std::vector<std::vector<float>> last_residual() const;
  // The rows of a tensor named in SessionParams::capture_tensors ("l_out" with
  // capture_residual) for the last token of the last decode call: [n_layer][row]; a layer whose
  // tensor the graph did not hold is empty. Throws Error(InvalidArgument) for a name not captured
  // or before the first decode.
  std::vector<std::vector<float>> last_captured(std::string_view name) const;
  // The attention window of the last decode call. Throws Error(InvalidArgument) unless
  // capture_attention_window is set and a decode happened.
  AttentionWindow last_attention_window() const;
  // Adds delta to the cell at pos in seq, in one edit, leaving every other cell and layer
  // byte-identical. Throws Error(InvalidArgument) for a position seq does not hold, rows of the
  // wrong size or non-finite values, and for a result the cache type cannot hold (F16 beyond
  // 65504, a Q8_0/Q4_0 block whose scale overflows, ...; the message names the layer and the
  // largest value). A refused edit leaves the cache unchanged.
  void add_to_cell(SeqId seq, Pos pos, const CellDelta& delta);
  // The raw llama_state_seq blob of seq (for tests and inspection).
  std::vector<std::uint8_t> sequence_state(SeqId seq);

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvsteer
