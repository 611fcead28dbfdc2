// Steering-vector files: GGUF with a format version, the model fingerprint, the extraction
// settings and one F32 tensor per layer and cache half (docs/vector-format.md).
//
// Thread-safe: load_steering_vector and save_steering_vector share no state, so any number may
// run at once on any paths; concurrent saves of one path leave one whole file (each call writes
// its own temporary file, then renames it), and a load running beside them reads the old or the
// new file, never a mix. The loader reads files made by others: it is fuzzed
// (fuzz/fuzz_vector_file.cpp) and refuses, with Error(Format), anything it does not understand.
#pragma once

#include <string>

#include "kvsteer/steering.h"

namespace kvsteer {

inline constexpr std::uint32_t kVectorFormatVersion = 1;

// Writes atomically (temporary file, then rename): an existing file is never left half-written.
// Throws Error(InvalidArgument) for rows of the wrong width or a NaN or infinite value (the
// loader would refuse the file), Error(Io) when the file cannot be written.
void save_steering_vector(const std::string& path, const SteeringVector& vector);

// Throws Error(NotFound) for a missing file, Error(Format) for a file that is not a kvsteer
// vector, has a newer format version or inconsistent shapes.
SteeringVector load_steering_vector(const std::string& path);

}  // namespace kvsteer
