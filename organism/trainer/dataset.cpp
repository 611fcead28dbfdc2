#include "organism/trainer/dataset.h"

#include <cstring>
#include <fstream>

#include "base/fnv1a64.h"
#include "kvsteer/error.h"
#include "kvsteer/file_io.h"

namespace kvsteer::train {
namespace {

// Reads exactly n bytes; returns false at a clean end of file (nothing read), throws on a
// truncated read.
bool read_exact(std::ifstream& in, void* dst, size_t n, const std::string& path, bool eof_ok) {
  in.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
  const auto got = static_cast<size_t>(in.gcount());
  if (got == n) {
    return true;
  }
  if (got == 0 && eof_ok) {
    return false;
  }
  throw Error(ErrorCode::Format, "dataset " + path + ": truncated record (read " +
                                     std::to_string(got) + " of " + std::to_string(n) + " bytes)");
}

uint32_t read_u32(const unsigned char* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) {
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
}

void read_header(std::ifstream& in, const std::string& path) {
  unsigned char header[8];
  in.read(reinterpret_cast<char*>(header), sizeof(header));
  if (in.gcount() != sizeof(header) || std::memcmp(header, kDatasetMagic, 4) != 0) {
    throw Error(ErrorCode::Format,
                "dataset " + path + ": not a KVSD file (magic \"KVSD\" expected)");
  }
  const uint32_t version = read_u32(header + 4);
  if (version != kDatasetVersion) {
    throw Error(ErrorCode::Format, "dataset " + path + ": version " + std::to_string(version) +
                                       ", expected " + std::to_string(kDatasetVersion));
  }
}

bool read_record(std::ifstream& in, const std::string& path, Record& rec) {
  unsigned char len_bytes[4];
  if (!read_exact(in, len_bytes, 4, path, /*eof_ok=*/true)) {
    return false;
  }
  const uint32_t n = read_u32(len_bytes);
  std::vector<unsigned char> raw(size_t(n) * 5);
  read_exact(in, raw.data(), raw.size(), path, /*eof_ok=*/false);
  rec.tokens.resize(n);
  rec.loss_mask.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    rec.tokens[i] = static_cast<int32_t>(read_u32(raw.data() + 4 * size_t(i)));
    rec.loss_mask[i] = raw[4 * size_t(n) + i];
    if (rec.loss_mask[i] > 1) {
      throw Error(ErrorCode::Format, "dataset " + path + ": loss_mask value " +
                                         std::to_string(rec.loss_mask[i]) + " (0 or 1 expected)");
    }
  }
  return true;
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Uniform integer in [0, bound) without modulo bias (Lemire's rejection method).
uint64_t uniform_below(uint64_t& state, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;
  for (;;) {
    const uint64_t r = splitmix64(state);
    if (r >= threshold) {
      return r % bound;
    }
  }
}

PackedSequence empty_sequence(int n_ctx) {
  PackedSequence seq;
  seq.tokens.assign(n_ctx, 0);
  seq.doc_begin.resize(n_ctx);
  for (int t = 0; t < n_ctx; ++t) {
    seq.doc_begin[t] = t;
  }
  seq.loss_rows.assign(n_ctx, 0);
  return seq;
}

void check_record(const Record& rec, size_t index, int n_ctx, int n_vocab) {
  if (rec.tokens.size() > size_t(n_ctx)) {
    throw Error(ErrorCode::InvalidArgument,
                "record " + std::to_string(index) + " has " + std::to_string(rec.tokens.size()) +
                    " tokens, more than the sequence length " + std::to_string(n_ctx) +
                    " (raise --ctx or shorten the record)");
  }
  for (int32_t id : rec.tokens) {
    if (id < 0 || id >= n_vocab) {
      throw Error(ErrorCode::InvalidArgument,
                  "record " + std::to_string(index) + " holds token id " + std::to_string(id) +
                      ", outside the model vocabulary [0, " + std::to_string(n_vocab) + ")");
    }
  }
}

}  // namespace

int64_t PackedSequence::n_loss_rows() const {
  int64_t n = 0;
  for (uint8_t r : loss_rows) {
    n += r;
  }
  return n;
}

std::vector<Record> load_dataset(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(ErrorCode::Io, "cannot open dataset " + path);
  }
  read_header(in, path);
  std::vector<Record> records;
  Record rec;
  while (read_record(in, path, rec)) {
    records.push_back(std::move(rec));
    rec = Record{};
  }
  return records;
}

void save_dataset(const std::string& path, const std::vector<Record>& records) {
  std::string out(kDatasetMagic, 4);
  put_u32(out, kDatasetVersion);
  for (size_t r = 0; r < records.size(); ++r) {
    const Record& rec = records[r];
    if (rec.tokens.size() != rec.loss_mask.size()) {
      throw Error(ErrorCode::InvalidArgument,
                  "record " + std::to_string(r) + ": " + std::to_string(rec.tokens.size()) +
                      " tokens but " + std::to_string(rec.loss_mask.size()) + " mask values");
    }
    put_u32(out, static_cast<uint32_t>(rec.tokens.size()));
    for (int32_t id : rec.tokens) {
      put_u32(out, static_cast<uint32_t>(id));
    }
    for (uint8_t m : rec.loss_mask) {
      out.push_back(static_cast<char>(m != 0));
    }
  }
  write_file_atomic(path, out);
}

std::vector<PackedSequence> pack_records(const std::vector<Record>& records, int n_ctx, int n_vocab,
                                         PackStats* stats) {
  PackStats st;
  std::vector<PackedSequence> out;
  PackedSequence cur = empty_sequence(n_ctx);
  int fill = 0;
  auto flush = [&]() {
    if (fill == 0) {
      return;
    }
    const int64_t n_rows = cur.n_loss_rows();
    if (n_rows > 0) {
      st.n_tokens += fill;
      st.n_loss_tokens += n_rows;
      out.push_back(std::move(cur));
    } else {
      ++st.n_empty_dropped;
    }
    cur = empty_sequence(n_ctx);
    fill = 0;
  };
  for (size_t r = 0; r < records.size(); ++r) {
    const Record& rec = records[r];
    check_record(rec, r, n_ctx, n_vocab);
    const int n = static_cast<int>(rec.tokens.size());
    if (n == 0) {
      continue;
    }
    if (fill + n > n_ctx) {
      flush();
    }
    for (int i = 0; i < n; ++i) {
      cur.tokens[fill + i] = rec.tokens[i];
      cur.doc_begin[fill + i] = fill;
      // Row fill+i-1 predicts token i of the record; token 0 has no context and is never trained.
      if (i > 0 && rec.loss_mask[i]) {
        cur.loss_rows[fill + i - 1] = 1;
      }
    }
    fill += n;
    ++st.n_records;
  }
  flush();
  st.n_sequences = static_cast<int64_t>(out.size());
  if (stats) {
    *stats = st;
  }
  return out;
}

std::vector<uint32_t> epoch_order(uint32_t n_sequences, uint64_t seed, uint64_t epoch) {
  std::vector<uint32_t> order(n_sequences);
  for (uint32_t i = 0; i < n_sequences; ++i) {
    order[i] = i;
  }
  uint64_t state = seed ^ (0xd1b54a32d192ed03ULL * (epoch + 1));
  for (uint32_t i = n_sequences; i > 1; --i) {
    const auto j = static_cast<uint32_t>(uniform_below(state, i));
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

SequenceStream::SequenceStream(uint32_t n_sequences, uint64_t seed)
    : n_sequences_(n_sequences), seed_(seed) {}

uint32_t SequenceStream::at(uint64_t item) {
  const uint64_t epoch = item / n_sequences_;
  if (epoch != epoch_) {
    order_ = epoch_order(n_sequences_, seed_, epoch);
    epoch_ = epoch;
  }
  return order_[item % n_sequences_];
}

uint64_t fingerprint(const std::vector<PackedSequence>& sequences) {
  uint64_t h = base::kFnv1a64Basis;
  auto mix = [&h](uint32_t v) {  // little-endian bytes whatever the machine
    const unsigned char bytes[4] = {
        static_cast<unsigned char>(v), static_cast<unsigned char>(v >> 8),
        static_cast<unsigned char>(v >> 16), static_cast<unsigned char>(v >> 24)};
    h = base::fnv1a64(bytes, sizeof bytes, h);
  };
  for (const PackedSequence& seq : sequences) {
    for (size_t t = 0; t < seq.tokens.size(); ++t) {
      mix(static_cast<uint32_t>(seq.tokens[t]));
      mix(static_cast<uint32_t>(seq.doc_begin[t]));
      mix(seq.loss_rows[t]);
    }
  }
  return h;
}

}  // namespace kvsteer::train
