// Extraction checkpoint files: where a stopped extraction goes on from (ExtractionCheckpoint,
// ResidualCheckpoint).
// A small binary file: the magic "KVSXCKPT", a format version, the extraction's identity, the
// pairs done, the running sums in double precision (so that a resumed extraction sums exactly
// what an uninterrupted one would) and an FNV-1a checksum of everything before it.
#pragma once

#include <string>

#include "kvsteer/steering.h"

namespace kvsteer {

// Writes the checkpoint whole or not at all (kvsteer/file_io.h). Throws Error(Io) naming path.
void save_extraction_checkpoint(const std::string& path, const ExtractionCheckpoint& checkpoint);

// Reads a checkpoint, checked field by field. Throws Error(NotFound) for a missing file, Error(Io)
// for one that cannot be read, and Error(Format) naming path and the first field that is wrong
// for a truncated, damaged or foreign file or a newer format. Whether it belongs to a given
// extraction is checked by extract_steering_vectors (ExtractionParams::resume).
ExtractionCheckpoint load_extraction_checkpoint(const std::string& path);

// The same for a residual extraction's checkpoint (ResidualCheckpoint), magic "KVSRCKPT": the
// header, the running sums of block outputs, the checksum. Either kind of file given to the
// other's loader is refused by its magic.
void save_residual_checkpoint(const std::string& path, const ResidualCheckpoint& checkpoint);
ResidualCheckpoint load_residual_checkpoint(const std::string& path);

}  // namespace kvsteer
