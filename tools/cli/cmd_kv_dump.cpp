// kvsteer kv-dump: the K and V rows of one cell, every layer, as JSON.
#include <cstdio>

#include "common.h"

namespace kvsteer::cli {
namespace {

struct KvDumpOptions {
  ModelOptions model;
  PromptOptions prompt;
  SteerOptions steer;
  std::int32_t pos = -1;
  std::int32_t steer_pos = -1;
  bool json = true;
};

Pos resolve(std::int32_t pos, std::size_t n, const char* flag) {
  const auto len = static_cast<std::int32_t>(n);
  const std::int32_t p = pos < 0 ? len + pos : pos;
  if (p < 0 || p >= len) {
    throw Error(ErrorCode::InvalidArgument, std::string(flag) + " " + std::to_string(pos) +
                                                " is outside the prompt (" + std::to_string(len) +
                                                " tokens)");
  }
  return p;
}

void run(const KvDumpOptions& o) {
  auto model = o.model.load();
  const auto prompt = o.prompt.tokens(*model);
  const Pos pos = resolve(o.pos, prompt.size(), "--pos");
  auto vector = o.steer.load_vector();
  auto sparams = o.model.session_params(*model);
  if (prompt.size() > sparams.n_ctx) {
    throw Error(ErrorCode::InvalidArgument, "prompt has " + std::to_string(prompt.size()) +
                                                " tokens, more than --ctx-size " +
                                                std::to_string(sparams.n_ctx));
  }
  Session session(model, sparams);
  session.decode(0, prompt, false);
  nlohmann::json out;
  if (vector) {
    check_applicable(*vector, session);
    const Pos at = resolve(o.steer_pos, prompt.size(), "--steer-pos");
    session.add_to_cell(0, at, steering_delta(*vector, o.steer.params(*model)));
    out["steered_pos"] = at;
  }
  const KvCell cell = session.read_cell(0, pos);
  const auto& fp = model->fingerprint();
  out["prompt_tokens"] = prompt;
  out["pos"] = pos;
  out["token"] = prompt[static_cast<std::size_t>(pos)];
  out["model"] = fingerprint_json(fp);
  out["cache_type_k"] = o.model.cache_type_k;
  out["cache_type_v"] = o.model.cache_type_v;
  out["k_rotated"] = session.k_rotated();
  nlohmann::json layers = nlohmann::json::array();
  for (std::size_t il = 0; il < cell.k.size(); ++il) {
    layers.push_back({{"il", il}, {"k", cell.k[il]}, {"v", cell.v[il]}});
  }
  out["layers"] = layers;
  std::printf("%s\n", out.dump().c_str());
}

}  // namespace

void add_kv_dump(CLI::App& app) {
  auto opts = std::make_shared<KvDumpOptions>();
  auto* sub = app.add_subcommand("kv-dump", "print one cache cell's K and V rows as JSON");
  opts->model.add_to(*sub);
  opts->prompt.add_to(*sub);
  opts->steer.add_to(*sub);
  sub->add_option("--pos", opts->pos, "position to dump (negative: from the end; default -1)");
  sub->add_option("--steer-pos", opts->steer_pos,
                  "position the steering file is added to before dumping (default -1)");
  sub->add_flag("--json", opts->json, "JSON output (the only format)");
  sub->callback([opts] { run(*opts); });
}

}  // namespace kvsteer::cli
