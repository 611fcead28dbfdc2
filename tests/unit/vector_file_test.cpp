#include "kvsteer/vector_file.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <thread>
#include <vector>

#include "ggml.h"
#include "gguf.h"
#include "kvsteer/error.h"
#include "support/test_env.h"

namespace kvsteer {
namespace {

SteeringVector sample_vector() {
  SteeringVector v;
  v.model.arch = "llama";
  v.model.n_layer = 3;
  v.model.n_head = 4;
  v.model.n_head_kv = 2;
  v.model.n_embd = 16;
  v.model.n_embd_head_k = 4;
  v.model.n_embd_head_v = 4;
  v.model.n_embd_k_gqa = 8;
  v.model.n_embd_v_gqa = 8;
  v.model.rope_type = "norm";
  v.model.n_vocab = 100;
  v.model.vocab_hash = "0123456789abcdef";
  v.info.position = -1;
  v.info.n_pairs = 7;
  v.info.n_shots = 3;
  v.info.traces_sha256 = "feed";
  v.info.chat_template = "chatml";
  v.info.kv_type_k = "f16";
  v.info.source = "unit test";
  for (int il = 0; il < 3; ++il) {
    std::vector<float> k(8), val(8);
    for (int j = 0; j < 8; ++j) {
      k[j] = 0.25f * static_cast<float>(il * 8 + j) - 1.0f;
      val[j] = -k[j] * 3.0f;
    }
    v.k.push_back(k);
    v.v.push_back(val);
  }
  return v;
}

Error load_error(const std::string& path) {
  try {
    load_steering_vector(path);
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "loading " << path << " did not fail";
  return Error(ErrorCode::Backend, "");
}

// Rewrites a saved vector file through the gguf API, letting `edit` change the metadata or the
// tensors first. (A gguf_context read from a file cannot be written back as is: its tensor infos do
// not point at the loaded data, so the copy is rebuilt like save_steering_vector builds files.)
template <typename Edit>
void rewrite(const std::string& in, const std::string& out, Edit edit) {
  ggml_context* tensors = nullptr;
  gguf_context* g = gguf_init_from_file(in.c_str(), {false, &tensors});
  ASSERT_NE(g, nullptr);
  gguf_context* copy = gguf_init_empty();
  gguf_set_kv(copy, g);
  edit(copy, tensors);
  for (ggml_tensor* t = ggml_get_first_tensor(tensors); t != nullptr;
       t = ggml_get_next_tensor(tensors, t)) {
    if (std::string(ggml_get_name(t)).rfind("kvsteer.", 0) == 0) gguf_add_tensor(copy, t);
  }
  ASSERT_TRUE(gguf_write_to_file(copy, out.c_str(), false));
  gguf_free(copy);
  gguf_free(g);
  ggml_free(tensors);
}

TEST(VectorFile, RefusesNewerFormatVersion) {
  test::TempDir dir;
  save_steering_vector(dir.file("v.gguf"), sample_vector());
  rewrite(dir.file("v.gguf"), dir.file("new.gguf"), [](gguf_context* g, ggml_context*) {
    gguf_set_val_u32(g, "kvsteer.format_version", kVectorFormatVersion + 1);
  });
  const Error e = load_error(dir.file("new.gguf"));
  EXPECT_EQ(e.code(), ErrorCode::Format);
  EXPECT_NE(std::string(e.what()).find("newer"), std::string::npos) << e.what();
}

TEST(VectorFile, RefusesMissingKeysAndForeignTensors) {
  test::TempDir dir;
  save_steering_vector(dir.file("v.gguf"), sample_vector());
  rewrite(dir.file("v.gguf"), dir.file("nokey.gguf"),
          [](gguf_context* g, ggml_context*) { gguf_remove_key(g, "kvsteer.model.n_embd_k_gqa"); });
  EXPECT_NE(std::string(load_error(dir.file("nokey.gguf")).what()).find("n_embd_k_gqa"),
            std::string::npos);
  rewrite(dir.file("v.gguf"), dir.file("wrongtype.gguf"), [](gguf_context* g, ggml_context*) {
    gguf_set_val_str(g, "kvsteer.model.n_layer", "three");
  });
  EXPECT_NE(std::string(load_error(dir.file("wrongtype.gguf")).what()).find("type"),
            std::string::npos);
  rewrite(dir.file("v.gguf"), dir.file("extra.gguf"), [](gguf_context* g, ggml_context* t) {
    ggml_tensor* extra = ggml_get_tensor(t, "kvsteer.k.0");
    ggml_set_name(extra, "kvsteer.k.7");  // a layer the model does not have
    (void)g;
  });
  EXPECT_EQ(load_error(dir.file("extra.gguf")).code(), ErrorCode::Format);
  rewrite(dir.file("v.gguf"), dir.file("nan.gguf"), [](gguf_context*, ggml_context* t) {
    static_cast<float*>(ggml_get_tensor(t, "kvsteer.v.1")->data)[3] = std::nanf("");
  });
  EXPECT_NE(std::string(load_error(dir.file("nan.gguf")).what()).find("NaN"), std::string::npos);
}

TEST(VectorFile, RoundTripIsExact) {
  test::TempDir dir;
  const auto v = sample_vector();
  save_steering_vector(dir.file("v.gguf"), v);
  const auto back = load_steering_vector(dir.file("v.gguf"));
  EXPECT_EQ(back.model.mismatch(v.model), "");
  EXPECT_EQ(back.k, v.k);
  EXPECT_EQ(back.v, v.v);
  EXPECT_EQ(back.info.n_pairs, 7u);
  EXPECT_EQ(back.info.n_shots, 3u);
  EXPECT_EQ(back.info.position, -1);
  EXPECT_EQ(back.info.chat_template, "chatml");
  EXPECT_EQ(back.info.source, "unit test");
}

TEST(VectorFile, KeepsEmptyLayersEmpty) {
  test::TempDir dir;
  auto v = sample_vector();
  v.k[0].clear();
  v.v[0].clear();
  save_steering_vector(dir.file("v.gguf"), v);
  const auto back = load_steering_vector(dir.file("v.gguf"));
  EXPECT_TRUE(back.k[0].empty());
  EXPECT_EQ(back.k[2], v.k[2]);
}

TEST(VectorFile, RefusesMissingAndCorruptFiles) {
  test::TempDir dir;
  EXPECT_EQ(load_error(dir.file("absent.gguf")).code(), ErrorCode::NotFound);
  test::write_file(dir.file("junk.gguf"), "this is not gguf");
  EXPECT_EQ(load_error(dir.file("junk.gguf")).code(), ErrorCode::Format);
  save_steering_vector(dir.file("v.gguf"), sample_vector());
  const std::string bytes = test::read_file(dir.file("v.gguf"));
  test::write_file(dir.file("cut.gguf"), bytes.substr(0, bytes.size() - 10));
  EXPECT_EQ(load_error(dir.file("cut.gguf")).code(), ErrorCode::Format);
}

TEST(VectorFile, RefusesInconsistentShapes) {
  test::TempDir dir;
  auto v = sample_vector();
  v.k[1].push_back(1.0f);
  EXPECT_THROW(save_steering_vector(dir.file("v.gguf"), v), Error);
  EXPECT_FALSE(std::filesystem::exists(dir.file("v.gguf")));
}

TEST(VectorFile, WriteIsAtomic) {
  test::TempDir dir;
  save_steering_vector(dir.file("v.gguf"), sample_vector());
  const std::string before = test::read_file(dir.file("v.gguf"));
  auto bad = sample_vector();
  bad.v[2].pop_back();
  EXPECT_THROW(save_steering_vector(dir.file("v.gguf"), bad), Error);
  EXPECT_EQ(test::read_file(dir.file("v.gguf")), before);
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    EXPECT_EQ(entry.path().filename(), "v.gguf");
  }
}

TEST(VectorFile, RefusesToSaveNonFiniteValues) {
  test::TempDir dir;
  auto v = sample_vector();
  v.v[1][3] = std::numeric_limits<float>::infinity();
  try {
    save_steering_vector(dir.file("v.gguf"), v);
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("layer 1"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir.file("v.gguf")));
}

// Found by fuzz/fuzz_vector_file.cpp: a header declaring a tensor of ~10^17 bytes made ggml
// allocate the data section before reading it, and ggml_init aborts when that fails.
TEST(VectorFile, RefusesAHeaderClaimingHugeTensors) {
  const auto input = std::filesystem::path(__FILE__).parent_path() /
                     "../../fuzz/regressions/vector_file/huge-tensor-size.gguf";
  ASSERT_TRUE(std::filesystem::exists(input)) << input;
  EXPECT_EQ(load_error(input.string()).code(), ErrorCode::Format);
}

TEST(VectorFile, RefusesATensorBeyondTheEndOfTheFile) {
  test::TempDir dir;
  save_steering_vector(dir.file("v.gguf"), sample_vector());
  const std::string bytes = test::read_file(dir.file("v.gguf"));
  // The header is intact, the last row's data is cut: the loader reads rows itself and must see it.
  test::write_file(dir.file("cut.gguf"), bytes.substr(0, bytes.size() - 4));
  const Error e = load_error(dir.file("cut.gguf"));
  EXPECT_EQ(e.code(), ErrorCode::Format);
}

TEST(VectorFile, ConcurrentSavesOfOnePathLeaveOneWholeFile) {
  test::TempDir dir;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&dir, t] {
      auto v = sample_vector();
      v.info.n_pairs = static_cast<std::uint32_t>(t);
      for (int i = 0; i < 10; ++i) save_steering_vector(dir.file("v.gguf"), v);
    });
  }
  for (auto& th : threads) th.join();
  const SteeringVector loaded = load_steering_vector(dir.file("v.gguf"));
  EXPECT_EQ(loaded.k, sample_vector().k);
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    EXPECT_EQ(entry.path().filename(), "v.gguf");
  }
}

}  // namespace
}  // namespace kvsteer
