// Whole-file reads and writes with the library's error model: outputs appear whole or not at all.
#pragma once

#include <string>
#include <string_view>

namespace kvsteer {

// Writes text to a temporary file beside path, flushes it to the disk, and renames it over path,
// so that neither a reader, a kill nor a power loss ever leaves a partial file. Thread-safe:
// concurrent writes of one path leave one writer's whole text (each call has its own temporary
// file). Throws Error(Io) naming path and the system's reason (e.g. "No space left on device");
// path is then unchanged.
void write_file_atomic(const std::string& path, std::string_view text);

// The whole file as bytes. Throws Error(NotFound) when path does not exist and Error(Io) when it
// cannot be opened or read; the message names `what` ("traces file") and path.
std::string read_text_file(const std::string& path, std::string_view what = "file");

}  // namespace kvsteer
