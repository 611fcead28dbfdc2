// run_sweep: a grid of steering settings over one task, resumable through its item journal.
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

#include "eval/append_file.h"
#include "eval/run_support.h"
#include "kvsteer/file_io.h"

namespace kvsteer::eval {

using nlohmann::ordered_json;
namespace fs = std::filesystem;

namespace {

// The per-item journal of a sweep, beside its JSON (`<out>.items.jsonl`): a sweep on a real model
// runs for hours, so every finished batch is appended and the same command resumes where it was
// killed. The first line names the configuration and the grid; a journal of another sweep is
// refused rather than mixed in. Item lines are eval's item records with the setting's index.
class SweepJournal {
 public:
  SweepJournal(std::string path, const ordered_json& config, const ordered_json& grid)
      : path_(std::move(path)), done_(grid.size()) {
    if (path_.empty()) {
      return;
    }
    const ordered_json header{
        {"kind", "kvsteer-sweep-items"}, {"version", 1}, {"config", config}, {"grid", grid}};
    if (!fs::exists(path_)) {
      write_file_atomic(path_, header.dump(-1) + "\n");
    } else {
      load(header);
    }
    out_.emplace(path_);
  }

  bool has(std::size_t setting, std::size_t item) const { return done_[setting].count(item) != 0; }

  bool has_all(std::size_t item) const {
    for (const auto& d : done_) {
      if (!d.count(item)) {
        return false;
      }
    }
    return true;
  }

  void add(std::size_t setting, std::vector<ItemResult> results) {
    std::vector<std::vector<ItemResult>> by_setting(done_.size());
    by_setting[setting] = std::move(results);
    add_all(std::move(by_setting));
  }

  // One batch of every setting in one append: a kill between settings would otherwise leave the
  // batch done for some settings only, and the resumed run would decode it again and journal
  // those settings' items twice.
  void add_all(std::vector<std::vector<ItemResult>> by_setting) {
    std::string lines;
    for (std::size_t s = 0; s < by_setting.size(); ++s) {
      for (const ItemResult& r : by_setting[s]) {
        ordered_json j{{"setting", s}};
        j.update(r.to_json());
        lines += journal_line(j);
      }
    }
    // Journal first, then memory: what the summary counts is what a resumed run would read.
    if (out_) {
      out_->append(lines);
    }
    for (std::size_t s = 0; s < by_setting.size(); ++s) {
      for (const ItemResult& r : by_setting[s]) {
        done_[s][r.index] = as_journalled(r);
      }
    }
  }

  std::vector<ItemResult> results(std::size_t setting) const {
    std::vector<ItemResult> all;
    for (const auto& [i, r] : done_[setting]) {
      all.push_back(r);
    }
    return all;
  }

 private:
  void load(const ordered_json& header) {
    const std::string text = read_text_file(path_, "sweep journal");
    const std::size_t first = text.find('\n');
    ordered_json recorded;
    if (first != std::string::npos) {
      try {
        recorded = ordered_json::parse(text.substr(0, first));
      } catch (const ordered_json::exception&) {
        recorded = nullptr;
      }
    }
    if (!recorded.is_object() || recorded.value("kind", "") != header.at("kind") ||
        recorded.value("version", 0) != header.at("version")) {
      throw Error(ErrorCode::Format, path_ + " is not a kvsteer sweep journal");
    }
    std::vector<std::string> keys;
    if (recorded.contains("config") && recorded.at("config").is_object()) {
      keys = config_differences(recorded.at("config"), header.at("config"));
    } else {
      keys.push_back("config");
    }
    if (recorded.value("grid", ordered_json()) != header.at("grid")) {
      keys.push_back("grid");
    }
    if (!keys.empty()) {
      throw Error(ErrorCode::InvalidArgument,
                  path_ + " holds a sweep with another configuration (" + join_keys(keys) +
                      " differ); remove it or choose another -o");
    }
    std::size_t good_end = first + 1, start = first + 1, line_no = 1;
    while (start < text.size()) {
      const std::size_t nl = text.find('\n', start);
      if (nl == std::string::npos) {
        break;  // torn line: a kill mid-write
      }
      ++line_no;
      try {
        const ordered_json j = ordered_json::parse(text.substr(start, nl - start));
        const auto setting = j.at("setting").get<std::size_t>();
        if (setting >= done_.size()) {
          throw std::runtime_error("setting index out of range");
        }
        ItemResult r = ItemResult::from_json(j);
        done_[setting][r.index] = std::move(r);
      } catch (const std::exception& e) {
        throw Error(ErrorCode::Format,
                    path_ + ": line " + std::to_string(line_no) + ": " + e.what());
      }
      good_end = start = nl + 1;
    }
    if (good_end != text.size()) {
      fs::resize_file(path_, good_end);
    }
  }

  std::string path_;
  std::vector<std::map<std::size_t, ItemResult>> done_;
  std::optional<AppendFile> out_;
};

ordered_json setting_summary(ordered_json setting, const std::vector<ItemResult>& results) {
  auto sum = summarize(results);
  sum.erase("lengths");
  setting.update(sum);
  return setting;
}

}  // namespace

ordered_json run_sweep(const std::shared_ptr<const Model>& model, const SweepOptions& so) {
  const EvalOptions& o = so.base;
  if (o.method != Method::Cache && o.method != Method::CacheCot && o.method != Method::Caa) {
    throw Error(ErrorCode::InvalidArgument, "kvsteer sweep runs --method cache, cache+cot or caa");
  }
  if (o.method == Method::Caa && (so.caa_layers.empty() || so.caa_coefs.empty())) {
    throw Error(ErrorCode::InvalidArgument, "a CAA sweep needs --caa-layers and --caa-coefs");
  }
  Evaluator ev(model, o);
  const std::size_t total = ev.items().size();
  // The grid in the order of the output's settings.
  ordered_json grid = ordered_json::array();
  if (o.method == Method::Caa) {
    for (std::int32_t layer : so.caa_layers) {
      for (float c : so.caa_coefs) {
        grid.push_back({{"layer", layer}, {"c", c}});
      }
    }
  } else {
    for (const std::string& layers : so.layers) {
      for (float ck : so.coef_k) {
        for (float cv : so.coef_v) {
          grid.push_back({{"c_k", ck}, {"c_v", cv}, {"layers", layers}});
        }
      }
    }
  }
  if (grid.empty()) {
    // Cache sweeps share each question's batch among the settings: none would divide by zero.
    throw Error(ErrorCode::InvalidArgument,
                "the sweep grid is empty: give at least one value of every grid flag");
  }
  if (!so.out.empty()) {
    require_creatable_file(so.out, "sweep output");
  }
  // Every setting is checked before the journal is opened or a vector extracted: what they
  // share (traces, vector, counts) once, then what each grid point changes.
  // The grid replaces the base's layers and coefficients: only its own are checked.
  EvalOptions shared = o;
  shared.steering.coef_k = shared.steering.coef_v = 0.0f;
  shared.steering.layers_k = shared.steering.layers_v = LayerSelection();
  shared.caa.layer_first = 1;
  shared.caa.layer_last = -1;
  check_run_options(shared, *model);
  for (const auto& g : grid) {
    if (o.method == Method::Caa) {
      CaaParams caa = o.caa;
      caa.layer_first = g.at("layer").get<std::int32_t>();
      caa.layer_last = -1;
      check_caa_blocks(caa, *model);
    } else {
      SteeringParams params = o.steering;
      params.coef_k = g.at("c_k").get<float>();
      params.coef_v = g.at("c_v").get<float>();
      params.layers_k = LayerSelection::parse(g.at("layers").get<std::string>());
      params.layers_v = params.layers_k;
      check_layers(params, model->fingerprint().n_layer);
    }
  }
  const ordered_json config = config_json(o, *model);
  if (!so.out.empty()) {
    if (const auto parent = fs::path(so.out).parent_path(); !parent.empty()) {
      create_folder(parent.string(), "sweep output's folder");
    }
  }
  SweepJournal journal(so.out.empty() ? "" : so.out + ".items.jsonl", config, grid);
  const auto start = std::chrono::steady_clock::now();
  if (o.method == Method::Caa) {
    // Progress counts (setting, item) answers, journalled ones first: a setting takes tens of
    // minutes, and answers resumed from the journal must not count towards the rate.
    const std::size_t n_answers = grid.size() * total;
    std::size_t n_done = 0;
    for (std::size_t s = 0; s < grid.size(); ++s) {
      for (std::size_t i = 0; i < total; ++i) {
        n_done += journal.has(s, i) ? 1 : 0;
      }
    }
    std::vector<std::vector<float>> caa;
    if (n_done < n_answers) {
      caa = extract_residual_vector(ev, ev.contrastive_pairs(false), o);
    }
    std::optional<Session> session;
    if (o.progress) {
      o.progress(n_done, n_answers);
    }
    for (std::size_t s = 0; s < grid.size(); ++s) {
      const auto layer = grid[s].at("layer").get<std::int32_t>();
      const auto directions = scaled(caa, grid[s].at("c").get<float>());
      auto before_tail = [&directions, layer](Session& sess) {
        sess.set_control_vector(directions, layer, layer);
      };
      const auto batches = pending_batches(
          total, o.n_parallel, [&journal, s](std::size_t i) { return journal.has(s, i); });
      for (const std::vector<std::size_t>& batch : batches) {
        if (!session) {
          session.emplace(ev.make_session(o.n_parallel));
        }
        auto r = ev.run_batch(*session, batch, {Setting{}}, before_tail);
        session->clear_control_vector();
        journal.add(s, std::move(r[0]));
        n_done += batch.size();
        if (o.progress) {
          o.progress(n_done, n_answers);
        }
      }
    }
  } else {
    ordered_json vector_info;
    std::optional<SteeringVector> vector;
    std::vector<Setting> settings;
    // Each question's copies share one prefill; n_parallel bounds the sequences in flight.
    const std::size_t per_batch = std::max<std::size_t>(1, o.n_parallel / grid.size());
    std::optional<Session> session;
    std::size_t n_done = 0;
    for (std::size_t i = 0; i < total; ++i) {
      n_done += journal.has_all(i) ? 1 : 0;
    }
    if (o.progress) {
      o.progress(n_done, total);
    }
    const auto batches =
        pending_batches(total, per_batch, [&journal](std::size_t i) { return journal.has_all(i); });
    for (const std::vector<std::size_t>& batch : batches) {
      if (!vector) {
        vector = cache_vector(ev, o, vector_info);
        for (const auto& g : grid) {
          Setting st;
          st.vector = &*vector;
          st.params.coef_k = g.at("c_k").get<float>();
          st.params.coef_v = g.at("c_v").get<float>();
          st.params.layers_k = LayerSelection::parse(g.at("layers").get<std::string>());
          st.params.layers_v = st.params.layers_k;
          st.offset = o.steering.offset_token;
          settings.push_back(st);
        }
        session.emplace(ev.make_session(static_cast<std::uint32_t>(per_batch * grid.size())));
      }
      journal.add_all(ev.run_batch(*session, batch, settings, nullptr));
      n_done += batch.size();
      if (o.progress) {
        o.progress(n_done, total);
      }
    }
  }
  ordered_json settings_json = ordered_json::array();
  for (std::size_t s = 0; s < grid.size(); ++s) {
    settings_json.push_back(setting_summary(grid[s], journal.results(s)));
  }
  ordered_json out = result_head("kvsteer-sweep", o);
  out["n_items"] = total;
  out["settings"] = settings_json;
  out["config"] = config;
  stamp_result(out, start);
  if (!so.out.empty()) {
    write_json_file(so.out, out);
  }
  return out;
}

}  // namespace kvsteer::eval
