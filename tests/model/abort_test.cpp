// SessionParams::abort_callback: a frontend (the Python package's Ctrl-C) stops a decode, and
// the session stays usable with the sequence as it was before the stopped call.
#include <gtest/gtest.h>

#include <atomic>

#include "kvsteer/error.h"
#include "kvsteer/model.h"
#include "kvsteer/session.h"
#include "support/test_env.h"

namespace kvsteer {
namespace {

SessionParams small_params(std::function<bool()> abort_callback) {
  SessionParams p;
  p.n_ctx = 256;
  p.n_batch = 64;
  p.n_threads = 1;
  p.type_k = p.type_v = KvType::F32;
  p.abort_callback = std::move(abort_callback);
  return p;
}

TEST(SessionAbort, StopsDecodeAndKeepsTheSequence) {
  auto model = load_model(test::stories_model_path());
  std::atomic<bool> stop{false};
  std::atomic<int> asked{0};
  Session session(model, small_params([&] {
                    ++asked;
                    return stop.load();
                  }));
  const std::vector<Token> prompt = model->tokenize("Once upon a time, there was", true);
  session.decode(0, prompt);
  EXPECT_GT(asked.load(), 0) << "libllama never asked the callback";
  const Pos before = session.next_pos(0);

  stop = true;
  const std::vector<Token> more = model->tokenize(" a little girl", false);
  try {
    session.decode(0, more);
    FAIL() << "decode was not stopped";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Cancelled) << e.what();
  }
  EXPECT_EQ(session.next_pos(0), before) << "the stopped call's tokens stayed in the cache";

  // Usable afterwards: the same tokens give the logits of a session that was never stopped.
  stop = false;
  session.decode(0, more);
  Session fresh(model, small_params({}));
  fresh.decode(0, prompt);
  fresh.decode(0, more);
  const auto a = session.logits(0);
  const auto b = fresh.logits(0);
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << "logit " << i;
}

}  // namespace
}  // namespace kvsteer
