// kvsteer info: describe a model or a steering vector file.
#include <cstdio>

#include "common.h"

namespace kvsteer::cli {
namespace {

struct InfoOptions {
  std::string model;
  std::string vector;
  bool engine = false;
};

void run(const InfoOptions& o) {
  if (o.model.empty() && o.vector.empty() && !o.engine) {
    throw Error(ErrorCode::InvalidArgument, "info needs --model, --vector and/or --engine");
  }
  nlohmann::json out;
  if (o.engine) {
    out["engine"] = {{"cpu_features", Backend::cpu_features()}};
  }
  std::shared_ptr<const Model> model;
  if (!o.model.empty()) {
    model = load_model(o.model);
    const auto& swa = model->swa_layers();
    out["model"] = {{"path", o.model},
                    {"description", model->description()},
                    {"n_params", model->n_params()},
                    {"size_bytes", model->size_bytes()},
                    {"n_ctx_train", model->n_ctx_train()},
                    {"chat_template", model->chat_template()},
                    {"swa_layers", std::vector<bool>(swa.begin(), swa.end())},
                    {"fingerprint", fingerprint_json(model->fingerprint())}};
  }
  if (!o.vector.empty()) {
    const auto vec = load_steering_vector(o.vector);
    nlohmann::json norms = nlohmann::json::array();
    for (std::size_t il = 0; il < vec.k.size(); ++il) {
      auto norm = [](const std::vector<float>& r) {
        double s = 0;
        for (float x : r) {
          s += static_cast<double>(x) * x;
        }
        return std::sqrt(s);
      };
      norms.push_back({{"il", il}, {"k_norm", norm(vec.k[il])}, {"v_norm", norm(vec.v[il])}});
    }
    out["vector"] = {{"path", o.vector},
                     {"format_version", kVectorFormatVersion},
                     {"model", fingerprint_json(vec.model)},
                     {"position", vec.info.position},
                     {"n_pairs", vec.info.n_pairs},
                     {"n_shots", vec.info.n_shots},
                     {"traces_sha256", vec.info.traces_sha256},
                     {"kv_type_k", vec.info.kv_type_k},
                     {"k_rotated", vec.info.k_rotated},
                     {"source", vec.info.source},
                     {"layers", norms}};
    if (model) {
      const std::string m = vec.model.mismatch(model->fingerprint());
      out["compatible"] = m.empty();
      if (!m.empty()) {
        out["mismatch"] = m;
      }
    }
  }
  std::printf("%s\n", out.dump(2).c_str());
}

}  // namespace

void add_info(CLI::App& app) {
  auto opts = std::make_shared<InfoOptions>();
  auto* sub = app.add_subcommand("info", "describe a model and/or a steering vector file (JSON)");
  sub->add_option("-m,--model", opts->model, "GGUF model file");
  sub->add_option("--vector", opts->vector, "steering vector file");
  sub->add_flag("--engine", opts->engine,
                "the instruction sets libllama was built with (greedy answers depend on them)");
  sub->callback([opts] { run(*opts); });
}

}  // namespace kvsteer::cli
