// Contrastive extraction (paper §1.3): mean over pairs of (positive - negative) cached K and V
// at one position of each prompt, every layer.
#include <string>

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

}  // namespace

SteeringVector extract_steering_vector(Session& session, std::span<const ContrastivePair> pairs,
                                       const ExtractionParams& params) {
  if (pairs.empty()) {
    throw Error(ErrorCode::InvalidArgument, "no contrastive pairs to extract from");
  }
  struct Prompt {
    std::span<const Token> tokens;
    Pos pos;
    double sign;
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
      prompts.push_back({tokens, resolve_position(params.position, tokens.size(), i, which), sign});
    }
  }
  const auto& fp = session.model().fingerprint();
  const auto n_layer = static_cast<std::size_t>(fp.n_layer);
  std::vector<std::vector<double>> sum_k(n_layer), sum_v(n_layer);
  std::vector<std::size_t> count(n_layer, 0);

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
      const KvCell cell = session.read_cell(seq, prompts[i].pos);
      for (std::size_t il = 0; il < n_layer; ++il) {
        if (cell.k[il].empty()) {
          continue;  // sliding-window layer that lost the cell
        }
        if (sum_k[il].empty()) {
          sum_k[il].assign(cell.k[il].size(), 0.0);
          sum_v[il].assign(cell.v[il].size(), 0.0);
        }
        for (std::size_t j = 0; j < cell.k[il].size(); ++j) {
          sum_k[il][j] += prompts[i].sign * cell.k[il][j];
        }
        for (std::size_t j = 0; j < cell.v[il].size(); ++j) {
          sum_v[il][j] += prompts[i].sign * cell.v[il][j];
        }
        ++count[il];
      }
      session.clear_sequence(seq);
    }
    if (params.progress) {
      params.progress(end / 2, pairs.size());
    }
  }
  SteeringVector out;
  out.model = fp;
  out.info.position = params.position;
  out.info.n_pairs = static_cast<std::uint32_t>(pairs.size());
  out.info.kv_type_k = kv_type_name(session.params().type_k);
  out.info.k_rotated = session.k_rotated();
  out.k.resize(n_layer);
  out.v.resize(n_layer);
  for (std::size_t il = 0; il < n_layer; ++il) {
    // Both prompts of every pair must contribute, or the layer's mean is not a difference.
    if (count[il] != prompts.size()) {
      continue;
    }
    const double n = static_cast<double>(pairs.size());
    for (double x : sum_k[il]) {
      out.k[il].push_back(static_cast<float>(x / n));
    }
    for (double x : sum_v[il]) {
      out.v[il].push_back(static_cast<float>(x / n));
    }
  }
  return out;
}

}  // namespace kvsteer
