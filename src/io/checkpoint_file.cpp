// Extraction checkpoint files (kvsteer/checkpoint_file.h). Numbers are stored in the machine's
// byte order, which the header records: a checkpoint is resumed where it was made, or on a
// machine like it.
#include "kvsteer/checkpoint_file.h"

#include <cstdint>
#include <cstring>
#include <string_view>

#include "base/fnv1a64.h"
#include "kvsteer/error.h"
#include "kvsteer/file_io.h"

namespace kvsteer {
namespace {

constexpr std::string_view kMagic = "KVSXCKPT";          // cached K and V (ExtractionCheckpoint)
constexpr std::string_view kResidualMagic = "KVSRCKPT";  // block outputs (ResidualCheckpoint)
constexpr std::uint32_t kVersion = 1;
constexpr std::uint32_t kByteOrder = 0x01020304;
// Bounds that no real extraction reaches, so that a damaged count cannot ask for gigabytes.
constexpr std::uint64_t kMaxPositions = 64;
constexpr std::uint64_t kMaxLayers = 1024;
constexpr std::uint64_t kMaxRow = 1U << 20;

class Writer {
 public:
  template <typename T>
  void put(T x) {
    bytes_.append(reinterpret_cast<const char*>(&x), sizeof x);
  }
  void put_doubles(const std::vector<double>& xs) {
    put<std::uint64_t>(xs.size());
    if (!xs.empty()) {
      bytes_.append(reinterpret_cast<const char*>(xs.data()), xs.size() * sizeof(double));
    }
  }
  void raw(std::string_view s) { bytes_.append(s); }
  std::string& bytes() { return bytes_; }

 private:
  std::string bytes_;
};

class Reader {
 public:
  Reader(std::string_view bytes, const std::string& path) : bytes_(bytes), path_(path) {}

  [[noreturn]] void fail(const std::string& why) const {
    throw Error(ErrorCode::Format, "extraction checkpoint " + path_ + ": " + why);
  }
  template <typename T>
  T get(const char* field) {
    if (bytes_.size() - at_ < sizeof(T)) {
      fail(std::string("truncated at ") + field + " (byte " + std::to_string(at_) + " of " +
           std::to_string(bytes_.size()) + ")");
    }
    T x;
    std::memcpy(&x, bytes_.data() + at_, sizeof x);
    at_ += sizeof x;
    return x;
  }
  std::uint64_t bounded(const char* field, std::uint64_t max) {
    const auto n = get<std::uint64_t>(field);
    if (n > max) {
      fail(std::string(field) + " is " + std::to_string(n) + ", more than " + std::to_string(max));
    }
    return n;
  }
  std::vector<double> doubles(const char* field) {
    const std::uint64_t n = bounded(field, kMaxRow);
    if ((bytes_.size() - at_) / sizeof(double) < n) {
      fail(std::string("truncated in ") + field);
    }
    std::vector<double> xs(n);
    if (n > 0) {  // an empty vector's data() may be null, which memcpy must not get
      std::memcpy(xs.data(), bytes_.data() + at_, n * sizeof(double));
    }
    at_ += n * sizeof(double);
    return xs;
  }
  std::size_t at() const { return at_; }
  std::size_t left() const { return bytes_.size() - at_; }
  // Reads stop at byte n from now on (the checksum after it is not a field).
  void end_at(std::size_t n) { bytes_ = bytes_.substr(0, n); }

 private:
  std::string_view bytes_;
  const std::string& path_;
  std::size_t at_ = 0;
};

// The magic, version and byte order; the caller appends the body and then finish()es.
Writer start_file(std::string_view magic) {
  Writer w;
  w.raw(magic);
  w.put(kVersion);
  w.put(kByteOrder);
  return w;
}

void finish_file(Writer& w, const std::string& path) {
  w.put(base::fnv1a64(w.bytes()));
  write_file_atomic(path, w.bytes());
}

// Checks the magic, version, byte order and checksum of a file's bytes and returns a Reader at
// the start of its body that stops before the checksum.
Reader open_file(std::string_view bytes, const std::string& path, std::string_view magic,
                 const char* kind) {
  Reader r(bytes, path);
  if (bytes.size() < magic.size() || bytes.substr(0, magic.size()) != magic) {
    r.fail(std::string("not ") + kind + " (no " + std::string(magic) + " magic)");
  }
  for (std::size_t i = 0; i < magic.size(); ++i) {
    (void)r.get<char>("magic");
  }
  if (const auto version = r.get<std::uint32_t>("version"); version != kVersion) {
    r.fail("format version " + std::to_string(version) + ", this kvsteer reads " +
           std::to_string(kVersion));
  }
  if (r.get<std::uint32_t>("byte order") != kByteOrder) {
    r.fail("written on a machine of the other byte order");
  }
  // The checksum first: a damaged file is named as such, not by whichever field the damage hit.
  constexpr std::size_t kChecksum = sizeof(std::uint64_t);
  if (bytes.size() < r.at() + kChecksum) {
    r.fail("truncated after the header");
  }
  const std::size_t body = bytes.size() - kChecksum;
  std::uint64_t checksum = 0;
  std::memcpy(&checksum, bytes.data() + body, kChecksum);
  if (checksum != base::fnv1a64(bytes.substr(0, body))) {
    r.fail("checksum mismatch: the file is damaged or truncated");
  }
  r.end_at(body);
  return r;
}

// identity, n_pairs, pairs_done: the header of both kinds' bodies.
template <typename Checkpoint>
void put_progress(Writer& w, const Checkpoint& cp) {
  w.put<std::uint64_t>(cp.identity);
  w.put<std::uint64_t>(cp.n_pairs);
  w.put<std::uint64_t>(cp.pairs_done);
}

template <typename Checkpoint>
void get_progress(Reader& r, Checkpoint& cp) {
  cp.identity = r.get<std::uint64_t>("identity");
  cp.n_pairs = r.get<std::uint64_t>("n_pairs");
  cp.pairs_done = r.get<std::uint64_t>("pairs_done");
  if (cp.pairs_done > cp.n_pairs) {
    r.fail(std::to_string(cp.pairs_done) + " pairs done of " + std::to_string(cp.n_pairs));
  }
}

void expect_end(const Reader& r) {
  if (r.left() != 0) {
    r.fail(std::to_string(r.left()) + " unread bytes before the checksum");
  }
}

}  // namespace

void save_extraction_checkpoint(const std::string& path, const ExtractionCheckpoint& checkpoint) {
  Writer w = start_file(kMagic);
  put_progress(w, checkpoint);
  w.put<std::uint64_t>(checkpoint.sums.size());
  for (const auto& s : checkpoint.sums) {
    w.put<std::uint64_t>(s.k.size());
    for (std::size_t il = 0; il < s.k.size(); ++il) {
      w.put<std::uint64_t>(s.count.at(il));
      w.put_doubles(s.k[il]);
      w.put_doubles(s.v.at(il));
    }
  }
  finish_file(w, path);
}

ExtractionCheckpoint load_extraction_checkpoint(const std::string& path) {
  const std::string bytes = read_text_file(path, "extraction checkpoint");
  Reader r = open_file(bytes, path, kMagic, "an extraction checkpoint");
  ExtractionCheckpoint cp;
  get_progress(r, cp);
  cp.sums.resize(r.bounded("positions", kMaxPositions));
  for (auto& s : cp.sums) {
    const std::uint64_t n_layer = r.bounded("layers", kMaxLayers);
    for (std::uint64_t il = 0; il < n_layer; ++il) {
      s.count.push_back(r.bounded("count", 2 * cp.pairs_done));
      s.k.push_back(r.doubles("K row"));
      s.v.push_back(r.doubles("V row"));
    }
  }
  expect_end(r);
  return cp;
}

void save_residual_checkpoint(const std::string& path, const ResidualCheckpoint& checkpoint) {
  Writer w = start_file(kResidualMagic);
  put_progress(w, checkpoint);
  w.put<std::uint64_t>(checkpoint.sum.size());
  for (const auto& row : checkpoint.sum) {
    w.put_doubles(row);
  }
  finish_file(w, path);
}

ResidualCheckpoint load_residual_checkpoint(const std::string& path) {
  const std::string bytes = read_text_file(path, "residual extraction checkpoint");
  Reader r = open_file(bytes, path, kResidualMagic, "a residual extraction checkpoint");
  ResidualCheckpoint cp;
  get_progress(r, cp);
  cp.sum.resize(r.bounded("layers", kMaxLayers));
  for (auto& row : cp.sum) {
    row = r.doubles("residual row");
  }
  expect_end(r);
  return cp;
}

}  // namespace kvsteer
