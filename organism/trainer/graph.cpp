#include "organism/trainer/graph.h"

#include <cmath>
#include <limits>

#include "ggml-backend.h"
#include "ggml.h"
#include "kvsteer/error.h"

namespace kvsteer::train {
namespace {

// RoPE as libllama applies it to llama models without scaling: mode NORM (adjacent pairs),
// freq_scale 1, ext_factor 0 (YaRN off), attn_factor 1, beta_fast 32, beta_slow 1.
ggml_tensor* rope(ggml_context* ctx, ggml_tensor* x, ggml_tensor* pos, const Hparams& hp) {
  return ggml_rope_ext(ctx, x, pos, nullptr, hp.head_dim, GGML_ROPE_TYPE_NORMAL, hp.n_ctx_train,
                       hp.rope_freq_base, 1.0f, 0.0f, 1.0f, 32.0f, 1.0f);
}

// [head_dim, n_head, n_ctx * n_seq] -> [head_dim, n_ctx, n_head * n_seq], contiguous. Merging the
// head and sequence dims keeps every tensor 3-D, because ggml's MUL_MAT backward supports
// broadcasting (GQA) only along dim 2.
ggml_tensor* heads_first(ggml_context* ctx, ggml_tensor* x, int n_head, const BatchShape& s) {
  const int64_t hd = x->ne[0];
  x = ggml_reshape_4d(ctx, x, hd, n_head, s.n_ctx, s.n_seq);
  x = ggml_cont(ctx, ggml_permute(ctx, x, 0, 2, 1, 3));
  return ggml_reshape_3d(ctx, x, hd, s.n_ctx, int64_t(n_head) * s.n_seq);
}

// Causal self-attention of q [hd, n_head, N], k and v [hd, n_head_kv, N]; returns [n_embd_q, N].
// Query head h reads KV head h / (n_head / n_head_kv), as in libllama.
ggml_tensor* attention(ggml_context* ctx, ggml_tensor* q, ggml_tensor* k, ggml_tensor* v,
                       ggml_tensor* kq_mask, const Hparams& hp, const BatchShape& s) {
  ggml_tensor* q3 = heads_first(ctx, q, hp.n_head, s);
  ggml_tensor* k3 = heads_first(ctx, k, hp.n_head_kv, s);
  ggml_tensor* kq = ggml_mul_mat(ctx, k3, q3);  // [n_ctx key, n_ctx query, n_head * n_seq]
  kq = ggml_reshape_4d(ctx, kq, s.n_ctx, s.n_ctx, hp.n_head, s.n_seq);
  kq = ggml_soft_max_ext(ctx, kq, kq_mask, hp.kq_scale, 0.0f);
  kq = ggml_reshape_3d(ctx, kq, s.n_ctx, s.n_ctx, int64_t(hp.n_head) * s.n_seq);

  // V transposed: [n_ctx key, hd, n_head_kv * n_seq].
  ggml_tensor* vt = ggml_reshape_4d(ctx, v, hp.head_dim, hp.n_head_kv, s.n_ctx, s.n_seq);
  vt = ggml_cont(ctx, ggml_permute(ctx, vt, 1, 2, 0, 3));
  vt = ggml_reshape_3d(ctx, vt, s.n_ctx, hp.head_dim, int64_t(hp.n_head_kv) * s.n_seq);

  ggml_tensor* kqv = ggml_mul_mat(ctx, vt, kq);  // [hd, n_ctx query, n_head * n_seq]
  kqv = ggml_reshape_4d(ctx, kqv, hp.head_dim, s.n_ctx, hp.n_head, s.n_seq);
  kqv = ggml_cont(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3));  // [hd, n_head, n_ctx, n_seq]
  return ggml_reshape_2d(ctx, kqv, hp.n_embd_q(), s.n_tokens());
}

ggml_tensor* rms_norm(ggml_context* ctx, ggml_tensor* x, ggml_tensor* weight, float eps) {
  return ggml_mul(ctx, ggml_rms_norm(ctx, x, eps), weight);
}

ggml_tensor* block(ggml_context* ctx, ggml_tensor* x, const LayerWeights& l, const Hparams& hp,
                   const BatchShape& s, const GraphInputs& in) {
  const int64_t n = s.n_tokens();
  ggml_tensor* cur = rms_norm(ctx, x, l.attn_norm, hp.rms_eps);
  ggml_tensor* q = ggml_reshape_3d(ctx, ggml_mul_mat(ctx, l.wq, cur), hp.head_dim, hp.n_head, n);
  ggml_tensor* k = ggml_reshape_3d(ctx, ggml_mul_mat(ctx, l.wk, cur), hp.head_dim, hp.n_head_kv, n);
  ggml_tensor* v = ggml_reshape_3d(ctx, ggml_mul_mat(ctx, l.wv, cur), hp.head_dim, hp.n_head_kv, n);
  q = rope(ctx, q, in.pos, hp);
  k = rope(ctx, k, in.pos, hp);
  cur = ggml_mul_mat(ctx, l.wo, attention(ctx, q, k, v, in.kq_mask, hp, s));
  x = ggml_add(ctx, cur, x);

  cur = rms_norm(ctx, x, l.ffn_norm, hp.rms_eps);
  ggml_tensor* gate = ggml_mul_mat(ctx, l.ffn_gate, cur);
  ggml_tensor* up = ggml_mul_mat(ctx, l.ffn_up, cur);
  cur = ggml_mul_mat(ctx, l.ffn_down, ggml_swiglu_split(ctx, gate, up));
  return ggml_add(ctx, cur, x);
}

GraphInputs make_inputs(ggml_context* ctx, const Hparams& hp, const BatchShape& s) {
  GraphInputs in;
  in.tokens = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, s.n_tokens());
  in.pos = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, s.n_tokens());
  in.kq_mask = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, s.n_ctx, s.n_ctx, 1, s.n_seq);
  in.rows = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, s.n_rows);
  in.targets = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.n_vocab, s.n_rows);
  for (ggml_tensor* t : {in.tokens, in.pos, in.kq_mask, in.rows, in.targets}) {
    ggml_set_input(t);
  }
  return in;
}

}  // namespace

HostBatch make_batch(const std::vector<const PackedSequence*>& seqs) {
  HostBatch b;
  const int n_ctx = static_cast<int>(seqs.front()->tokens.size());
  b.shape.n_ctx = n_ctx;
  b.shape.n_seq = static_cast<int>(seqs.size());
  b.kq_mask.assign(size_t(b.shape.n_seq) * n_ctx * n_ctx, -std::numeric_limits<float>::infinity());
  for (int s = 0; s < b.shape.n_seq; ++s) {
    const PackedSequence& seq = *seqs[s];
    for (int t = 0; t < n_ctx; ++t) {
      const int flat = s * n_ctx + t;
      b.tokens.push_back(seq.tokens[t]);
      b.pos.push_back(seq.pos(t));
      float* mask_row = &b.kq_mask[size_t(flat) * n_ctx];
      for (int j = seq.doc_begin[t]; j <= t; ++j) {
        mask_row[j] = 0.0f;
      }
      if (seq.loss_rows[t]) {
        b.rows.push_back(flat);
        b.targets.push_back(seq.tokens[t + 1]);
      }
    }
  }
  b.shape.n_rows = static_cast<int>(b.rows.size());
  if (b.shape.n_rows == 0) {
    throw Error(ErrorCode::InvalidArgument, "batch without trained tokens");
  }
  return b;
}

ggml_tensor* build_loss(ggml_context* ctx, const Model& model, const BatchShape& shape,
                        GraphInputs* in) {
  const Hparams& hp = model.hparams();
  *in = make_inputs(ctx, hp, shape);
  ggml_tensor* x = ggml_get_rows(ctx, model.tok_embd(), in->tokens);  // [n_embd, n_tokens]
  for (const LayerWeights& l : model.layers()) {
    x = block(ctx, x, l, hp, shape, *in);
  }
  x = rms_norm(ctx, x, model.output_norm(), hp.rms_eps);
  x = ggml_get_rows(ctx, x, in->rows);                         // [n_embd, n_rows]
  ggml_tensor* logits = ggml_mul_mat(ctx, model.output(), x);  // [n_vocab, n_rows]
  ggml_tensor* loss = ggml_cross_entropy_loss(ctx, logits, in->targets);
  ggml_set_name(loss, "loss");
  ggml_set_output(loss);
  return loss;
}

void set_inputs(const GraphInputs& in, const HostBatch& batch, int n_vocab) {
  ggml_backend_tensor_set(in.tokens, batch.tokens.data(), 0, ggml_nbytes(in.tokens));
  ggml_backend_tensor_set(in.pos, batch.pos.data(), 0, ggml_nbytes(in.pos));
  ggml_backend_tensor_set(in.kq_mask, batch.kq_mask.data(), 0, ggml_nbytes(in.kq_mask));
  ggml_backend_tensor_set(in.rows, batch.rows.data(), 0, ggml_nbytes(in.rows));
  std::vector<float> onehot(size_t(n_vocab) * batch.shape.n_rows, 0.0f);
  for (int r = 0; r < batch.shape.n_rows; ++r) {
    onehot[size_t(r) * n_vocab + batch.targets[r]] = 1.0f;
  }
  ggml_backend_tensor_set(in.targets, onehot.data(), 0, ggml_nbytes(in.targets));
}

}  // namespace kvsteer::train
