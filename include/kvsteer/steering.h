// KV cache steering (Belitsky et al., 2025): extraction of steering vectors from contrastive
// prompt pairs, and the cell delta they add to a prompt's cache.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kvsteer/session.h"
#include "kvsteer/types.h"

namespace kvsteer {

// What a steering vector was extracted from; stored in vector files.
struct ExtractionInfo {
  Pos position = -1;          // cell read, counted from the prompt's end: -1 = last prompt token
  std::uint32_t n_pairs = 0;  // contrastive pairs averaged
  std::uint32_t n_shots = 0;  // in-context examples per prompt (0 when unknown)
  std::string traces_sha256;  // of the traces file the pairs came from ("" when none)
  std::string chat_template;  // template the prompts were rendered with
  std::string kv_type_k;      // cache type at extraction, e.g. "f16"
  bool k_rotated = false;     // K rows are in llama.cpp's Hadamard-rotated domain
  std::string source;         // free text: command line, task name
};

// Per-layer mean of (positive - negative) cached K and V. Move-only; clone() copies.
// Thread-compatible value: one vector may be read from several threads at once (generate() and
// steering_delta only read it, so Sessions on several threads may steer with the same vector),
// but not read while another thread changes it.
struct SteeringVector {
  ModelFingerprint model;
  ExtractionInfo info;
  std::vector<std::vector<float>> k;  // [n_layer][n_embd_k_gqa]; empty rows = not extracted
  std::vector<std::vector<float>> v;  // [n_layer][n_embd_v_gqa]

  SteeringVector() = default;
  SteeringVector(SteeringVector&&) = default;
  SteeringVector& operator=(SteeringVector&&) = default;
  SteeringVector clone() const { return SteeringVector(*this); }

 private:
  SteeringVector(const SteeringVector&) = default;
};

// A set of layers: either every layer >= min_layer, or exactly the listed ones.
struct LayerSelection {
  std::int32_t min_layer = 1;        // paper: layers >= 1 (layer 0 is never steered, §1.4)
  std::vector<std::int32_t> layers;  // when non-empty, exactly these layers
  bool contains(std::int32_t il) const;
  // Parses "1-" (>= 1), "all" (>= 0), "3,5,7", "2-6" (inclusive), or "none".
  static LayerSelection parse(const std::string& text);
  std::string to_string() const;
};

// How a vector is applied (paper §1.4 and method.md §2; defaults = the paper's GSM8K defaults).
struct SteeringParams {
  float coef_k = 0.0f;  // c_k
  float coef_v = 1.0f;  // c_v
  LayerSelection layers_k;
  LayerSelection layers_v;
  // Token decoded after the edit. Set: prefill the whole prompt, edit its last cell, decode this
  // token (the paper's "\n" offset). Unset: prefill all but the last prompt token, edit the cell
  // before it, decode the last prompt token.
  std::optional<Token> offset_token;
};

// Throws Error(InvalidArgument) when a layer selection lists a layer a model of n_layer layers
// does not have, or, with a non-zero coefficient, selects none of its layers ("9-" on a 5-layer
// model, "1-" on a 1-layer one): that edit would silently do nothing. "none" selects nothing on
// purpose. Checked before hours of extraction; steering_delta checks it against the vector.
void check_layers(const SteeringParams& params, std::int32_t n_layer);

// The delta c_k*S_k[l], c_v*S_v[l] over the selected layers. Throws Error(InvalidArgument) for
// non-finite coefficients, a layer selection check_layers refuses for the vector's n_layer, a
// selected row of the vector that holds a NaN or infinite value, or a product that overflows
// float; the message names the layer.
// Whether the edited cell fits the cache type is checked by Session::add_to_cell.
CellDelta steering_delta(const SteeringVector& vector, const SteeringParams& params);

// Throws Error(Format) naming the mismatch when vector cannot be applied in session (another
// model, or K extracted in another domain than the session's cache stores).
void check_applicable(const SteeringVector& vector, const Session& session);

struct ContrastivePair {
  std::vector<Token> positive;
  std::vector<Token> negative;
};

// Where an extraction stands after a whole number of pairs: the running sums it averages at the
// end. An extraction of hundreds of long prompts takes an hour on a small CPU; saved by the caller
// (ExtractionParams::on_checkpoint, save_extraction_checkpoint) and handed back
// (ExtractionParams::resume), it lets a stopped extraction go on from there.
struct ExtractionCheckpoint {
  // extraction_identity() of the extraction it belongs to.
  std::uint64_t identity = 0;
  std::size_t n_pairs = 0;     // pairs of the whole extraction
  std::size_t pairs_done = 0;  // the first pairs_done pairs are in the sums
  struct Sums {
    std::vector<std::vector<double>> k, v;  // [n_layer][row]: sum of +positive -negative cells
    std::vector<std::uint64_t> count;       // [n_layer]: prompts whose cell the layer holds
  };
  std::vector<Sums> sums;  // one per extraction position
};

struct ExtractionParams {
  Pos position = -1;  // cell to read, counted from the end of each prompt (-1 = last token)
  // Called after each decoded batch with (pairs done, pairs total); may be empty.
  std::function<void(std::size_t, std::size_t)> progress;
  // Called with every cell read, before it enters the mean: (pair index, true for the positive
  // prompt, index into the positions, the cell). Lets a caller measure more than the mean (row
  // norms, spread over pairs) from the same decode; may be empty. A resumed extraction shows
  // only the cells it decodes.
  std::function<void(std::size_t, bool, std::size_t, const KvCell&)> on_cell;
  // Called after every decoded batch that ends on a pair boundary, the last one included; may be
  // empty.
  std::function<void(const ExtractionCheckpoint&)> on_checkpoint;
  // A checkpoint of this same extraction to go on from: its pairs are not decoded again, and the
  // batches after it are the ones an uninterrupted extraction decodes, so in the same build on
  // the same machine the vectors equal an uninterrupted extraction's bit for bit.
  const ExtractionCheckpoint* resume = nullptr;
};

// FNV-1a of which pairs these are (their count, then each pair's token count and ids), continued
// from h: the part of an extraction's identity, or of a cache key, that names its pairs.
std::uint64_t pair_tokens_hash(std::span<const ContrastivePair> pairs, std::uint64_t h);

// A 64-bit identity of an extraction: the model (fingerprint, description, size), every pair's
// tokens, the positions, and the session's batch shape and cache types (prompts decoded together
// round differently). A checkpoint is only ever resumed by the extraction it was made by.
std::uint64_t extraction_identity(const Session& session, std::span<const ContrastivePair> pairs,
                                  std::span<const Pos> positions);

// Decodes every prompt (as many at a time as the session has sequences), reads the cell at
// `position` of each, and averages positive - negative per layer in double precision.
// The session's sequences are cleared. Throws Error(InvalidArgument) for no pairs, an empty
// prompt, a position outside a prompt, or a params.resume that belongs to another extraction or
// does not hold sums of this model's shape.
SteeringVector extract_steering_vector(Session& session, std::span<const ContrastivePair> pairs,
                                       const ExtractionParams& params = {});
// The same for several cells of each prompt from one decode of every prompt: one vector per
// entry of positions (each counted as ExtractionParams::position; params.position is ignored).
// The result for position p equals extract_steering_vector with position p.
std::vector<SteeringVector> extract_steering_vectors(Session& session,
                                                     std::span<const ContrastivePair> pairs,
                                                     std::span<const Pos> positions,
                                                     const ExtractionParams& params = {});

// Where a residual extraction (extract_residual_directions) stands after a whole number of pairs:
// 200 long pairs decoded one prompt at a time take 20+ minutes on 2 cores.
struct ResidualCheckpoint {
  std::uint64_t identity = 0;  // residual_extraction_identity() of its extraction
  std::size_t n_pairs = 0;
  std::size_t pairs_done = 0;            // the first pairs_done pairs are in sum
  std::vector<std::vector<double>> sum;  // [n_layer][n_embd]: sum of +positive -negative rows
};

struct ResidualExtractionParams {
  // Called before each pair and at the end with (pairs done, pairs total); may be empty.
  std::function<void(std::size_t, std::size_t)> progress;
  // Called after every pair, the last one included; may be empty.
  std::function<void(const ResidualCheckpoint&)> on_checkpoint;
  // A checkpoint of this same extraction to go on from: its pairs are not decoded again, and the
  // result equals an uninterrupted extraction's bit for bit (every prompt is decoded alone).
  const ResidualCheckpoint* resume = nullptr;
};

// The identity of a residual extraction: the model, the session's cache layout and every pair's
// tokens. Never equal to an extraction_identity() of the same pairs.
std::uint64_t residual_extraction_identity(const Session& session,
                                           std::span<const ContrastivePair> pairs);

// Activation steering's direction (CAA): per layer, the mean over pairs of the block output
// (positive - negative) at each prompt's last token, [n_layer][n_embd], for
// Session::set_control_vector. The session needs capture_residual; prompts are decoded one at a
// time (the residual is read from the last token of a decode call) and its sequences are cleared.
// Throws Error(InvalidArgument) for no pairs, an empty prompt, or a params.resume that belongs to
// another extraction or does not hold sums of this model's shape.
std::vector<std::vector<float>> extract_residual_directions(
    Session& session, std::span<const ContrastivePair> pairs,
    const ResidualExtractionParams& params = {});

}  // namespace kvsteer
