// Writes the binary seed corpora of the fuzz targets: steering-vector files (corpus/vector_file)
// and state blobs of real llama.cpp sessions with the shape prefix fuzz_seq_blob reads
// (corpus/seq_blob), and extraction checkpoints of both kinds (corpus/checkpoint). Text seeds are
// written by hand.
// Usage: kvsteer-fuzz-seeds OUT_DIR STORIES_GGUF TINY_MODELS_DIR
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kvsteer/backend.h"
#include "kvsteer/checkpoint_file.h"
#include "kvsteer/file_io.h"
#include "kvsteer/session.h"
#include "kvsteer/vector_file.h"
#include "llama/session_impl.h"

namespace {

using namespace kvsteer;

void write_bytes(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

void vector_seeds(const std::string& dir) {
  std::filesystem::create_directories(dir);
  int n = 0;
  for (const bool k_rotated : {false, true}) {
    for (const bool keys : {false, true}) {
      SteeringVector v;
      v.model = {"llama", 2, 4, 2, 8, 2, 2, 4, 4, "norm", 32, "00000000000000ff"};
      v.info.k_rotated = k_rotated;
      v.info.source = "fuzz seed";
      v.info.kv_type_k = k_rotated ? "q8_0" : "f16";
      v.k.resize(2);
      v.v.resize(2);
      for (std::size_t il = 1; il < 2; ++il) {
        v.v[il] = {0.5f, -1.0f, 2.0f, 0.0f};
        if (keys) v.k[il] = {1e-3f, 3.0f, -7.5f, 65504.0f};
      }
      save_steering_vector(dir + "/seed-" + std::to_string(n++) + ".gguf", v);
    }
  }
}

// Each checkpoint twice, in the two forms fuzz_checkpoint reads: the whole file after a selector
// byte (bit 0: residual kind), and its body alone after a selector with bit 1 set, which the
// target seals with the header and checksum again.
void checkpoint_seed(const std::string& dir, const std::string& name, bool residual,
                     const std::string& path) {
  const std::string file = read_text_file(path);
  constexpr std::size_t kHeader = 16, kChecksum = 8;  // magic, version, byte order | FNV-1a
  const std::uint8_t kind = residual ? 1 : 0;
  std::vector<std::uint8_t> whole{kind}, body{static_cast<std::uint8_t>(kind | 2)};
  whole.insert(whole.end(), file.begin(), file.end());
  body.insert(body.end(), file.begin() + kHeader, file.end() - kChecksum);
  write_bytes(dir + "/" + name + ".bin", whole);
  write_bytes(dir + "/" + name + "-body.bin", body);
}

void checkpoint_seeds(const std::string& dir) {
  std::filesystem::create_directories(dir);
  const std::string scratch = dir + "/.scratch";
  ExtractionCheckpoint kv;
  kv.identity = 0x0123456789abcdefULL;
  kv.n_pairs = 5;
  kv.pairs_done = 2;
  // Two positions; layer 0 holds no cell (an empty row, count 0), as an SWA layer may not.
  for (const double scale : {1.0, -0.5}) {
    kv.sums.push_back({{{}, {scale, 2.0, -3.0, 0.25}}, {{}, {0.5, scale, 1e-3, 8.0}}, {0, 4}});
  }
  save_extraction_checkpoint(scratch, kv);
  checkpoint_seed(dir, "kv-2-of-5", false, scratch);
  save_extraction_checkpoint(scratch, ExtractionCheckpoint{7, 3, 0, {}});
  checkpoint_seed(dir, "kv-none-done", false, scratch);

  ResidualCheckpoint res;
  res.identity = 0xfedcba9876543210ULL;
  res.n_pairs = 4;
  res.pairs_done = 4;
  res.sum = {{1.0, -2.0, 0.5}, {0.0, 3.5, -1e6}, {2.0, 2.0, 2.0}};
  save_residual_checkpoint(scratch, res);
  checkpoint_seed(dir, "residual-4-of-4", true, scratch);
  std::filesystem::remove(scratch);
}

struct BlobCase {
  std::string model;
  KvType type_k, type_v;
  FlashAttn fa;
  const char* name;
};

void blob_seeds(const std::string& dir, const std::string& stories, const std::string& tiny) {
  std::filesystem::create_directories(dir);
  const std::vector<BlobCase> cases = {
      {stories, KvType::F16, KvType::F16, FlashAttn::On, "stories-f16-fa"},
      {stories, KvType::F16, KvType::F16, FlashAttn::Off, "stories-f16-vtrans"},
      {stories, KvType::F32, KvType::F32, FlashAttn::Off, "stories-f32-vtrans"},
      {stories, KvType::BF16, KvType::BF16, FlashAttn::On, "stories-bf16"},
      {tiny + "/llama-f32.gguf", KvType::Q8_0, KvType::Q8_0, FlashAttn::On, "llama-q8_0"},
      {tiny + "/llama-f32.gguf", KvType::Q4_0, KvType::Q4_0, FlashAttn::On, "llama-q4_0"},
      {tiny + "/gemma2-f32.gguf", KvType::F16, KvType::F16, FlashAttn::On, "gemma2-iswa"},
  };
  for (const auto& c : cases) {
    auto model = load_model(c.model);
    SessionParams p;
    p.n_ctx = 64;
    p.n_batch = 64;
    p.n_threads = 1;
    p.type_k = c.type_k;
    p.type_v = c.type_v;
    p.flash_attn = c.fa;
    Session session(model, p);
    const std::vector<Token> tokens = {1, 2};
    session.decode(0, tokens);
    const std::vector<std::uint8_t> blob = session.sequence_state(0);
    std::vector<std::uint8_t> seed;
    const auto& shapes = session.impl().block_shapes;
    seed.push_back(static_cast<std::uint8_t>(shapes.size()));
    for (const auto& shape : shapes) {
      seed.push_back(static_cast<std::uint8_t>(shape.n_embd_k.size()));
      for (std::size_t l = 0; l < shape.n_embd_k.size(); ++l) {
        for (std::uint32_t w : {shape.n_embd_k[l], shape.n_embd_v[l]}) {
          seed.push_back(static_cast<std::uint8_t>(w & 0xff));
          seed.push_back(static_cast<std::uint8_t>(w >> 8));
        }
      }
    }
    seed.push_back(2);  // edit magnitude index: 1.0
    seed.insert(seed.end(), blob.begin(), blob.end());
    write_bytes(dir + "/" + c.name + ".bin", seed);
    std::printf("%s: %zu bytes\n", c.name, seed.size());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: kvsteer-fuzz-seeds OUT_DIR STORIES_GGUF TINY_MODELS_DIR\n");
    return 2;
  }
  Backend backend(LogLevel::Error);
  const std::string out = argv[1];
  vector_seeds(out + "/vector_file");
  checkpoint_seeds(out + "/checkpoint");
  blob_seeds(out + "/seq_blob", argv[2], argv[3]);
  return 0;
}
