// Log bridge for libllama/ggml in the tiny-model tool: quiet by default, remembers the last error
// line so that failures can name their reason (libllama puts it only in its log).
#pragma once

#include <string>

namespace kvsteer::tinymodel {

// Installs the callback. verbose: forward every line to stderr; otherwise only errors.
// Call once from main before any other libllama call; the logger is global and not thread safe.
void install_llama_log(bool verbose);

// Forgets the error lines logged so far; call before a libllama call whose failure you report.
void clear_llama_errors();

// The ERROR lines libllama logged since clear_llama_errors() (at most the last 4, joined by
// " | ", without newlines), or "" if none. libllama logs the cause first and "failed to load"
// last, so the cause needs the earlier lines.
std::string llama_errors();

// While alive, libllama's error lines are recorded but not printed (unless verbose): for calls
// whose failure is an expected answer, such as probing whether an existing file is a GGUF.
class QuietLlamaLog {
 public:
  QuietLlamaLog();
  ~QuietLlamaLog();
  QuietLlamaLog(const QuietLlamaLog&) = delete;
  QuietLlamaLog& operator=(const QuietLlamaLog&) = delete;
};

}  // namespace kvsteer::tinymodel
