// The extraction checkpoint loaders (src/io/checkpoint_file.cpp) on arbitrary files: the K/V
// kind (load_extraction_checkpoint) and the residual kind (load_residual_checkpoint). A file is
// either refused with Error(Format) or gives a checkpoint that holds the bounds the resuming
// extraction relies on and saves back to the same bytes (the format has one encoding).
//
// Input: a selector byte, then bytes. Bit 0 picks the kind. With bit 1 clear the bytes are the
// whole file, which drives the magic, version, byte order and checksum checks. With bit 1 set
// they are a body that the target seals with the kind's header and a correct checksum: a
// mutation of a real file almost never keeps its checksum, and the field checks behind it would
// otherwise stay unreached.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "base/fnv1a64.h"
#include "fuzz_util.h"
#include "kvsteer/checkpoint_file.h"
#include "kvsteer/error.h"
#include "kvsteer/file_io.h"

namespace {

using namespace kvsteer;

using fuzz::check;

// The header both kinds start with: magic, format version 1, the byte-order mark as this
// machine writes it.
std::string sealed(bool residual, std::string_view body) {
  std::string file(residual ? "KVSRCKPT" : "KVSXCKPT");
  const std::uint32_t version = 1, byte_order = 0x01020304;
  file.append(reinterpret_cast<const char*>(&version), sizeof version);
  file.append(reinterpret_cast<const char*>(&byte_order), sizeof byte_order);
  file.append(body);
  const std::uint64_t checksum = base::fnv1a64(file);
  file.append(reinterpret_cast<const char*>(&checksum), sizeof checksum);
  return file;
}

void check_bounds(const ExtractionCheckpoint& cp) {
  check(cp.pairs_done <= cp.n_pairs, "more pairs done than the extraction has");
  for (const auto& s : cp.sums) {
    check(s.k.size() == s.v.size() && s.k.size() == s.count.size(),
          "K, V and count hold different layer counts");
    for (std::uint64_t n : s.count) {
      check(n <= 2 * cp.pairs_done, "a layer counts more prompts than the pairs done hold");
    }
  }
}

void check_bounds(const ResidualCheckpoint& cp) {
  check(cp.pairs_done <= cp.n_pairs, "more pairs done than the extraction has");
}

template <typename Checkpoint, typename Load, typename Save>
void drive(const std::string& file, Load load, Save save) {
  static const fuzz::ScratchFile in("checkpoint.bin"), out("checkpoint-again.bin");
  Checkpoint cp;
  try {
    cp = load(in.write(file));
  } catch (const Error& e) {
    check(e.code() == ErrorCode::Format, "a bad file was refused with another code than Format");
    return;
  }
  check_bounds(cp);
  save(out.path(), cp);
  check(read_text_file(out.path(), "checkpoint") == file,
        "an accepted checkpoint does not save back to its own bytes");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool residual = (data[0] & 1) != 0;
  const std::string_view rest = fuzz::as_text(data + 1, size - 1);
  const std::string file = (data[0] & 2) != 0 ? sealed(residual, rest) : std::string(rest);
  if (residual) {
    drive<ResidualCheckpoint>(file, load_residual_checkpoint, save_residual_checkpoint);
  } else {
    drive<ExtractionCheckpoint>(file, load_extraction_checkpoint, save_extraction_checkpoint);
  }
  return 0;
}
