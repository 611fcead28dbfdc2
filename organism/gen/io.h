// Atomic file output for the organism commands.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvsteer::organism {

// Writes `text` to `path` whole or not at all (kvsteer::write_file_atomic: a temporary file beside
// it, synced to disk, renamed over it), so a reader never sees a half-written file. Throws
// kvsteer::Error(InvalidArgument) for an empty path, Error(Io) with the path and the system's
// reason otherwise; the temporary file is removed on failure.
void write_text_atomic(const std::string& path, std::string_view text);

// The lines, each followed by "\n", written with write_text_atomic (JSONL).
void write_lines_atomic(const std::string& path, const std::vector<std::string>& lines);

}  // namespace kvsteer::organism
