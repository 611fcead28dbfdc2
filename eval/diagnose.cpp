// run_diagnosis: why a cache edit acts, or does not, on a task's prompts.
#include "eval/runner.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "eval/run_support.h"
#include "kvsteer/file_io.h"

namespace kvsteer::eval {

using nlohmann::ordered_json;

namespace {

// Means over prompts of the per-prompt figures of one steering setting.
class DiagnosisTally {
 public:
  DiagnosisTally(std::size_t n_layer, std::size_t n_head)
      : n_layer_(n_layer), n_head_(n_head), k_ratio_(n_layer), v_ratio_(n_layer) {
    for (auto* grid : {&tail_plain_, &tail_steered_, &follow_plain_, &follow_steered_, &tail_share_,
                       &follow_share_}) {
      grid->assign(n_layer, std::vector<Mean>(n_head));
    }
  }

  void add(const PromptDiagnosis& d) {
    ++n_;
    kl_.add(d.kl_first);
    diverged_ += d.first_divergence >= 0 ? 1 : 0;
    if (d.first_divergence >= 0) {
      divergence_step_.add(d.first_divergence);
    }
    recompute_error_ = std::max(recompute_error_, d.recompute_error);
    uniform_.add(1.0 / double(d.steered_pos + 2));  // the tail token sees steered_pos + 2 cells
    for (std::size_t l = 0; l < n_layer_; ++l) {
      k_ratio_[l].add(d.k_edit_ratio[l]);
      v_ratio_[l].add(d.v_edit_ratio[l]);
    }
    add_steps(d.attention_plain, tail_plain_, follow_plain_);
    add_steps(d.attention_steered, tail_steered_, follow_steered_);
    add_steps(d.v_contribution, tail_share_, follow_share_);
  }

  ordered_json effect() const {
    return {{"n_prompts", n_},
            {"kl_first", round6(kl_.value())},
            {"diverged_share", n_ == 0 ? 0.0 : round6(double(diverged_) / double(n_))},
            {"mean_divergence_step", round6(divergence_step_.value())}};
  }

  ordered_json layers() const {
    ordered_json out = ordered_json::array();
    for (std::size_t l = 0; l < n_layer_; ++l) {
      ordered_json heads = ordered_json::array();
      for (std::size_t h = 0; h < n_head_; ++h) {
        heads.push_back({{"head", h},
                         {"tail_plain", round6(tail_plain_[l][h].value())},
                         {"tail_steered", round6(tail_steered_[l][h].value())},
                         {"following_plain", round6(follow_plain_[l][h].value())},
                         {"following_steered", round6(follow_steered_[l][h].value())},
                         {"v_share_tail", round6(tail_share_[l][h].value())},
                         {"v_share_following", round6(follow_share_[l][h].value())}});
      }
      out.push_back({{"layer", l},
                     {"k_edit_ratio", round6(k_ratio_[l].value())},
                     {"v_edit_ratio", round6(v_ratio_[l].value())},
                     {"tail_plain", round6(head_mean(tail_plain_[l]))},
                     {"tail_steered", round6(head_mean(tail_steered_[l]))},
                     {"following_plain", round6(head_mean(follow_plain_[l]))},
                     {"following_steered", round6(head_mean(follow_steered_[l]))},
                     {"v_share_tail", round6(head_mean(tail_share_[l]))},
                     {"v_share_following", round6(head_mean(follow_share_[l]))},
                     {"heads", heads}});
    }
    return out;
  }

  double recompute_error() const { return recompute_error_; }
  double uniform() const { return uniform_.value(); }

 private:
  struct Mean {
    double sum = 0.0;
    std::size_t n = 0;
    void add(double x) {
      sum += x;
      ++n;
    }
    double value() const { return n == 0 ? 0.0 : sum / double(n); }
  };
  using Grid = std::vector<std::vector<Mean>>;  // [layer][head]

  static double round6(double x) { return std::round(x * 1e6) / 1e6; }
  static double head_mean(const std::vector<Mean>& heads) {
    double sum = 0.0;
    for (const Mean& m : heads) {
      sum += m.value();
    }
    return heads.empty() ? 0.0 : sum / double(heads.size());
  }
  // Step 0 (the tail token) and the mean over the following steps of one prompt.
  void add_steps(const std::vector<std::vector<std::vector<double>>>& steps, Grid& tail,
                 Grid& following) const {
    for (std::size_t l = 0; l < n_layer_ && !steps.empty(); ++l) {
      for (std::size_t h = 0; h < n_head_; ++h) {
        tail[l][h].add(steps[0][l][h]);
        if (steps.size() < 2) {
          continue;
        }
        double sum = 0.0;
        for (std::size_t t = 1; t < steps.size(); ++t) {
          sum += steps[t][l][h];
        }
        following[l][h].add(sum / double(steps.size() - 1));
      }
    }
  }

  std::size_t n_layer_, n_head_, n_ = 0, diverged_ = 0;
  Mean kl_, divergence_step_, uniform_;
  double recompute_error_ = 0.0;
  std::vector<Mean> k_ratio_, v_ratio_;
  Grid tail_plain_, tail_steered_, follow_plain_, follow_steered_, tail_share_, follow_share_;
};

}  // namespace

ordered_json run_diagnosis(const std::shared_ptr<const Model>& model, const DiagnoseOptions& d) {
  const EvalOptions& o = d.base;
  if (o.method != Method::Cache && o.method != Method::CacheCot) {
    throw Error(ErrorCode::InvalidArgument, "kvsteer diagnose runs --method cache or cache+cot");
  }
  if (d.n_follow < 1) {
    throw Error(ErrorCode::InvalidArgument, "--follow must be >= 1");
  }
  check_run_options(o, *model);
  if (!d.out.empty()) {
    require_creatable_file(d.out, "diagnosis output");
  }
  for (float scale : d.scales) {
    if (!std::isfinite(scale)) {
      throw Error(ErrorCode::InvalidArgument, "--scales holds a non-finite value");
    }
  }
  const auto start = std::chrono::steady_clock::now();
  Evaluator ev(model, o);
  ordered_json vector_info;
  const SteeringVector vector = cache_vector(ev, o, vector_info);
  const ModelFingerprint& fp = model->fingerprint();
  std::size_t longest = 0;
  for (std::size_t i = 0; i < ev.items().size(); ++i) {
    longest = std::max(longest, ev.prompt_tokens(i).size());
  }
  // Two sequences (plain and steered) of the longest prompt and the followed tokens each, with
  // the engine's cache types and attention in one unified stream: the diagnosis reads attention
  // windows by physical cell, which is what a unified cache gives.
  SessionParams sp = ev.session_params(
      2, static_cast<std::uint32_t>(longest + static_cast<std::size_t>(d.n_follow) + 8));
  sp.capture_tensors = diagnosis_capture_tensors();
  sp.kv_streams = KvStreams::Unified;
  sp.edit_route = SessionParams{}.edit_route;
  Session session(model, sp);

  // Settings: the given one, its scaled copies, and each selected layer alone.
  struct Named {
    std::string kind;
    double value;
    SteeringParams params;
  };
  std::vector<Named> settings{{"base", 1.0, o.steering}};
  for (float scale : d.scales) {
    SteeringParams p = o.steering;
    p.coef_k *= scale;
    p.coef_v *= scale;
    settings.push_back({"scale", scale, p});
  }
  if (d.per_layer) {
    for (std::int32_t l = 0; l < fp.n_layer; ++l) {
      const bool k = o.steering.layers_k.contains(l) && o.steering.coef_k != 0.0f;
      const bool v = o.steering.layers_v.contains(l) && o.steering.coef_v != 0.0f;
      if (!k && !v) {
        continue;
      }
      SteeringParams p = o.steering;
      p.layers_k = p.layers_v = LayerSelection::parse(std::to_string(l));
      if (!k) {
        p.coef_k = 0.0f;
      }
      if (!v) {
        p.coef_v = 0.0f;
      }
      settings.push_back({"layer", double(l), p});
    }
  }
  const std::size_t total = ev.items().size();
  if (o.progress) {
    o.progress(0, ev.items().size());
  }
  std::vector<DiagnosisTally> tallies(
      settings.size(),
      DiagnosisTally(static_cast<std::size_t>(fp.n_layer), static_cast<std::size_t>(fp.n_head)));
  for (std::size_t i = 0; i < total; ++i) {
    for (std::size_t s = 0; s < settings.size(); ++s) {
      DiagnosisParams dp;
      dp.steering = settings[s].params;
      dp.n_follow = d.n_follow;
      tallies[s].add(diagnose_prompt(session, ev.prompt_tokens(i), vector, dp));
    }
    if (o.progress) {
      o.progress(i + 1, total);
    }
  }
  double recompute_error = 0.0;
  for (const auto& t : tallies) {
    recompute_error = std::max(recompute_error, t.recompute_error());
  }
  ordered_json scales = ordered_json::array(), per_layer = ordered_json::array();
  for (std::size_t s = 1; s < settings.size(); ++s) {
    ordered_json j = settings[s].kind == "scale" ? ordered_json{{"scale", settings[s].value},
                                                                {"c_k", settings[s].params.coef_k},
                                                                {"c_v", settings[s].params.coef_v}}
                                                 : ordered_json{{"layer", int(settings[s].value)}};
    j.update(tallies[s].effect());
    if (settings[s].kind == "scale") {
      // The attention the edited cell draws, and the V share, averaged over layers and heads.
      double attn = 0.0, share = 0.0;
      const ordered_json layers = tallies[s].layers();
      for (const auto& l : layers) {
        attn += l.at("tail_steered").get<double>();
        share += l.at("v_share_tail").get<double>();
      }
      j["tail_steered_attention"] = attn / double(layers.size());
      j["v_share_tail"] = share / double(layers.size());
      scales.push_back(j);
    } else {
      per_layer.push_back(j);
    }
  }
  ordered_json out = result_head("kvsteer-diagnosis", o);
  out.update(ordered_json{{"n_prompts", total},
                          {"n_follow", d.n_follow},
                          {"steering", steering_json(o.steering)},
                          {"vector", vector_info},
                          {"model", model_json(o, *model)},
                          {"attention_recompute_error", recompute_error},
                          {"uniform_attention_tail", tallies[0].uniform()},
                          {"effect", tallies[0].effect()},
                          {"layers", tallies[0].layers()},
                          {"scales", scales},
                          {"per_layer", per_layer}});
  stamp_result(out, start);
  if (!d.out.empty()) {
    write_json_file(d.out, out);
  }
  return out;
}

}  // namespace kvsteer::eval
