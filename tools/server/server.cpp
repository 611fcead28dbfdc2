#include "server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <utility>

#include "kvsteer/batcher.h"
#include "kvsteer/error.h"
#include "kvsteer/vector_file.h"

namespace kvsteer::server {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::map<std::string, NamedVector> load_vectors(const std::vector<std::string>& specs,
                                                const std::string& folder, const Session& session) {
  std::map<std::string, NamedVector> out;
  auto add = [&](const std::string& name, const std::string& path) {
    if (name.empty()) {
      throw Error(ErrorCode::InvalidArgument, "--vector needs NAME=FILE, got '=" + path + "'");
    }
    if (out.count(name) != 0) {
      throw Error(ErrorCode::InvalidArgument, "two vectors are named '" + name + "'");
    }
    auto v = std::make_shared<const SteeringVector>(load_steering_vector(path));
    check_applicable(*v, session);
    out[name] = {name, path, std::move(v)};
  };
  for (const std::string& spec : specs) {
    const auto eq = spec.find('=');
    if (eq == std::string::npos) {
      throw Error(ErrorCode::InvalidArgument, "--vector needs NAME=FILE, got '" + spec + "'");
    }
    add(spec.substr(0, eq), spec.substr(eq + 1));
  }
  if (!folder.empty()) {
    std::error_code ec;
    if (!fs::is_directory(folder, ec)) {
      throw Error(ErrorCode::Io, "--vectors-dir " + folder + " is not a folder");
    }
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(folder)) {
      if (entry.is_regular_file() && entry.path().extension() == ".gguf") {
        files.push_back(entry.path());
      }
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      add(f.stem().string(), f.string());
    }
  }
  return out;
}

namespace {

// One request between its HTTP handler and the scheduler thread.
struct Job {
  BatchRequest request;
  RequestId id = 0;
  std::atomic<bool> cancelled{false};

  std::mutex m;
  std::condition_variable cv;
  std::deque<BatchEvent> events;
  std::optional<ApiError> error;
  bool done = false;

  void push(BatchEvent e) {
    {
      const std::lock_guard<std::mutex> lock(m);
      done = done || e.finished;
      events.push_back(std::move(e));
    }
    cv.notify_all();
  }
  void fail(ApiError e) {
    {
      const std::lock_guard<std::mutex> lock(m);
      if (!done) {
        error = std::move(e);
        done = true;
      }
    }
    cv.notify_all();
  }
  // The next event; nullopt once the job ended and its events are drained (then `error` tells
  // whether it failed).
  std::optional<BatchEvent> next() {
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return !events.empty() || done; });
    if (events.empty()) {
      return std::nullopt;
    }
    BatchEvent e = std::move(events.front());
    events.pop_front();
    return e;
  }
  std::optional<ApiError> failure() {
    const std::lock_guard<std::mutex> lock(m);
    return error;
  }
};

struct Counters {
  std::map<std::pair<std::string, int>, std::uint64_t> requests;  // (endpoint, status) -> count
  BatcherStats batcher;
  std::size_t running = 0;
  std::size_t queued = 0;
};

std::int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A response body: never throws on text that is not UTF-8 (openai.cpp already makes model text
// displayable; this is the guard for anything else), since a throw while a stream is being
// written cannot be answered any more.
std::string json_text(const json& body) {
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(json_text(body), "application/json");
}

}  // namespace

struct Server::Impl {
  std::shared_ptr<const Model> model;
  Session session;
  Batcher batcher;
  std::map<std::string, NamedVector> vectors;
  ServerOptions options;
  httplib::Server http;
  std::int64_t started = unix_time();

  // The scheduler's inbox and wake-up.
  std::mutex mu;
  std::condition_variable wake;
  std::vector<std::shared_ptr<Job>> inbox;
  bool cancel_pending = false;
  bool stop_now = false;  // grace over: cancel what runs, then leave the loop
  std::thread listener;   // the HTTP server; the scheduler runs on run()'s thread

  std::atomic<std::size_t> in_flight{0};  // accepted requests whose handler has not returned
  std::atomic<bool> draining{false};
  std::atomic<std::uint64_t> next_response_id{1};

  std::mutex metrics_mu;
  Counters counters;

  Impl(std::shared_ptr<const Model> m, const SessionParams& sp,
       std::map<std::string, NamedVector> v, ServerOptions o)
      : model(std::move(m)),
        session(model, sp),
        batcher(session, BatcherOptions{o.cache_prompt}),
        vectors(std::move(v)),
        options(std::move(o)) {}

  // -- the scheduler --------------------------------------------------------------------------

  void schedule() {
    std::unordered_map<RequestId, std::shared_ptr<Job>> live;
    for (;;) {
      std::vector<std::shared_ptr<Job>> incoming;
      bool stopping = false;
      {
        std::unique_lock<std::mutex> lock(mu);
        wake.wait(lock,
                  [&] { return stop_now || cancel_pending || !inbox.empty() || !batcher.idle(); });
        incoming.swap(inbox);
        cancel_pending = false;
        stopping = stop_now;
      }
      for (auto& job : incoming) {
        if (stopping) {
          job->fail(ApiError(503, "the server is shutting down", "server_error"));
          continue;
        }
        try {
          job->id = batcher.submit(std::move(job->request));
          live[job->id] = job;
        } catch (const Error& e) {
          job->fail(ApiError(400, e.what()));
        }
      }
      for (auto it = live.begin(); it != live.end();) {
        if (stopping || it->second->cancelled.load()) {
          batcher.cancel(it->first);
          it->second->fail(
              ApiError(503, stopping ? "the server is shutting down" : "the request was cancelled",
                       "server_error"));
          it = live.erase(it);
        } else {
          ++it;
        }
      }
      if (stopping && live.empty()) {
        break;
      }
      if (!batcher.idle()) {
        try {
          std::vector<BatchEvent> events = batcher.step();
          // The counters first: a client that reads /metrics once its answer is complete sees
          // that answer counted.
          publish_counters();
          for (BatchEvent& e : events) {
            const auto it = live.find(e.id);
            if (it == live.end()) {
              continue;
            }
            const bool finished = e.finished;
            it->second->push(std::move(e));
            if (finished) {
              live.erase(it);
            }
          }
        } catch (const std::exception& e) {
          // A failed decode leaves the batch in an unknown state: end every request in it with
          // the reason, free their sequences and go on serving new ones.
          for (auto& [id, job] : live) {
            batcher.cancel(id);
            job->fail(ApiError(500, std::string("generation failed: ") + e.what(), "server_error"));
          }
          live.clear();
        }
      }
      publish_counters();
    }
  }

  void publish_counters() {
    const std::lock_guard<std::mutex> lock(metrics_mu);
    counters.batcher = batcher.stats();
    counters.running = batcher.running();
    counters.queued = batcher.queued();
  }

  void enqueue(const std::shared_ptr<Job>& job) {
    {
      const std::lock_guard<std::mutex> lock(mu);
      if (stop_now) {  // the scheduler may be gone: answer here
        job->fail(ApiError(503, "the server is shutting down", "server_error"));
        return;
      }
      inbox.push_back(job);
    }
    wake.notify_all();
  }

  void cancel(const std::shared_ptr<Job>& job) {
    job->cancelled = true;
    {
      const std::lock_guard<std::mutex> lock(mu);
      cancel_pending = true;
    }
    wake.notify_all();
  }

  // -- requests -------------------------------------------------------------------------------

  void count(const std::string& endpoint, int status) {
    const std::lock_guard<std::mutex> lock(metrics_mu);
    ++counters.requests[{endpoint, status}];
  }

  void reply_error(httplib::Response& res, const std::string& endpoint, const ApiError& e) {
    if (e.status() == 503 || e.status() == 429) {
      res.set_header("Retry-After", "1");
    }
    send_json(res, e.status(), e.body());
    count(endpoint, e.status());
  }

  BatchRequest build(const ParsedRequest& p) {
    BatchRequest r;
    std::string text;
    if (p.chat) {
      text = options.prompt_family
                 ? eval::render_reference_prompt(*options.prompt_family, p.messages, true)
                 : model->apply_chat_template(p.messages, true, options.chat_template);
    } else {
      text = p.prompt;
    }
    r.prompt = model->tokenize_prompt(text);
    if (r.prompt.empty()) {
      throw ApiError(400, "the prompt has no tokens", "invalid_request_error", "prompt");
    }
    r.n_predict = p.max_tokens;
    r.stop_strings = p.stop;
    r.stop_at_eog = !p.ignore_eos;
    r.sampling = p.sampling;
    r.n_logprobs = p.logprobs;
    if (p.steering) {
      const SteeringSpec& s = *p.steering;
      const auto it = vectors.find(s.vector);
      if (it == vectors.end()) {
        throw ApiError(400, "unknown steering vector '" + s.vector + "' (GET /v1/steering/vectors)",
                       "invalid_request_error", "steering.vector");
      }
      r.steering = it->second.vector;
      r.steering_params.coef_k = s.c_k;
      r.steering_params.coef_v = s.c_v;
      try {
        r.steering_params.layers_k =
            LayerSelection::parse(s.layers_k.empty() ? s.layers : s.layers_k);
        r.steering_params.layers_v =
            LayerSelection::parse(s.layers_v.empty() ? s.layers : s.layers_v);
      } catch (const Error& e) {
        throw ApiError(400, e.what(), "invalid_request_error", "steering.layers");
      }
      if (s.offset) {
        const auto ids = model->tokenize(*s.offset, false, false);
        if (ids.size() != 1) {
          throw ApiError(400,
                         "steering.offset must be the text of exactly one token, got " +
                             std::to_string(ids.size()) + " tokens",
                         "invalid_request_error", "steering.offset");
        }
        r.steering_params.offset_token = ids.front();
      }
    }
    const std::size_t cells = r.prompt.size() + 1 + static_cast<std::size_t>(r.n_predict);
    if (cells > session.n_ctx_seq()) {
      throw ApiError(400,
                     "the prompt (" + std::to_string(r.prompt.size()) +
                         " tokens) plus max_tokens (" + std::to_string(r.n_predict) +
                         ") exceeds the context (" + std::to_string(session.n_ctx_seq()) +
                         " tokens)",
                     "invalid_request_error", "messages");
    }
    return r;
  }

  // An event's log-probabilities with the tokens' text, as responses report them.
  std::vector<LogprobEntry> entries(const BatchEvent& e) const {
    std::vector<LogprobEntry> out;
    out.reserve(e.logprobs.size());
    for (const GeneratedLogprob& g : e.logprobs) {
      LogprobEntry entry;
      entry.token = model->token_to_piece(g.sampled.token);
      entry.logprob = g.sampled.logprob;
      entry.text_offset = g.text_offset;
      for (const TokenLogprob& t : g.top) {
        entry.top.emplace_back(model->token_to_piece(t.token), t.logprob);
      }
      out.push_back(std::move(entry));
    }
    return out;
  }

  void completions(const httplib::Request& req, httplib::Response& res, bool chat) {
    const std::string endpoint = chat ? "/v1/chat/completions" : "/v1/completions";
    if (draining) {
      reply_error(res, endpoint, ApiError(503, "the server is shutting down", "server_error"));
      return;
    }
    ParsedRequest parsed;
    auto job = std::make_shared<Job>();
    try {
      parsed = parse_request(req.body, chat, options.limits);
      job->request = build(parsed);
    } catch (const ApiError& e) {
      reply_error(res, endpoint, e);
      return;
    } catch (const Error& e) {
      reply_error(res, endpoint, ApiError(400, e.what()));
      return;
    }
    // Admission: running and queued requests together stay within parallel + max_queue.
    const std::size_t limit = options.parallel + options.max_queue;
    if (in_flight.fetch_add(1) >= limit) {
      in_flight.fetch_sub(1);
      reply_error(res, endpoint,
                  ApiError(503, "too many requests in flight; retry later", "server_error"));
      return;
    }
    // Released when the response is complete (for a stream: when its provider ends).
    auto flight = std::shared_ptr<void>(nullptr, [this](void*) { in_flight.fetch_sub(1); });
    const auto n_prompt = static_cast<std::int32_t>(job->request.prompt.size());
    enqueue(job);
    const std::string id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_response_id++);
    const std::int64_t created = unix_time();
    const std::string model_id = options.model_id;

    const bool with_logprobs = parsed.logprobs >= 0;
    if (!parsed.stream) {
      std::string text;
      StopReason reason = StopReason::Length;
      std::int32_t generated = 0;
      std::vector<LogprobEntry> logprobs;
      while (auto e = job->next()) {
        text += e->piece;
        for (LogprobEntry& entry : entries(*e)) {
          logprobs.push_back(std::move(entry));
        }
        generated = e->n_generated;
        if (e->finished) {
          reason = e->stop_reason;
        }
      }
      if (auto err = job->failure()) {
        reply_error(res, endpoint, *err);
        return;
      }
      send_json(res, 200,
                completion_response(chat, id, created, model_id, text, reason,
                                    {n_prompt, generated}, with_logprobs ? &logprobs : nullptr));
      count(endpoint, 200);
      return;
    }
    count(endpoint, 200);
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, job, flight, chat, id, created, model_id, with_logprobs](std::size_t,
                                                                        httplib::DataSink& sink) {
          auto send = [&](const json& j) {
            const std::string line = "data: " + json_text(j) + "\n\n";
            return sink.write(line.data(), line.size());
          };
          // An exception here would end the process (the stream's headers are out, and the
          // HTTP library does not catch it): end this stream instead.
          try {
            bool first = true;
            while (auto e = job->next()) {
              if (!e->piece.empty() || first) {
                const std::vector<LogprobEntry> logprobs = entries(*e);
                if (!send(stream_chunk(chat, id, created, model_id, e->piece, std::nullopt, first,
                                       with_logprobs ? &logprobs : nullptr))) {
                  cancel(job);  // the client went away: free its sequence at the next step
                  return false;
                }
                first = false;
              }
              if (e->finished) {
                send(stream_chunk(chat, id, created, model_id, "", e->stop_reason, false));
              }
            }
            if (auto err = job->failure()) {
              send(err->body());
            }
            const std::string done = "data: [DONE]\n\n";
            sink.write(done.data(), done.size());
            sink.done();
            return true;
          } catch (const std::exception& e) {
            std::fprintf(stderr, "kvsteer serve: a stream failed: %s\n", e.what());
            cancel(job);
            return false;
          }
        },
        [this, job](bool success) {
          if (!success) {
            cancel(job);
          }
        });
  }

  std::string metrics_text() {
    const std::lock_guard<std::mutex> lock(metrics_mu);
    std::ostringstream o;
    o << "# HELP kvsteer_requests_total Completion requests answered, by endpoint and status.\n"
      << "# TYPE kvsteer_requests_total counter\n";
    for (const auto& [key, n] : counters.requests) {
      o << "kvsteer_requests_total{endpoint=\"" << key.first << "\",status=\"" << key.second
        << "\"} " << n << "\n";
    }
    const BatcherStats& s = counters.batcher;
    auto metric = [&](const char* name, const char* type, const char* help, double value) {
      o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n"
        << name << " " << value << "\n";
    };
    metric("kvsteer_requests_running", "gauge", "Requests being decoded.",
           static_cast<double>(counters.running));
    metric("kvsteer_requests_queued", "gauge", "Requests waiting for a sequence.",
           static_cast<double>(counters.queued));
    metric("kvsteer_prompt_tokens_total", "counter", "Prompt tokens prefilled.",
           static_cast<double>(s.prompt_tokens));
    metric("kvsteer_prompt_tokens_reused_total", "counter",
           "Prompt tokens taken from the prompt cache (--cache-prompt) instead of prefilled.",
           static_cast<double>(s.reused_tokens));
    metric("kvsteer_generated_tokens_total", "counter", "Tokens generated.",
           static_cast<double>(s.generated_tokens));
    metric("kvsteer_edits_total", "counter", "One-cell cache edits applied.",
           static_cast<double>(s.edits));
    metric("kvsteer_edit_seconds_total", "counter", "Time spent in cache edits.", s.edit_ms / 1e3);
    metric("kvsteer_decode_steps_total", "counter", "Batched decode steps.",
           static_cast<double>(s.steps));
    metric("kvsteer_decode_seconds_total", "counter", "Time spent decoding (prefill included).",
           s.decode_ms / 1e3);
    return o.str();
  }

  json vector_list() const {
    json data = json::array();
    for (const auto& [name, v] : vectors) {
      const ExtractionInfo& info = v.vector->info;
      data.push_back({{"name", name},
                      {"object", "steering.vector"},
                      {"n_layer", v.vector->k.size()},
                      {"position", info.position},
                      {"n_pairs", info.n_pairs},
                      {"n_shots", info.n_shots},
                      {"kv_type_k", info.kv_type_k},
                      {"k_rotated", info.k_rotated},
                      {"source", info.source}});
    }
    return {{"object", "list"}, {"data", data}};
  }

  void routes() {
    http.new_task_queue = [n = options.parallel + options.max_queue + 8] {
      return new httplib::ThreadPool(n);
    };
    http.set_payload_max_length(options.max_body);
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (options.api_key.empty() || req.path == "/health") {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      const std::string auth = req.get_header_value("Authorization");
      const std::string prefix = "Bearer ";
      const std::string presented = auth.rfind(prefix, 0) == 0 ? auth.substr(prefix.size()) : "";
      if (!keys_equal(presented, options.api_key)) {
        reply_error(res, req.path,
                    ApiError(401, "invalid or missing API key", "authentication_error"));
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) {
        return;
      }
      const std::string message = res.status == 413   ? "the request body is too large"
                                  : res.status == 404 ? "no such endpoint"
                                                      : "request failed";
      res.set_content(
          json_text(ApiError(res.status, message,
                             res.status >= 500 ? "server_error" : "invalid_request_error")
                        .body()),
          "application/json");
    });
    // A handler that throws something unexpected: the client gets a 500 with the reason, and the
    // operator sees it on stderr.
    http.set_exception_handler([](const httplib::Request& req, httplib::Response& res,
                                  const std::exception_ptr& ep) {
      std::string what = "unknown exception";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      std::fprintf(stderr, "kvsteer serve: %s %s failed: %s\n", req.method.c_str(),
                   req.path.c_str(), what.c_str());
      res.status = 500;
      res.set_content(json_text(ApiError(500, "internal error: " + what, "server_error").body()),
                      "application/json");
    });
    http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      completions(req, res, true);
    });
    http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      completions(req, res, false);
    });
    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200,
                {{"object", "list"},
                 {"data", json::array({{{"id", options.model_id},
                                        {"object", "model"},
                                        {"created", started},
                                        {"owned_by", "kvsteer"}}})}});
    });
    http.Get("/v1/steering/vectors", [this](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, vector_list());
    });
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      if (draining) {
        send_json(res, 503, {{"status", "shutting down"}});
      } else {
        send_json(res, 200, {{"status", "ok"}});
      }
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_text(), "text/plain; version=0.0.4");
    });
  }
};

Server::Server(std::shared_ptr<const Model> model, const SessionParams& session_params,
               std::map<std::string, NamedVector> vectors, ServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(model), session_params, std::move(vectors),
                                   std::move(options))) {
  if (impl_->options.model_id.empty()) {
    impl_->options.model_id = fs::path(impl_->model->path()).stem().string();
  }
  impl_->routes();
}

Server::~Server() {
  shutdown();
  if (impl_->listener.joinable()) {
    impl_->listener.join();
  }
}

void Server::run(const std::function<void(int port)>& on_ready) {
  Impl& s = *impl_;
  int port = s.options.port;
  if (port == 0) {
    port = s.http.bind_to_any_port(s.options.host);
  } else if (!s.http.bind_to_port(s.options.host, port)) {
    port = -1;
  }
  if (port < 0) {
    throw Error(ErrorCode::Io, "cannot listen on " + s.options.host + ":" +
                                   std::to_string(s.options.port) + " (in use or not permitted)");
  }
  s.listener = std::thread([&s] {
    s.http.listen_after_bind();
    // However listening ended (shutdown(), or an error), the scheduler stops too.
    {
      const std::lock_guard<std::mutex> lock(s.mu);
      s.stop_now = true;
    }
    s.wake.notify_all();
  });
  if (on_ready) {
    on_ready(port);
  }
  // The scheduler decodes on this thread, the one that built the session (whose self-test
  // decoded): llama.cpp's CPU backend runs on OpenMP, whose worker pool belongs to the thread that
  // starts a parallel region. Decoding from a second thread makes a second pool, and with more
  // OpenMP threads than cores libgomp stops spinning at barriers and puts its workers to sleep
  // at every one: 16 streamed requests on 2 cores ran 20 % slower (docs/server.md).
  try {
    s.schedule();
  } catch (...) {
    s.http.stop();
    s.listener.join();
    throw;
  }
  s.listener.join();
}

void Server::shutdown() {
  Impl& s = *impl_;
  if (s.draining.exchange(true)) {
    return;
  }
  const auto deadline = Clock::now() + s.options.shutdown_grace;
  while (s.in_flight.load() > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  {
    const std::lock_guard<std::mutex> lock(s.mu);
    s.stop_now = true;
  }
  s.wake.notify_all();
  // Cancelled requests answer within a step; give their handlers a moment to write.
  const auto flush = Clock::now() + std::chrono::seconds(2);
  while (s.in_flight.load() > 0 && Clock::now() < flush) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  s.http.stop();
}

}  // namespace kvsteer::server
