// Contrastive extraction (paper §1.3): mean over pairs of (positive - negative) cached K and V
// at one position of each prompt, every layer.
#include <algorithm>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "base/fnv1a64.h"
#include "kvsteer/error.h"
#include "kvsteer/steering.h"

namespace kvsteer {
namespace {

Pos resolve_position(Pos position, std::size_t n_tokens, std::size_t pair, const char* which) {
  const auto n = static_cast<Pos>(n_tokens);
  const Pos pos = position < 0 ? n + position : position;
  if (pos < 0 || pos >= n) {
    throw Error(ErrorCode::InvalidArgument, "extraction position " + std::to_string(position) +
                                                " is outside the " + which + " prompt of pair " +
                                                std::to_string(pair) + " (" + std::to_string(n) +
                                                " tokens)");
  }
  return pos;
}

// Adds sign * the cell's rows to the running sums of every layer that holds the cell.
template <typename Sums>
void accumulate(Sums& sums, const KvCell& cell, double sign) {
  for (std::size_t il = 0; il < cell.k.size(); ++il) {
    if (cell.k[il].empty()) {
      continue;  // sliding-window layer that lost the cell
    }
    if (sums.k[il].empty()) {
      sums.k[il].assign(cell.k[il].size(), 0.0);
      sums.v[il].assign(cell.v[il].size(), 0.0);
    }
    for (std::size_t j = 0; j < cell.k[il].size(); ++j) {
      sums.k[il][j] += sign * cell.k[il][j];
    }
    for (std::size_t j = 0; j < cell.v[il].size(); ++j) {
      sums.v[il][j] += sign * cell.v[il][j];
    }
    ++sums.count[il];
  }
}

}  // namespace

SteeringVector extract_steering_vector(Session& session, std::span<const ContrastivePair> pairs,
                                       const ExtractionParams& params) {
  const Pos position = params.position;
  return std::move(extract_steering_vectors(session, pairs, {&position, 1}, params).front());
}

namespace {

struct Prompt {
  std::span<const Token> tokens;
  std::vector<Pos> pos;  // one cell per requested position
  double sign;
  std::size_t pair;
};

// Every pair's two prompts, positive first, with the cells to read; validated.
std::vector<Prompt> prompts_of(const Session& session, std::span<const ContrastivePair> pairs,
                               std::span<const Pos> positions) {
  if (positions.empty()) {
    throw Error(ErrorCode::InvalidArgument, "no extraction positions");
  }
  if (pairs.empty()) {
    throw Error(ErrorCode::InvalidArgument, "no contrastive pairs to extract from");
  }
  std::vector<Prompt> prompts;
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    for (const auto& [tokens, sign, which] :
         {std::tuple{std::span<const Token>(pairs[i].positive), 1.0, "positive"},
          std::tuple{std::span<const Token>(pairs[i].negative), -1.0, "negative"}}) {
      if (tokens.empty()) {
        throw Error(ErrorCode::InvalidArgument, std::string("the ") + which + " prompt of pair " +
                                                    std::to_string(i) + " is empty");
      }
      if (tokens.size() > session.n_ctx()) {
        throw Error(ErrorCode::InvalidArgument,
                    std::string("the ") + which + " prompt of pair " + std::to_string(i) + " has " +
                        std::to_string(tokens.size()) + " tokens, more than the context (" +
                        std::to_string(session.n_ctx()) + "); raise --ctx-size");
      }
      std::vector<Pos> cells;
      for (Pos p : positions) {
        cells.push_back(resolve_position(p, tokens.size(), i, which));
      }
      prompts.push_back({tokens, std::move(cells), sign, i});
    }
  }
  return prompts;
}

// The batches, as [begin, end) prompt ranges: prompts are decoded together while they fit, one
// sequence each, all of them in the cache's cells (the cache is unified, so n_ctx counts the
// cells of every sequence). Fixed by the prompts and the session alone, so that a resumed
// extraction decodes the batches an uninterrupted one does.
std::vector<std::pair<std::size_t, std::size_t>> batches_of(const Session& session,
                                                            const std::vector<Prompt>& prompts) {
  const std::size_t width = session.params().n_seq;
  std::vector<std::pair<std::size_t, std::size_t>> batches;
  for (std::size_t begin = 0, end = 0; begin < prompts.size(); begin = end) {
    std::size_t cells = 0;
    end = begin;
    while (end < prompts.size() && end - begin < width &&
           cells + prompts[end].tokens.size() <= session.n_ctx()) {
      cells += prompts[end].tokens.size();
      ++end;
    }
    batches.emplace_back(begin, end);
  }
  return batches;
}

void mix(std::uint64_t& h, std::uint64_t x) { h = base::fnv1a64(&x, sizeof x, h); }

void mix(std::uint64_t& h, const std::string& text) {
  mix(h, text.size());
  h = base::fnv1a64(text, h);
}

// Checks that a checkpoint can continue this extraction; the message says what differs.
void check_resumable(const ExtractionCheckpoint& cp, std::uint64_t identity, std::size_t n_pairs,
                     std::size_t n_positions, const ModelFingerprint& fp,
                     const std::vector<std::pair<std::size_t, std::size_t>>& batches) {
  const auto refuse = [](const std::string& why) {
    throw Error(ErrorCode::InvalidArgument, "cannot resume the extraction: " + why);
  };
  if (cp.identity != identity) {
    refuse(
        "the checkpoint belongs to another extraction (the model, the pairs, the positions or "
        "the batch shape differ)");
  }
  if (cp.n_pairs != n_pairs || cp.pairs_done > n_pairs) {
    refuse("the checkpoint holds " + std::to_string(cp.pairs_done) + " of " +
           std::to_string(cp.n_pairs) + " pairs; this extraction has " + std::to_string(n_pairs));
  }
  const bool at_boundary =
      cp.pairs_done == 0 || std::any_of(batches.begin(), batches.end(), [&](const auto& b) {
        return b.second == 2 * cp.pairs_done;
      });
  if (!at_boundary) {
    refuse("pair " + std::to_string(cp.pairs_done) +
           " is not where a batch of this extraction "
           "ends");
  }
  if (cp.sums.size() != n_positions) {
    refuse("the checkpoint has sums for " + std::to_string(cp.sums.size()) + " positions, not " +
           std::to_string(n_positions));
  }
  const auto n_layer = static_cast<std::size_t>(fp.n_layer);
  for (const auto& s : cp.sums) {
    if (s.k.size() != n_layer || s.v.size() != n_layer || s.count.size() != n_layer) {
      refuse("the checkpoint's sums are not of " + std::to_string(n_layer) + " layers");
    }
    for (std::size_t il = 0; il < n_layer; ++il) {
      const bool empty = s.k[il].empty() && s.v[il].empty() && s.count[il] == 0;
      const bool full = s.k[il].size() == static_cast<std::size_t>(fp.n_embd_k_gqa) &&
                        s.v[il].size() == static_cast<std::size_t>(fp.n_embd_v_gqa) &&
                        s.count[il] <= 2 * cp.pairs_done;
      if (!empty && !full) {
        refuse("layer " + std::to_string(il) + " of the checkpoint's sums has the wrong shape");
      }
    }
  }
}

}  // namespace

std::uint64_t pair_tokens_hash(std::span<const ContrastivePair> pairs, std::uint64_t h) {
  mix(h, pairs.size());
  for (const ContrastivePair& pair : pairs) {
    for (const auto* tokens : {&pair.positive, &pair.negative}) {
      mix(h, tokens->size());
      h = base::fnv1a64(tokens->data(), tokens->size() * sizeof(Token), h);
    }
  }
  return h;
}

namespace {

// The model and how the session holds the cache, continued from h: the part of an extraction's
// identity that says where its numbers come from.
std::uint64_t session_identity(const Session& session, std::uint64_t h) {
  const auto& fp = session.model().fingerprint();
  mix(h, fp.arch);
  for (std::int32_t x : {fp.n_layer, fp.n_head, fp.n_head_kv, fp.n_embd, fp.n_embd_head_k,
                         fp.n_embd_head_v, fp.n_embd_k_gqa, fp.n_embd_v_gqa, fp.n_vocab}) {
    mix(h, static_cast<std::uint64_t>(static_cast<std::uint32_t>(x)));
  }
  mix(h, fp.rope_type);
  mix(h, fp.vocab_hash);
  mix(h, session.model().description());
  mix(h, session.model().size_bytes());
  mix(h, session.model().n_params());
  const SessionParams& sp = session.params();
  for (std::uint64_t x :
       {std::uint64_t{sp.n_ctx}, std::uint64_t{sp.n_batch}, std::uint64_t{sp.n_seq},
        static_cast<std::uint64_t>(sp.type_k), static_cast<std::uint64_t>(sp.type_v),
        static_cast<std::uint64_t>(sp.flash_attn), static_cast<std::uint64_t>(sp.kv_streams),
        std::uint64_t{session.k_rotated()}}) {
    mix(h, x);
  }
  return h;
}

}  // namespace

std::uint64_t extraction_identity(const Session& session, std::span<const ContrastivePair> pairs,
                                  std::span<const Pos> positions) {
  std::uint64_t h = session_identity(session, base::kFnv1a64Basis);
  mix(h, positions.size());
  for (Pos p : positions) {
    mix(h, static_cast<std::uint64_t>(static_cast<std::int64_t>(p)));
  }
  return pair_tokens_hash(pairs, h);
}

std::vector<SteeringVector> extract_steering_vectors(Session& session,
                                                     std::span<const ContrastivePair> pairs,
                                                     std::span<const Pos> positions,
                                                     const ExtractionParams& params) {
  const std::vector<Prompt> prompts = prompts_of(session, pairs, positions);
  const auto batches = batches_of(session, prompts);
  const auto& fp = session.model().fingerprint();
  const auto n_layer = static_cast<std::size_t>(fp.n_layer);
  ExtractionCheckpoint state;
  state.identity = extraction_identity(session, pairs, positions);
  state.n_pairs = pairs.size();
  if (params.resume != nullptr) {
    check_resumable(*params.resume, state.identity, pairs.size(), positions.size(), fp, batches);
    state = *params.resume;
  } else {
    state.sums.assign(positions.size(),
                      ExtractionCheckpoint::Sums{std::vector<std::vector<double>>(n_layer),
                                                 std::vector<std::vector<double>>(n_layer),
                                                 std::vector<std::uint64_t>(n_layer, 0)});
  }

  session.clear();
  for (const auto& [begin, end] : batches) {
    if (end <= 2 * state.pairs_done) {
      continue;  // in the checkpoint's sums
    }
    std::vector<DecodeItem> items;
    for (std::size_t i = begin; i < end; ++i) {
      items.push_back({static_cast<SeqId>(i - begin), prompts[i].tokens, false});
    }
    session.decode(items);
    for (std::size_t i = begin; i < end; ++i) {
      const auto seq = static_cast<SeqId>(i - begin);
      for (std::size_t p = 0; p < positions.size(); ++p) {
        const KvCell cell = session.read_cell(seq, prompts[i].pos[p]);
        if (params.on_cell) {
          params.on_cell(prompts[i].pair, prompts[i].sign > 0, p, cell);
        }
        accumulate(state.sums[p], cell, prompts[i].sign);
      }
      session.clear_sequence(seq);
    }
    if (end % 2 == 0) {
      state.pairs_done = end / 2;
      if (params.on_checkpoint) {
        params.on_checkpoint(state);
      }
    }
    if (params.progress) {
      params.progress(end / 2, pairs.size());
    }
  }
  std::vector<SteeringVector> vectors;
  for (std::size_t p = 0; p < positions.size(); ++p) {
    const ExtractionCheckpoint::Sums& sums = state.sums[p];
    SteeringVector& out = vectors.emplace_back();
    out.model = fp;
    out.info.position = positions[p];
    out.info.n_pairs = static_cast<std::uint32_t>(pairs.size());
    out.info.kv_type_k = kv_type_name(session.params().type_k);
    out.info.k_rotated = session.k_rotated();
    out.k.resize(n_layer);
    out.v.resize(n_layer);
    for (std::size_t il = 0; il < n_layer; ++il) {
      // Both prompts of every pair must contribute, or the layer's mean is not a difference.
      if (sums.count[il] != prompts.size()) {
        continue;
      }
      const double n = static_cast<double>(pairs.size());
      for (double x : sums.k[il]) {
        out.k[il].push_back(static_cast<float>(x / n));
      }
      for (double x : sums.v[il]) {
        out.v[il].push_back(static_cast<float>(x / n));
      }
    }
  }
  return vectors;
}

std::uint64_t residual_extraction_identity(const Session& session,
                                           std::span<const ContrastivePair> pairs) {
  std::uint64_t h = base::kFnv1a64Basis;
  mix(h, std::string("residual: block output at the last prompt token"));
  return pair_tokens_hash(pairs, session_identity(session, h));
}

std::vector<std::vector<float>> extract_residual_directions(
    Session& session, std::span<const ContrastivePair> pairs,
    const ResidualExtractionParams& params) {
  if (pairs.empty()) {
    throw Error(ErrorCode::InvalidArgument, "no contrastive pairs to extract from");
  }
  const auto& fp = session.model().fingerprint();
  ResidualCheckpoint state;
  state.identity = residual_extraction_identity(session, pairs);
  state.n_pairs = pairs.size();
  if (params.resume != nullptr) {
    const ResidualCheckpoint& cp = *params.resume;
    const auto refuse = [](const std::string& why) {
      throw Error(ErrorCode::InvalidArgument, "cannot resume the residual extraction: " + why);
    };
    if (cp.identity != state.identity) {
      refuse(
          "the checkpoint belongs to another extraction (the model, the pairs or the cache "
          "layout differ)");
    }
    if (cp.n_pairs != pairs.size() || cp.pairs_done > pairs.size()) {
      refuse("the checkpoint holds " + std::to_string(cp.pairs_done) + " of " +
             std::to_string(cp.n_pairs) + " pairs; this extraction has " +
             std::to_string(pairs.size()));
    }
    const bool fits = cp.pairs_done == 0
                          ? cp.sum.empty()
                          : cp.sum.size() == static_cast<std::size_t>(fp.n_layer) &&
                                std::all_of(cp.sum.begin(), cp.sum.end(), [&](const auto& row) {
                                  return row.size() == static_cast<std::size_t>(fp.n_embd);
                                });
    if (!fits) {
      refuse("the checkpoint's sums are not of " + std::to_string(fp.n_layer) + " layers of " +
             std::to_string(fp.n_embd));
    }
    state = cp;
  }
  for (std::size_t p = state.pairs_done; p < pairs.size(); ++p) {
    const ContrastivePair& pair = pairs[p];
    if (params.progress) {
      params.progress(p, pairs.size());
    }
    for (int sign : {1, -1}) {
      const std::vector<Token>& tokens = sign > 0 ? pair.positive : pair.negative;
      if (tokens.empty()) {
        throw Error(ErrorCode::InvalidArgument,
                    std::string("the ") + (sign > 0 ? "positive" : "negative") +
                        " prompt of pair " + std::to_string(p) + " is empty");
      }
      session.clear();
      session.decode(0, tokens, true);
      const auto rows = session.last_residual();
      state.sum.resize(rows.size());
      for (std::size_t l = 0; l < rows.size(); ++l) {
        state.sum[l].resize(rows[l].size(), 0.0);
        for (std::size_t j = 0; j < rows[l].size(); ++j) {
          state.sum[l][j] += sign * static_cast<double>(rows[l][j]);
        }
      }
    }
    state.pairs_done = p + 1;
    if (params.on_checkpoint) {
      params.on_checkpoint(state);
    }
  }
  session.clear();
  if (params.progress) {
    params.progress(pairs.size(), pairs.size());
  }
  std::vector<std::vector<float>> mean(state.sum.size());
  for (std::size_t l = 0; l < state.sum.size(); ++l) {
    for (double x : state.sum[l]) {
      mean[l].push_back(static_cast<float>(x / static_cast<double>(pairs.size())));
    }
  }
  return mean;
}

}  // namespace kvsteer
