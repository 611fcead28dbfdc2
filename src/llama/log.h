// Bridge from libllama's global log to kvsteer: keeps the last error line for Error messages.
#pragma once

#include <string>

#include "kvsteer/backend.h"

namespace kvsteer::detail {

// The last line libllama logged at error level ("" if none), to quote in Error(Backend).
std::string last_llama_error();
void clear_last_llama_error();
// Installs the callback; idempotent.
void install_log_bridge(LogLevel level);

}  // namespace kvsteer::detail
