// Atomic file output for the organism commands.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvsteer::organism {

// Writes `text` to `path` atomically: into "<path>.tmp.<pid>" in the same folder, then renamed
// over `path`, so a reader never sees a half-written file. Throws kvsteer::Error(Io) with the
// path and the system's reason; the temporary file is removed on failure.
void write_text_atomic(const std::string& path, std::string_view text);

// The lines, each followed by "\n", written with write_text_atomic (JSONL).
void write_lines_atomic(const std::string& path, const std::vector<std::string>& lines);

}  // namespace kvsteer::organism
