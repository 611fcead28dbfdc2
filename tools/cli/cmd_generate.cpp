// kvsteer generate: prompt in, text out, optionally steered once through the KV cache.
#include <cstdio>

#include "common.h"

namespace kvsteer::cli {
namespace {

struct GenerateOptions {
  ModelOptions model;
  PromptOptions prompt;
  SteerOptions steer;
  std::int32_t n_predict = 256;
  float temperature = 0.0f;
  std::int32_t top_k = 0;
  float top_p = 1.0f;
  std::uint32_t seed = 1234;
  std::vector<std::string> stop;
  bool json = false;
};

void run(const GenerateOptions& o) {
  auto model = o.model.load();
  const auto prompt = o.prompt.tokens(*model);
  auto vector = o.steer.load_vector();
  Session session(model, o.model.session_params(*model));
  GenerationParams gen;
  gen.n_predict = o.n_predict;
  gen.stop_strings = o.stop;
  gen.sampling = {o.temperature, o.top_k, o.top_p, 0.0f, o.seed};
  GenerationRequest request{0, prompt, vector ? &*vector : nullptr, o.steer.params(*model)};
  const Generation g = generate(session, request, gen);
  if (!o.json) {
    std::fwrite(g.text.data(), 1, g.text.size(), stdout);
    std::fputc('\n', stdout);
    return;
  }
  nlohmann::json out = {{"text", g.text},
                        {"tokens", g.tokens},
                        {"n_prompt", g.n_prompt},
                        {"n_generated", g.tokens.size()},
                        {"stop_reason", stop_reason_name(g.stop_reason)},
                        {"steered", vector.has_value()},
                        {"prompt_tokens", prompt}};
  if (vector) {
    out["coef_k"] = request.steering_params.coef_k;
    out["coef_v"] = request.steering_params.coef_v;
    out["layers_k"] = request.steering_params.layers_k.to_string();
    out["layers_v"] = request.steering_params.layers_v.to_string();
  }
  if (request.steering_params.offset_token) {
    out["offset_token"] = *request.steering_params.offset_token;
  }
  std::printf("%s\n", out.dump().c_str());
}

}  // namespace

void add_generate(CLI::App& app) {
  auto opts = std::make_shared<GenerateOptions>();
  auto* sub = app.add_subcommand("generate", "generate text, optionally with a steering vector");
  opts->model.add_to(*sub);
  opts->prompt.add_to(*sub);
  opts->steer.add_to(*sub);
  sub->add_option("-n,--n-predict", opts->n_predict, "new tokens at most")
      ->check(CLI::Range(1, 1 << 20));
  sub->add_option("--temp", opts->temperature, "temperature (0 = greedy)")
      ->check(CLI::Range(0.0, 100.0));
  sub->add_option("--top-k", opts->top_k, "top-k (0 = off)")->check(CLI::Range(0, 1 << 20));
  sub->add_option("--top-p", opts->top_p, "top-p (1 = off)")->check(CLI::Range(0.0, 1.0));
  sub->add_option("-s,--seed", opts->seed, "sampling seed");
  sub->add_option("--stop", opts->stop, "stop string (repeatable; escapes \\n \\t \\r \\\\ read)")
      ->transform(escaped_text());
  sub->add_flag("--json", opts->json, "print a JSON object instead of the text");
  sub->callback([opts] { run(*opts); });
}

}  // namespace kvsteer::cli
