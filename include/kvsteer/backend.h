// Process-wide libllama set-up.
#pragma once

#include <string>

namespace kvsteer {

// How much of libllama's log reaches stderr. Errors are always kept (the last one is quoted in
// Error messages), whatever the level.
enum class LogLevel { Silent, Error, Warn, Info, Debug };

// Make exactly one Backend in main() before any other kvsteer call and before starting threads:
// it initialises libllama, installs kvsteer's log callback (libllama's logger is global and not
// thread safe) and frees the backend on destruction. Not copyable or movable.
class Backend {
 public:
  explicit Backend(LogLevel level = LogLevel::Error);
  ~Backend();
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  // Changes how much of the log is printed from now on.
  static void set_log_level(LogLevel level) noexcept;

  // The instruction sets and features libllama's CPU backend was built with, as libllama
  // describes them ("CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | ... | AVX512 = 0 | ..."). Greedy
  // answers can depend on them: the SIMD width sets the order in which dot products add up.
  static std::string cpu_features();
};

}  // namespace kvsteer
