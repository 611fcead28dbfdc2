#include "kvsteer/diagnosis.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "kvsteer/error.h"
#include "steer/protocol.h"

namespace kvsteer {
namespace {

constexpr const char* kQuery = "Qcur";       // post-RoPE queries (the last "Qcur" node)
constexpr const char* kAttnOut = "kqv_out";  // attention output before the output projection

// How llama.cpp turns the captured "Qcur" and the cached K into attention weights, per
// architecture (pinned llama.cpp, src/models/*.cpp): logits = scale * q.k, then
// softcap * tanh(logits / softcap) where the model caps them. Anything this misses shows up in
// PromptDiagnosis::recompute_error, which compares against llama.cpp's own attention output.
struct AttentionRecipe {
  double scale = 1.0;
  double softcap = 0.0;    // 0: none
  std::vector<bool> swa;   // [n_layer]: sliding-window layers
  std::int32_t n_swa = 0;  // their window: key p0 is hidden from query p1 when p1 - p0 >= n_swa
};

AttentionRecipe attention_recipe(const Model& model) {
  const ModelFingerprint& fp = model.fingerprint();
  AttentionRecipe r;
  r.scale = 1.0 / std::sqrt(double(fp.n_embd_head_k));
  r.swa = model.swa_layers();
  if (const auto window = model.try_meta(fp.arch + ".attention.sliding_window")) {
    r.n_swa = std::stoi(*window);
  }
  if (fp.arch == "phi3") {
    r.scale = 1.0;  // phi3.cpp scales Q and names the result "Qcur" again
  } else if (fp.arch == "gemma2") {
    // gemma2.cpp scales Q after the named node and always caps the logits (default 50).
    if (fp.n_layer == 46) {  // 27B: llama.cpp divides the integers n_embd / n_head
      const std::int32_t head_width = fp.n_embd / fp.n_head;
      r.scale = 1.0 / std::sqrt(static_cast<double>(head_width));
    }
    r.softcap = 50.0;
    if (const auto cap = model.try_meta("gemma2.attn_logit_softcapping")) {
      r.softcap = std::stod(*cap);
    }
  } else if (fp.arch == "llama") {
    if (const auto scale = model.try_meta("llama.attention.scale")) {
      if (std::stod(*scale) != 0.0) {
        r.scale = std::stod(*scale);
      }
    }
  }
  return r;
}

double norm(std::span<const float> x) {
  double sum = 0.0;
  for (const float v : x) {
    sum += double(v) * double(v);
  }
  return std::sqrt(sum);
}

// Mean row norm of one layer's K (or V) over the cells that hold it.
double mean_row_norm(const std::vector<KvCell>& cells, std::size_t il, bool keys) {
  double sum = 0.0;
  std::size_t n = 0;
  for (const KvCell& c : cells) {
    const auto& row = keys ? c.k[il] : c.v[il];
    if (row.empty()) {
      continue;
    }
    sum += norm(row);
    ++n;
  }
  return n == 0 ? 0.0 : sum / double(n);
}

std::vector<double> softmax(std::span<const float> logits) {
  const float top = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0.0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    sum += p[i] = std::exp(double(logits[i] - top));
  }
  for (double& x : p) {
    x /= sum;
  }
  return p;
}

Token argmax(std::span<const float> logits) {
  return static_cast<Token>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// Attention of the last decoded token of one run, recomputed per layer and query head over the
// run's cells (causal: every cell of the sequence, the token's own included).
struct StepAttention {
  std::vector<std::vector<double>> on_steered;      // [layer][head]
  std::vector<std::vector<double>> v_contribution;  // [layer][head], with a V edit
  double recompute_error = 0.0;
};

StepAttention attend(const ModelFingerprint& fp, const AttentionRecipe& recipe,
                     const std::vector<KvCell>& cells, std::size_t steered,
                     const std::vector<std::vector<float>>& queries,
                     const std::vector<std::vector<float>>& outputs,
                     const std::vector<std::vector<float>>* v_delta) {
  const auto n_layer = static_cast<std::size_t>(fp.n_layer);
  const auto n_head = static_cast<std::size_t>(fp.n_head);
  const auto group = static_cast<std::size_t>(fp.n_head / fp.n_head_kv);
  const auto dk = static_cast<std::size_t>(fp.n_embd_head_k);
  const auto dv = static_cast<std::size_t>(fp.n_embd_head_v);
  StepAttention out;
  out.on_steered.assign(n_layer, std::vector<double>(n_head, 0.0));
  out.v_contribution.assign(n_layer, std::vector<double>(n_head, 0.0));
  std::vector<double> logits(cells.size());
  std::vector<double> head_out(dv);
  for (std::size_t il = 0; il < n_layer; ++il) {
    const auto& q = queries[il];
    const auto& o = outputs[il];
    if (q.size() != n_head * dk || o.size() != n_head * dv) {
      throw Error(ErrorCode::Unsupported,
                  "layer " + std::to_string(il) +
                      " of this model has no query/attention output "
                      "of the expected shape (architecture " +
                      fp.arch + "; query " + std::to_string(q.size()) +
                      " values, attention output " + std::to_string(o.size()) + ", expected " +
                      std::to_string(n_head * dk) + " and " + std::to_string(n_head * dv) + ")");
    }
    for (std::size_t h = 0; h < n_head; ++h) {
      const std::size_t g = h / group;
      double top = -INFINITY;
      const bool windowed = il < recipe.swa.size() && recipe.swa[il] && recipe.n_swa > 0;
      const Pos query_pos = cells.back().pos;
      for (std::size_t j = 0; j < cells.size(); ++j) {
        const auto& k = cells[j].k[il];
        if (k.empty() || (windowed && query_pos - cells[j].pos >= recipe.n_swa)) {
          logits[j] = -INFINITY;
          continue;
        }
        double dot = 0.0;
        for (std::size_t d = 0; d < dk; ++d) {
          dot += double(q[h * dk + d]) * double(k[g * dk + d]);
        }
        logits[j] = dot * recipe.scale;
        if (recipe.softcap > 0.0) {
          logits[j] = recipe.softcap * std::tanh(logits[j] / recipe.softcap);
        }
        top = std::max(top, logits[j]);
      }
      double sum = 0.0;
      for (double& x : logits) {
        sum += x = std::isinf(x) ? 0.0 : std::exp(x - top);
      }
      std::fill(head_out.begin(), head_out.end(), 0.0);
      for (std::size_t j = 0; j < cells.size(); ++j) {
        const double a = logits[j] / sum;
        if (a == 0.0) {
          continue;
        }
        const auto& v = cells[j].v[il];
        for (std::size_t d = 0; d < dv; ++d) {
          head_out[d] += a * double(v[g * dv + d]);
        }
      }
      const double a_steered = logits[steered] / sum;
      out.on_steered[il][h] = a_steered;
      double diff = 0.0, ref = 0.0, mine = 0.0;
      for (std::size_t d = 0; d < dv; ++d) {
        const double theirs = o[h * dv + d];
        diff += (head_out[d] - theirs) * (head_out[d] - theirs);
        ref += theirs * theirs;
        mine += head_out[d] * head_out[d];
      }
      out.recompute_error = std::max(out.recompute_error, std::sqrt(diff / std::max(ref, 1e-30)));
      if (v_delta != nullptr && !(*v_delta)[il].empty() && mine > 0.0) {
        double part = 0.0;
        for (std::size_t d = 0; d < dv; ++d) {
          const double x = a_steered * double((*v_delta)[il][g * dv + d]);
          part += x * x;
        }
        out.v_contribution[il][h] = std::sqrt(part / mine);
      }
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> diagnosis_capture_tensors() { return {kQuery, kAttnOut}; }

PromptDiagnosis diagnose_prompt(Session& session, std::span<const Token> prompt,
                                const SteeringVector& vector, const DiagnosisParams& params) {
  const ModelFingerprint& fp = session.model().fingerprint();
  const SessionParams& sp = session.params();
  if (sp.n_seq < 2) {
    throw Error(ErrorCode::InvalidArgument, "a diagnosis session needs n_seq >= 2");
  }
  for (const std::string& name : diagnosis_capture_tensors()) {
    if (std::find(sp.capture_tensors.begin(), sp.capture_tensors.end(), name) ==
        sp.capture_tensors.end()) {
      throw Error(ErrorCode::InvalidArgument,
                  "a diagnosis session must capture " + name + " (diagnosis_capture_tensors())");
    }
  }
  if (session.k_rotated()) {
    throw Error(ErrorCode::InvalidArgument,
                "attention cannot be recomputed from a Hadamard-rotated (quantized) K cache; use "
                "an f16 or f32 K cache");
  }
  if (params.n_follow < 1) {
    throw Error(ErrorCode::InvalidArgument, "n_follow must be >= 1");
  }
  check_applicable(vector, session);
  const auto [prefill, tail] = detail::split_prompt(prompt, params.steering.offset_token, true);

  PromptDiagnosis out;
  out.n_prompt = static_cast<std::int32_t>(prompt.size());
  out.steered_pos = static_cast<Pos>(prefill.size() - 1);
  session.clear();
  session.decode(0, prefill, false);
  session.copy_sequence(0, 1);
  const std::vector<KvCell> plain_cells = session.read_cells(0);
  const CellDelta delta = steering_delta(vector, params.steering);
  session.add_to_cell(1, out.steered_pos, delta);
  std::vector<KvCell> steered_cells = plain_cells;
  const auto steered = static_cast<std::size_t>(out.steered_pos);
  steered_cells[steered] = session.read_cell(1, out.steered_pos);

  const auto n_layer = static_cast<std::size_t>(fp.n_layer);
  out.k_edit_ratio.assign(n_layer, 0.0);
  out.v_edit_ratio.assign(n_layer, 0.0);
  std::vector<std::vector<float>> v_delta(n_layer);  // as stored: the cache's rounding included
  for (std::size_t il = 0; il < n_layer; ++il) {
    const double k_norm = mean_row_norm(plain_cells, il, true);
    const double v_norm = mean_row_norm(plain_cells, il, false);
    if (il < delta.k.size() && k_norm > 0.0) {
      out.k_edit_ratio[il] = norm(delta.k[il]) / k_norm;
    }
    if (il < delta.v.size() && v_norm > 0.0) {
      out.v_edit_ratio[il] = norm(delta.v[il]) / v_norm;
    }
    const auto& before = plain_cells[steered].v[il];
    const auto& after = steered_cells[steered].v[il];
    if (!before.empty()) {
      v_delta[il].resize(before.size());
      for (std::size_t d = 0; d < before.size(); ++d) {
        v_delta[il][d] = after[d] - before[d];
      }
    }
  }

  const AttentionRecipe recipe = attention_recipe(session.model());
  std::vector<double> first_plain;
  for (const SeqId seq : {SeqId{0}, SeqId{1}}) {
    const bool is_steered = seq == 1;
    std::vector<KvCell> cells = is_steered ? steered_cells : plain_cells;
    auto& attention = is_steered ? out.attention_steered : out.attention_plain;
    auto& tokens = is_steered ? out.tokens_steered : out.tokens_plain;
    Token token = tail;
    for (std::int32_t step = 0; step < params.n_follow; ++step) {
      const Pos pos = session.next_pos(seq);
      session.decode(seq, std::span<const Token>(&token, 1), true);
      cells.push_back(session.read_cell(seq, pos));
      const StepAttention a =
          attend(fp, recipe, cells, steered, session.last_captured(kQuery),
                 session.last_captured(kAttnOut), is_steered ? &v_delta : nullptr);
      attention.push_back(a.on_steered);
      if (is_steered) {
        out.v_contribution.push_back(a.v_contribution);
      }
      out.recompute_error = std::max(out.recompute_error, a.recompute_error);
      const std::span<const float> logits = session.logits(seq);
      if (step == 0) {
        const std::vector<double> p = softmax(logits);
        if (!is_steered) {
          first_plain = p;
        } else {
          double kl = 0.0;
          for (std::size_t i = 0; i < p.size(); ++i) {
            if (p[i] > 0.0) {
              kl += p[i] * std::log(p[i] / std::max(first_plain[i], 1e-300));
            }
          }
          out.kl_first = kl;
        }
      }
      token = argmax(logits);
      tokens.push_back(token);
      if (session.model().is_eog(token)) {
        break;
      }
    }
  }
  const std::size_t common = std::min(out.tokens_plain.size(), out.tokens_steered.size());
  for (std::size_t i = 0; i < common; ++i) {
    if (out.tokens_plain[i] != out.tokens_steered[i]) {
      out.first_divergence = static_cast<std::int32_t>(i);
      break;
    }
  }
  if (out.first_divergence < 0 && out.tokens_plain.size() != out.tokens_steered.size()) {
    out.first_divergence = static_cast<std::int32_t>(common);
  }
  return out;
}

}  // namespace kvsteer
