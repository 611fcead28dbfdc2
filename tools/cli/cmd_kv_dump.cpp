// kvsteer kv-dump: the K and V rows of one cell, every layer, as JSON; optionally the logits of
// the offset token decoded after the (optional) steering edit.
#include <bit>
#include <cstdio>
#include <cstring>

#include "common.h"
#include "kvsteer/file_io.h"

namespace kvsteer::cli {
namespace {

struct KvDumpOptions {
  ModelOptions model;
  PromptOptions prompt;
  SteerOptions steer;
  std::int32_t pos = -1;
  std::int32_t steer_pos = -1;
  std::string logits_out;
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

// The token --logits-out decodes after the prompt: the steering flags' offset token, which the
// paper's protocol decodes right after the edit (method.md §1.4 step 2). Checked before any
// decoding, so a bad command line costs no prefill.
Token offset_for_logits(const Model& model, const SteerOptions& steer) {
  const std::optional<Token> offset = steer.params(model).offset_token;
  if (!offset) {
    throw Error(ErrorCode::InvalidArgument,
                "--logits-out needs an offset token to decode after the prompt; got --offset "
                "'none'. Pass --offset TEXT or --offset-id ID (the paper decodes \"\\n\" by id)");
  }
  return *offset;
}

// Decodes token after the prompt (and the edit, if any) and writes its next-token logits to path
// as raw little-endian float32, n_vocab values, atomically, so a reference implementation can
// check that the edited cell reaches the model's output.
void write_offset_logits(Session& session, Token token, const std::string& path) {
  static_assert(std::endian::native == std::endian::little, "--logits-out writes host floats");
  session.decode(0, std::span<const Token>(&token, 1), true);
  const std::span<const float> logits = session.logits(0);
  std::string bytes(logits.size_bytes(), '\0');
  std::memcpy(bytes.data(), logits.data(), bytes.size());
  write_file_atomic(path, bytes);
}

void run(const KvDumpOptions& o) {
  auto model = o.model.load();
  const auto prompt = o.prompt.tokens(*model);
  const Pos pos = resolve(o.pos, prompt.size(), "--pos");
  auto vector = o.steer.load_vector();
  std::optional<Token> offset;
  if (!o.logits_out.empty()) {
    offset = offset_for_logits(*model, o.steer);
  }
  auto sparams = o.model.session_params(*model);
  // --logits-out decodes one more token (the offset) after the prompt.
  const std::size_t n_needed = prompt.size() + (offset ? 1 : 0);
  if (n_needed > sparams.n_ctx) {
    throw Error(ErrorCode::InvalidArgument, "prompt has " + std::to_string(prompt.size()) +
                                                " tokens" + (offset ? " plus the offset" : "") +
                                                ", more than --ctx-size " +
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
  out["cache_type_k"] = o.model.session.type_k;
  out["cache_type_v"] = o.model.session.type_v;
  out["k_rotated"] = session.k_rotated();
  nlohmann::json layers = nlohmann::json::array();
  for (std::size_t il = 0; il < cell.k.size(); ++il) {
    layers.push_back({{"il", il}, {"k", cell.k[il]}, {"v", cell.v[il]}});
  }
  out["layers"] = layers;
  if (offset) {
    write_offset_logits(session, *offset, o.logits_out);
  }
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
  sub->add_option("--logits-out", opts->logits_out,
                  "after the edit, decode the offset token (--offset/--offset-id) and write its "
                  "next-token logits to this file: n_vocab little-endian float32");
  sub->add_flag("--json", opts->json, "JSON output (the only format)");
  sub->callback([opts] { run(*opts); });
}

}  // namespace kvsteer::cli
