#include "llama/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

#include "llama.h"

namespace kvsteer {
namespace detail {
namespace {

std::mutex g_mutex;
std::string g_last_error;  // guarded by g_mutex
std::atomic<int> g_level{static_cast<int>(LogLevel::Error)};

LogLevel level_of(ggml_log_level level) {
  switch (level) {
    case GGML_LOG_LEVEL_ERROR:
      return LogLevel::Error;
    case GGML_LOG_LEVEL_WARN:
      return LogLevel::Warn;
    case GGML_LOG_LEVEL_INFO:
      return LogLevel::Info;
    default:
      return LogLevel::Debug;
  }
}

// Called by libllama from any thread; must not throw.
void on_log(ggml_log_level level, const char* text, void* /*user_data*/) noexcept {
  try {
    if (text == nullptr) {
      return;
    }
    const LogLevel ours = level_of(level);
    if (level == GGML_LOG_LEVEL_CONT) {
      // Continuation of the previous message: print at the previous threshold.
      if (g_level.load() >= static_cast<int>(LogLevel::Debug)) {
        std::fputs(text, stderr);
      }
      return;
    }
    if (ours == LogLevel::Error) {
      std::lock_guard lock(g_mutex);
      g_last_error = text;
      while (!g_last_error.empty() && (g_last_error.back() == '\n' || g_last_error.back() == ' ')) {
        g_last_error.pop_back();
      }
    }
    if (static_cast<int>(ours) <= g_level.load()) {
      std::fputs(text, stderr);
    }
  } catch (...) {
    // Logging must never take the process down.
  }
}

}  // namespace

std::string last_llama_error() {
  std::lock_guard lock(g_mutex);
  return g_last_error;
}

void clear_last_llama_error() {
  std::lock_guard lock(g_mutex);
  g_last_error.clear();
}

void install_log_bridge(LogLevel level) {
  g_level.store(static_cast<int>(level));
  llama_log_set(on_log, nullptr);
}

}  // namespace detail

Backend::Backend(LogLevel level) {
  detail::install_log_bridge(level);
  llama_backend_init();
}

Backend::~Backend() { llama_backend_free(); }

void Backend::set_log_level(LogLevel level) noexcept {
  detail::g_level.store(static_cast<int>(level));
}

std::string Backend::cpu_features() {
  std::string info = llama_print_system_info();
  while (!info.empty() && (info.back() == ' ' || info.back() == '|')) {
    info.pop_back();
  }
  return info;
}

}  // namespace kvsteer
