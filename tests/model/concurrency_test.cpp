// The thread-safety contract of the public headers: one Model shared by Sessions on several
// threads, each thread steering and generating in its own Session, while others load and save
// vector files. Each thread's output must equal the same work done alone. Run under the tsan
// preset (docs/RELIABILITY.md) this is the data-race check of that contract.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "kvsteer/generation.h"
#include "kvsteer/session.h"
#include "kvsteer/vector_file.h"
#include "support/model_cases.h"
#include "support/test_env.h"

namespace kvsteer {
namespace {

SteeringVector synthetic_vector(const Model& model) {
  SteeringVector v;
  v.model = model.fingerprint();
  v.info.source = "concurrency test";
  unsigned x = 12345u;
  auto next = [&x] {
    x = x * 1103515245u + 12345u;
    return static_cast<float>((x >> 9) % 2001) / 1000.0f - 1.0f;
  };
  for (std::int32_t il = 0; il < v.model.n_layer; ++il) {
    std::vector<float> k(static_cast<std::size_t>(v.model.n_embd_k_gqa));
    std::vector<float> val(static_cast<std::size_t>(v.model.n_embd_v_gqa));
    for (float& f : k) f = next();
    for (float& f : val) f = next();
    v.k.push_back(k);
    v.v.push_back(val);
  }
  return v;
}

std::vector<Token> steered_tokens(const std::shared_ptr<const Model>& model,
                                  const SteeringVector& vec, const std::vector<Token>& prompt) {
  Session s(model, test::session_params(test::ModelCase{"stories260K"}));
  SteeringParams sp;
  sp.coef_k = 0.5f;
  sp.coef_v = 2.0f;
  GenerationParams gp;
  gp.n_predict = 12;
  gp.stop_at_eog = false;
  return generate(s, GenerationRequest{0, prompt, &vec, sp}, gp).tokens;
}

TEST(Concurrency, SessionsOnThreadsShareOneModelAndEqualLoneRuns) {
  const auto model = test::shared_model("stories260K");
  const SteeringVector vec = synthetic_vector(*model);
  std::vector<std::vector<Token>> prompts, expected;
  for (unsigned t = 0; t < 3; ++t) {
    prompts.push_back(test::sample_prompt(*model, 10, t));
    expected.push_back(steered_tokens(model, vec, prompts.back()));
  }
  test::TempDir dir;
  std::vector<std::vector<std::vector<Token>>> got(prompts.size());
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < prompts.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round)
        got[t].push_back(steered_tokens(model, vec, prompts[t]));
    });
  }
  // Vector files on two more threads: saves of one path and loads of another, concurrently.
  save_steering_vector(dir.file("read.gguf"), vec);
  threads.emplace_back([&] {
    for (int i = 0; i < 10; ++i) save_steering_vector(dir.file("write.gguf"), vec);
  });
  threads.emplace_back([&] {
    for (int i = 0; i < 10; ++i) EXPECT_EQ(load_steering_vector(dir.file("read.gguf")).v, vec.v);
  });
  for (auto& th : threads) th.join();
  for (std::size_t t = 0; t < prompts.size(); ++t) {
    for (const auto& tokens : got[t]) EXPECT_EQ(tokens, expected[t]) << "thread " << t;
  }
  EXPECT_EQ(load_steering_vector(dir.file("write.gguf")).k, vec.k);
}

}  // namespace
}  // namespace kvsteer
