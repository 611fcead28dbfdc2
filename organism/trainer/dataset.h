// Training data: the KVSD record file, packing of records into fixed-length sequences, and the
// deterministic order in which sequences are visited.
//
// KVSD file, little-endian:
//   char     magic[4] = "KVSD"
//   u32      version  = 1
//   records until end of file, each:
//     u32    n_tokens
//     i32    tokens[n_tokens]
//     u8     loss_mask[n_tokens]   1: the loss includes predicting tokens[i] from tokens[0, i)
// loss_mask[0] is ignored: a record is an independent document, so its first token has no context.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvsteer::train {

inline constexpr char kDatasetMagic[4] = {'K', 'V', 'S', 'D'};
inline constexpr uint32_t kDatasetVersion = 1;

// One document, e.g. one chat conversation.
struct Record {
  std::vector<int32_t> tokens;     // [n_tokens] token ids
  std::vector<uint8_t> loss_mask;  // [n_tokens] 0 or 1, see the file comment
};

// Reads a KVSD file. Throws Error(Io) if it cannot be read, Error(Format) on a wrong magic,
// version, truncated record or a mask value other than 0/1.
std::vector<Record> load_dataset(const std::string& path);

// Writes a KVSD file, whole or not at all (write_file_atomic). Throws Error(InvalidArgument) if a
// record's token and mask lengths differ, Error(Io) if the file cannot be written.
void save_dataset(const std::string& path, const std::vector<Record>& records);

// n_ctx tokens holding one or more whole records, then padding. Records are isolated from each
// other: a token attends only to tokens of its own record, and positions restart at 0, so each
// record is trained exactly as libllama sees it when decoded alone from an empty cache.
struct PackedSequence {
  std::vector<int32_t> tokens;     // [n_ctx] token ids; padding uses id 0
  std::vector<int32_t> doc_begin;  // [n_ctx] index of the first token of this token's record;
                                   // a padding token is its own record (doc_begin[t] == t)
  std::vector<uint8_t>
      loss_rows;  // [n_ctx] 1: the logits at t are trained to predict tokens[t + 1]

  int32_t pos(int t) const { return t - doc_begin[t]; }
  int64_t n_loss_rows() const;
};

// Summary of pack_records for logs.
struct PackStats {
  int64_t n_records = 0;        // records packed
  int64_t n_sequences = 0;      // sequences kept (those with at least one loss row)
  int64_t n_empty_dropped = 0;  // sequences dropped because no token in them is trained
  int64_t n_tokens = 0;         // record tokens in kept sequences (without padding)
  int64_t n_loss_tokens = 0;    // trained tokens in kept sequences
};

// Packs records greedily in file order: a record goes into the current sequence if it fits, else
// it starts a new one; records are never split. Empty records are skipped. Sequences without any
// trained token are dropped. Throws Error(InvalidArgument) if a record is longer than n_ctx or
// holds a token id outside [0, n_vocab).
std::vector<PackedSequence> pack_records(const std::vector<Record>& records, int n_ctx, int n_vocab,
                                         PackStats* stats = nullptr);

// Visiting order of n_sequences sequences in the given epoch: a permutation of [0, n_sequences)
// drawn with Fisher-Yates from a splitmix64 stream seeded by (seed, epoch). Counter-based, so the
// order of any epoch is known without replaying earlier ones (this is the RNG state a checkpoint
// needs). Identical on every platform.
std::vector<uint32_t> epoch_order(uint32_t n_sequences, uint64_t seed, uint64_t epoch);

// Sequences in the global stream epoch 0 order, epoch 1 order, ...; step s takes stream items
// [s * n_batch, (s + 1) * n_batch). Caches the order of the current epoch.
class SequenceStream {
 public:
  SequenceStream(uint32_t n_sequences, uint64_t seed);
  // Index of stream item `item` (0-based over all epochs) into the sequence array.
  uint32_t at(uint64_t item);

 private:
  uint32_t n_sequences_;
  uint64_t seed_;
  uint64_t epoch_ = UINT64_MAX;
  std::vector<uint32_t> order_;
};

// 64-bit FNV-1a over the sequences' tokens and loss rows; a checkpoint stores it to refuse a
// resume on different data.
uint64_t fingerprint(const std::vector<PackedSequence>& sequences);

}  // namespace kvsteer::train
