// Contrastive extraction (paper §1.3): mean over pairs of (positive - negative) cached K and V
// at one position of each prompt, every layer.
#include <string>
#include <utility>
#include <vector>

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

std::vector<SteeringVector> extract_steering_vectors(Session& session,
                                                     std::span<const ContrastivePair> pairs,
                                                     std::span<const Pos> positions,
                                                     const ExtractionParams& params) {
  if (positions.empty()) {
    throw Error(ErrorCode::InvalidArgument, "no extraction positions");
  }
  if (pairs.empty()) {
    throw Error(ErrorCode::InvalidArgument, "no contrastive pairs to extract from");
  }
  struct Prompt {
    std::span<const Token> tokens;
    std::vector<Pos> pos;  // one cell per requested position
    double sign;
    std::size_t pair;
  };
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
  const auto& fp = session.model().fingerprint();
  const auto n_layer = static_cast<std::size_t>(fp.n_layer);
  // Per position: running sums per layer, and how many prompts contributed to each layer.
  struct Sums {
    std::vector<std::vector<double>> k, v;
    std::vector<std::size_t> count;
  };
  std::vector<Sums> sums(positions.size(), Sums{std::vector<std::vector<double>>(n_layer),
                                                std::vector<std::vector<double>>(n_layer),
                                                std::vector<std::size_t>(n_layer, 0)});

  // Prompts are decoded together while they fit: one sequence each, and all of them in the
  // cache's cells (the cache is unified, so n_ctx counts the cells of every sequence).
  const std::size_t width = session.params().n_seq;
  session.clear();
  for (std::size_t begin = 0, end = 0; begin < prompts.size(); begin = end) {
    std::size_t cells = 0;
    end = begin;
    while (end < prompts.size() && end - begin < width &&
           cells + prompts[end].tokens.size() <= session.n_ctx()) {
      cells += prompts[end].tokens.size();
      ++end;
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
        accumulate(sums[p], cell, prompts[i].sign);
      }
      session.clear_sequence(seq);
    }
    if (params.progress) {
      params.progress(end / 2, pairs.size());
    }
  }
  std::vector<SteeringVector> vectors;
  for (std::size_t p = 0; p < positions.size(); ++p) {
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
      if (sums[p].count[il] != prompts.size()) {
        continue;
      }
      const double n = static_cast<double>(pairs.size());
      for (double x : sums[p].k[il]) {
        out.k[il].push_back(static_cast<float>(x / n));
      }
      for (double x : sums[p].v[il]) {
        out.v[il].push_back(static_cast<float>(x / n));
      }
    }
  }
  return vectors;
}

std::vector<std::vector<float>> extract_residual_directions(
    Session& session, std::span<const ContrastivePair> pairs,
    const std::function<void(std::size_t, std::size_t)>& progress) {
  if (pairs.empty()) {
    throw Error(ErrorCode::InvalidArgument, "no contrastive pairs to extract from");
  }
  std::vector<std::vector<double>> sum;
  for (std::size_t p = 0; p < pairs.size(); ++p) {
    const ContrastivePair& pair = pairs[p];
    if (progress) {
      progress(p, pairs.size());
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
      sum.resize(rows.size());
      for (std::size_t l = 0; l < rows.size(); ++l) {
        sum[l].resize(rows[l].size(), 0.0);
        for (std::size_t j = 0; j < rows[l].size(); ++j) {
          sum[l][j] += sign * static_cast<double>(rows[l][j]);
        }
      }
    }
  }
  session.clear();
  if (progress) {
    progress(pairs.size(), pairs.size());
  }
  std::vector<std::vector<float>> mean(sum.size());
  for (std::size_t l = 0; l < sum.size(); ++l) {
    for (double x : sum[l]) {
      mean[l].push_back(static_cast<float>(x / static_cast<double>(pairs.size())));
    }
  }
  return mean;
}

}  // namespace kvsteer
