#include "organism/trainer/llama_loss.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "kvsteer/error.h"
#include "llama-cpp.h"
#include "llama.h"

namespace kvsteer::train {
namespace {

// Keeps libllama quiet except for errors.
void quiet_log(ggml_log_level level, const char* text, void* /*user*/) noexcept {
  if (level == GGML_LOG_LEVEL_ERROR) {
    std::fputs(text, stderr);
  }
}

// -log softmax(logits)[target], in double.
double nll(const float* logits, int n_vocab, int32_t target) {
  double max = logits[0];
  for (int i = 1; i < n_vocab; ++i) {
    max = std::max(max, double(logits[i]));
  }
  double sum = 0.0;
  for (int i = 0; i < n_vocab; ++i) {
    sum += std::exp(double(logits[i]) - max);
  }
  return std::log(sum) + max - double(logits[target]);
}

llama_context_ptr make_context(llama_model* model, int n_ctx, int n_threads) {
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = static_cast<uint32_t>(n_ctx);
  cp.n_batch = cp.n_ubatch = static_cast<uint32_t>(n_ctx);
  cp.n_seq_max = 1;
  cp.n_threads = cp.n_threads_batch = n_threads;
  cp.type_k = cp.type_v = GGML_TYPE_F32;
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  cp.no_perf = true;
  llama_context_ptr ctx(llama_init_from_model(model, cp));
  if (!ctx) {
    throw Error(ErrorCode::InvalidArgument, "libllama could not create a context");
  }
  return ctx;
}

// Adds the record's trained-token NLLs to `out`.
void score_record(llama_context* ctx, const Record& rec, int n_vocab, LlamaLoss* out, double* sum) {
  const auto n = static_cast<int32_t>(rec.tokens.size());
  llama_batch batch = llama_batch_init(n, 0, 1);
  for (int32_t i = 0; i < n; ++i) {
    batch.token[i] = rec.tokens[i];
    batch.pos[i] = i;
    batch.n_seq_id[i] = 1;
    batch.seq_id[i][0] = 0;
    batch.logits[i] = 1;
  }
  batch.n_tokens = n;
  llama_memory_clear(llama_get_memory(ctx), true);
  const int32_t rc = llama_decode(ctx, batch);
  if (rc != 0) {
    llama_batch_free(batch);
    throw Error(ErrorCode::InvalidArgument, "llama_decode returned " + std::to_string(rc));
  }
  for (int32_t i = 1; i < n; ++i) {
    if (rec.loss_mask[i]) {
      *sum += nll(llama_get_logits_ith(ctx, i - 1), n_vocab, rec.tokens[i]);
      ++out->n_rows;
    }
  }
  llama_batch_free(batch);
}

}  // namespace

LlamaLoss llama_masked_loss(const std::string& model_path, const std::vector<Record>& records,
                            int n_ctx, int n_threads) {
  llama_log_set(quiet_log, nullptr);
  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  llama_model_ptr model(llama_model_load_from_file(model_path.c_str(), mp));
  if (!model) {
    throw Error(ErrorCode::Io, "libllama could not load " + model_path);
  }
  const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model.get()));
  llama_context_ptr ctx = make_context(model.get(), n_ctx, n_threads);
  LlamaLoss out;
  double sum = 0.0;
  for (const Record& rec : records) {
    if (rec.tokens.size() > size_t(n_ctx)) {
      throw Error(ErrorCode::InvalidArgument, "record longer than n_ctx");
    }
    if (rec.tokens.size() >= 2) {
      score_record(ctx.get(), rec, n_vocab, &out, &sum);
    }
  }
  out.loss = out.n_rows > 0 ? sum / double(out.n_rows) : 0.0;
  return out;
}

}  // namespace kvsteer::train
