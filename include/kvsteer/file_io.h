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

// Checks that path names something a file can be read from, before a loader sees it: throws
// Error(NotFound) "<what> '<path>' does not exist<hint>" when nothing is there, and
// Error(InvalidArgument) "<what> '<path>' is a directory, not a file" for a folder (which opens
// as an empty stream, so that a reader would otherwise see a file without rows). Pipes and
// devices pass (/dev/stdin is a file to read).
void require_file(const std::string& path, std::string_view what, std::string_view hint = {});

// require_file, and also refuses what is not a regular file (a pipe, a device): loaders that
// map the file or read it twice (models, steering vectors) need one.
void require_regular_file(const std::string& path, std::string_view what);

// Checks, before hours of work, that a file can be written at path: throws
// Error(InvalidArgument) when path is empty or names a directory, and Error(NotFound) when the
// folder it would go in does not exist; the message names `what` ("steering vector file").
void require_output_file(const std::string& path, std::string_view what);

// As require_output_file, for a file whose missing folders are created when it is written: a
// folder in the way is refused, and so is a file where one of its folders should be.
void require_creatable_file(const std::string& path, std::string_view what);

// Creates the folder path and its missing parents. Throws Error(InvalidArgument) when path or a
// parent is a file, and Error(Io) with the system's reason otherwise; `what` names it
// ("output folder").
void create_folder(const std::string& path, std::string_view what);

// The whole file as bytes. Throws as require_file when path is missing or a directory, and
// Error(Io) when it cannot be opened or read; the message names `what` ("traces file") and path.
std::string read_text_file(const std::string& path, std::string_view what = "file");

}  // namespace kvsteer
