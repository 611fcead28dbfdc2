#include "eval/runner.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "base/fnv1a64.h"
#include "eval/append_file.h"
#include "eval/contrastive.h"
#include "eval/run_support.h"
#include "eval/scoring.h"
#include "eval/traces.h"
#include "kvsteer/diagnosis.h"
#include "kvsteer/error.h"
#include "kvsteer/file_io.h"
#include "kvsteer/session.h"
#include "kvsteer/vector_file.h"

namespace kvsteer::eval {
using nlohmann::ordered_json;
namespace fs = std::filesystem;

ordered_json run_eval(const std::shared_ptr<const Model>& model, const EvalOptions& o) {
  if (o.out_dir.empty()) {
    throw Error(ErrorCode::InvalidArgument, "--out is required");
  }
  check_run_options(o, *model);
  const auto start = std::chrono::steady_clock::now();
  Evaluator ev(model, o);
  // A vector file of another model is refused before anything is written.
  if (!o.vector_path.empty() && (o.method == Method::Cache || o.method == Method::CacheCot)) {
    const std::string m = load_steering_vector(o.vector_path).model.mismatch(model->fingerprint());
    if (!m.empty()) {
      throw Error(ErrorCode::Format,
                  "steering vector " + o.vector_path + " was made for another model: " + m);
    }
  }
  create_folder(o.out_dir, "output folder");
  const std::string config_path = o.out_dir + "/config.json";
  const std::string items_path = o.out_dir + "/items.jsonl";
  ordered_json config = config_json(o, *model);
  const std::string config_text = config.dump(2) + "\n";
  if (fs::exists(config_path)) {
    ordered_json recorded;
    try {
      recorded = ordered_json::parse(read_text_file(config_path, "run configuration"));
    } catch (const ordered_json::exception& e) {
      throw Error(ErrorCode::Format, config_path + ": not a run configuration: " + e.what());
    }
    const auto keys = config_differences(recorded, config);
    if (keys == std::vector<std::string>{"limit"} && recorded.at("limit").is_number_unsigned()) {
      // Only the number of items differs: a larger --limit extends the run.
      const auto recorded_limit = recorded.at("limit").get<std::size_t>();
      if (!limit_extends(recorded_limit, o.limit)) {
        const std::string held = recorded_limit == 0
                                     ? std::string("all items")
                                     : "the first " + std::to_string(recorded_limit) + " items";
        throw Error(ErrorCode::InvalidArgument,
                    "output folder " + o.out_dir + " holds the answers of " + held +
                        "; a resumed run may raise --limit (0: all items), not lower it; "
                        "choose another --out");
      }
      // The summary describes the smaller run: removed before the configuration names the larger
      // one, so that a run killed while it extends is never read as finished.
      fs::remove(o.out_dir + "/summary.json");
      write_file_atomic(config_path, config_text);
    } else if (!keys.empty()) {
      throw Error(ErrorCode::InvalidArgument,
                  "output folder " + o.out_dir + " holds a run with another configuration (" +
                      join_keys(keys) + " differ); choose another --out");
    } else if (std::any_of(config.items().begin(), config.items().end(), [&](const auto& kv) {
                 return !recorded.contains(kv.key()) && config_key_added_later(kv.key());
               })) {
      // Begun by an earlier kvsteer: what it did not record is recorded now, and checked on
      // every later resume.
      write_file_atomic(config_path, config_text);
    }
  } else {
    write_file_atomic(config_path, config_text);
  }
  std::map<std::size_t, ItemResult> done = load_done(items_path);
  const std::size_t done_before = done.size();

  // Vectors.
  std::optional<SteeringVector> vector;
  std::vector<std::vector<float>> caa;
  ordered_json vector_info = nullptr;
  const std::size_t total = ev.items().size();
  const bool pending = done.size() < total;
  const auto vector_start = std::chrono::steady_clock::now();
  if (pending && (o.method == Method::Cache || o.method == Method::CacheCot)) {
    ordered_json unused;
    vector = cache_vector(ev, o, unused);
  }
  if (pending && o.method == Method::Caa) {
    caa = extract_residual_vector(ev, ev.contrastive_pairs(false), o);
  }
  if (o.method == Method::Cache || o.method == Method::CacheCot || o.method == Method::Caa) {
    vector_info = vector_provenance(o);
  }
  const double vector_s = seconds_since(vector_start);

  Setting setting;
  if (vector) {
    setting.vector = &*vector;
    setting.params = o.steering;
  }
  setting.offset = o.steering.offset_token;
  if (o.method != Method::Cache && o.method != Method::CacheCot) {
    setting.offset.reset();
  }
  std::function<void(Session&)> before_tail;
  std::int32_t first = 0, last = 0;
  if (o.method == Method::Caa) {
    first = resolve_caa_layer(o.caa.layer_first, *model);
    last = o.caa.layer_last >= 0 ? o.caa.layer_last : first;
    const auto directions = scaled(caa, o.caa.coef);
    before_tail = [directions, first, last](Session& s) {
      s.set_control_vector(directions, first, last);
    };
  }

  Session session = ev.make_session(o.n_parallel);
  if (o.progress) {
    o.progress(done.size(), total);  // the start: resumed items are not new work
  }
  AppendFile items_out(items_path);
  const auto batches =
      pending_batches(total, o.n_parallel, [&done](std::size_t i) { return done.count(i) != 0; });
  for (const std::vector<std::size_t>& batch : batches) {
    auto results = ev.run_batch(session, batch, {setting}, before_tail);
    if (o.method == Method::Caa) {
      session.clear_control_vector();
    }
    std::string lines;
    for (const ItemResult& r : results[0]) {
      lines += journal_line(r.to_json());
    }
    items_out.append(lines);
    for (ItemResult& r : results[0]) {
      done[r.index] = as_journalled(r);
    }
    if (o.progress) {
      o.progress(done.size(), total);
    }
  }
  std::vector<ItemResult> all;
  all.reserve(done.size());
  for (auto& [i, r] : done) {
    all.push_back(std::move(r));
  }
  ordered_json summary = result_head("kvsteer-eval-summary", o);
  std::string label = method_name(o.method);
  if (o.method == Method::Cache || o.method == Method::CacheCot) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), " c_k=%g c_v=%g", double(o.steering.coef_k),
                  double(o.steering.coef_v));
    label += buf;
  } else if (o.method == Method::Caa) {
    label += " L" + std::to_string(first) + (last != first ? "-" + std::to_string(last) : "") +
             " c=" + nlohmann::json(o.caa.coef).dump();
  }
  summary["label"] = label;
  summary.update(summarize(all));
  summary["model"] = model_json(o, *model);
  summary["vector"] = vector_info;
  summary["config"] = config;
  stamp_result(summary, start);
  // This invocation's work only: a resumed run's earlier answers took time that was not measured
  // here.
  const double elapsed = summary.at("elapsed_s").get<double>();
  const std::size_t answered_here = all.size() - done_before;
  summary["items_per_s"] =
      elapsed > 0 ? std::round(100.0 * double(answered_here) / elapsed) / 100.0 : 0.0;
  const auto ms = [](double seconds) { return std::round(seconds * 1000) / 1000; };
  summary["timing"] = {{"answered_here", answered_here},
                       {"vector_s", ms(vector_s)},
                       {"answers_s", ms(ev.timing().answers_s)},
                       {"answer_extraction_s", ms(ev.timing().answer_extraction_s)}};
  write_file_atomic(o.out_dir + "/summary.json", summary.dump(2) + "\n");
  return summary;
}

}  // namespace kvsteer::eval
