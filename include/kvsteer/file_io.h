// Whole-file reads and writes with the library's error model: outputs appear whole or not at all.
#pragma once

#include <string>
#include <string_view>

namespace kvsteer {

// Writes text to a temporary file beside path and renames it over path, so that neither a reader
// nor a crash ever sees a partial file. Throws Error(Io) naming path.
void write_file_atomic(const std::string& path, std::string_view text);

// The whole file as bytes. Throws Error(Io) naming path when it cannot be opened or read.
std::string read_text_file(const std::string& path);

}  // namespace kvsteer
