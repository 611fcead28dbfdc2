// kvsteer serve: the OpenAI-compatible server with per-request cache steering (tools/server).
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "common.h"
#include "server.h"

namespace kvsteer::cli {
namespace {

struct ServeOptions {
  ModelOptions model;
  std::vector<std::string> vectors;
  std::string vectors_dir;
  std::string prompt_family;
  std::string chat_template;
  std::string api_key_file;
  double grace_s = 10.0;
  server::ServerOptions server;
};

void run(ServeOptions& o) {
  // SIGTERM and SIGINT are taken by one thread (sigwait) rather than a handler, so that shutting
  // down may lock and wait. Blocked before anything starts a thread (libllama's and OpenMP's
  // workers included): a thread that does not block them would take the default action and end
  // the process mid-request.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  auto model = o.model.load();
  SessionParams params = o.model.session_params(*model, o.server.parallel);
  std::map<std::string, server::NamedVector> vectors;
  {
    // A throwaway session of the same parameters checks each vector against the cache's domain.
    SessionParams probe = params;
    probe.n_seq = 1;
    probe.n_ctx = std::max<std::uint32_t>(256, probe.n_batch);
    Session session(model, probe);
    vectors = server::load_vectors(o.vectors, o.vectors_dir, session);
  }
  if (!o.api_key_file.empty()) {
    std::string key = read_text_file(o.api_key_file, "API key file");
    while (!key.empty() && (key.back() == '\n' || key.back() == '\r')) {
      key.pop_back();
    }
    if (key.empty()) {
      throw Error(ErrorCode::InvalidArgument, "API key file '" + o.api_key_file + "' is empty");
    }
    o.server.api_key = key;
  }
  o.server.prompt_family = eval::resolve_prompt_family(o.prompt_family, o.chat_template, *model);
  o.server.chat_template = o.chat_template;
  if (!o.server.prompt_family && !o.chat_template.empty()) {
    // A template libllama cannot render is refused at start, not on every chat request.
    const ChatMessage probe{"user", "Hello"};
    (void)model->apply_chat_template({&probe, 1}, true, o.chat_template);
  }
  o.server.shutdown_grace = std::chrono::milliseconds(static_cast<std::int64_t>(o.grace_s * 1e3));

  const std::size_t n_vectors = vectors.size();
  server::Server srv(model, params, std::move(vectors), o.server);
  std::thread waiter([&srv, signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::fprintf(stderr, "kvsteer serve: %s, finishing running requests\n",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT");
    srv.shutdown();
  });
  waiter.detach();  // blocked in sigwait until a signal; ends with the process
  srv.run([&](int port) {
    std::fprintf(stderr,
                 "kvsteer serve: listening on http://%s:%d (model %s, %zu steering vectors, "
                 "%u parallel, context %u)\n",
                 o.server.host.c_str(), port, model->path().c_str(), n_vectors, o.server.parallel,
                 params.n_ctx);
    std::fflush(stderr);
  });
  std::fprintf(stderr, "kvsteer serve: stopped\n");
}

}  // namespace

void add_serve(CLI::App& app) {
  auto opts = std::make_shared<ServeOptions>();
  auto* sub = app.add_subcommand(
      "serve", "OpenAI-compatible HTTP server; each request may carry its own steering");
  opts->model.add_to(*sub);
  sub->add_option("--vector", opts->vectors,
                  "NAME=FILE: a steering vector clients may name (repeatable)");
  sub->add_option("--vectors-dir", opts->vectors_dir,
                  "folder whose *.gguf vectors are served by file stem (loaded at start)");
  sub->add_option("--prompt-family", opts->prompt_family,
                  "render chat messages as the reference did: smollm2, qwen2, llama32, phi4mini");
  sub->add_option("--chat-template", opts->chat_template, "override the model's chat template");
  sub->add_option("--host", opts->server.host, "address to bind (default 127.0.0.1)");
  sub->add_option("--port", opts->server.port, "port (0: any free port, printed at start)")
      ->check(CLI::Range(0, 65535));
  sub->add_option("--api-key", opts->server.api_key,
                  "require 'Authorization: Bearer KEY' (visible in ps; prefer --api-key-file)");
  sub->add_option("--api-key-file", opts->api_key_file, "file holding the API key");
  sub->add_option("--parallel,--np", opts->server.parallel, "requests decoded together")
      ->check(CLI::Range(1, 256));
  sub->add_option("--max-queue", opts->server.max_queue,
                  "requests waiting beyond --parallel before 503 (default 64)")
      ->check(CLI::Range(0, 100000));
  sub->add_option("--max-body", opts->server.max_body, "largest request body in bytes (413)")
      ->check(CLI::Range(1024, 1 << 30));
  sub->add_option("--max-tokens", opts->server.limits.max_tokens,
                  "largest max_tokens a request may ask for")
      ->check(CLI::Range(1, 1 << 20));
  sub->add_option("--default-max-tokens", opts->server.limits.default_max_tokens,
                  "max_tokens when a request gives none (default 256)")
      ->check(CLI::Range(1, 1 << 20));
  sub->add_option("--grace", opts->grace_s,
                  "seconds running requests get to finish after SIGTERM (default 10)")
      ->check(CLI::Range(0.0, 3600.0));
  sub->add_option("--model-id", opts->server.model_id, "model name in /v1/models");
  sub->add_flag("--cache-prompt", opts->server.cache_prompt,
                "keep finished requests' cells for later prompts that start the same way (a "
                "chat's earlier turns, a shared system prompt): less prefill, but an answer may "
                "then differ from a fresh prefill's in the last bits (docs/server.md)");
  sub->callback([opts] { run(*opts); });
}

}  // namespace kvsteer::cli
