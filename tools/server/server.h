// `kvsteer serve`: an OpenAI-compatible HTTP server with per-request cache steering. One llama
// context, one sequence per running request; a scheduler runs the continuous batcher
// (kvsteer/batcher.h), so requests with different vectors, or none, share every decode call.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "eval/prompts.h"
#include "kvsteer/model.h"
#include "kvsteer/session.h"
#include "kvsteer/steering.h"
#include "openai.h"

namespace kvsteer::server {

struct ServerOptions {
  std::string host = "127.0.0.1";  // loopback unless the operator says otherwise
  int port = 8080;                 // 0: any free port (printed at start)
  std::string api_key;             // empty: no authentication
  std::uint32_t parallel = 4;      // requests decoded together (sequences of the context)
  std::size_t max_queue = 64;      // requests waiting beyond those; more get 503 + Retry-After
  std::size_t max_body = 1 << 20;  // bytes; larger bodies get 413
  Limits limits;
  std::chrono::milliseconds shutdown_grace{10000};  // SIGTERM: time left to running requests
  std::string model_id;                             // name in /v1/models (default: file stem)
  std::optional<eval::PromptFamily> prompt_family;  // chat rendering (see cli resolve)
  std::string chat_template;                        // override of the model's template
  // Keep finished requests' untouched cells for later prompts that start the same way
  // (BatcherOptions::reuse_prompt_cache); off: every answer equals a fresh prefill's.
  bool cache_prompt = false;
};

// A vector the operator loaded, by name.
struct NamedVector {
  std::string name;
  std::string path;
  std::shared_ptr<const SteeringVector> vector;
};

// Loads `name=file` vectors and every `*.gguf` of a folder (named by file stem), each checked
// against the model now, so a client can only pick among vectors that apply. Throws Error.
std::map<std::string, NamedVector> load_vectors(const std::vector<std::string>& specs,
                                                const std::string& folder, const Session& session);

class Server {
 public:
  Server(std::shared_ptr<const Model> model, const SessionParams& session_params,
         std::map<std::string, NamedVector> vectors, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds (throws Error(Io) when the address cannot be bound) and serves until shutdown().
  // Calls on_ready with the bound port once the socket listens. The scheduler decodes on the
  // calling thread and HTTP is served from others: call run() on the thread that constructed
  // the Server (llama.cpp's OpenMP worker pool belongs to the thread that first decoded; a
  // second decoding thread costs about a fifth of the throughput on a 2-core machine).
  void run(const std::function<void(int port)>& on_ready);

  // From any thread (a signal-waiting thread): refuses new requests with 503, lets running ones
  // finish within the grace period, cancels the rest, then makes run() return.
  void shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvsteer::server
