#include "organism/trainer/backward.h"

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include <algorithm>
#include <map>
#include <string>

#include "ggml.h"
#include "kvsteer/error.h"

namespace kvsteer::train {
namespace {

// ggml-alloc may compute SOFT_MAX_BACK in place over its src[1], the forward softmax output y,
// once y has no other pending consumer (ggml_op_can_inplace lists SOFT_MAX_BACK). The CPU kernel
// copies dy into dst before it multiplies by y, so in place over y it returns (dy - y.dy)^2
// instead of y * (dy - y.dy), and the q/k gradients (and everything below the first attention)
// come out wrong. Marking y as an output keeps the allocator from reusing it. Found by the
// finite-difference test (tests/trainer_gradient_test.cpp).
void protect_softmax_outputs(ggml_cgraph* graph) {
  for (int i = 0; i < ggml_graph_n_nodes(graph); ++i) {
    ggml_tensor* node = ggml_graph_node(graph, i);
    if (node->op == GGML_OP_SOFT_MAX_BACK) {
      ggml_set_output(node->src[1]);
    }
  }
}

// Copies the tile [i0_begin, i0_end) x [i1_begin, i1_end) of the strided F32 view `s` into the
// contiguous rows `d` (row stride d_nb1 bytes).
void copy_tile(char* d, size_t d_nb1, const char* s, const size_t* s_nb, int64_t i0_begin,
               int64_t i0_end, int64_t i1_begin, int64_t i1_end) {
  int64_t i1_vec = i1_begin;
#if defined(__SSE__)
  // The usual source is the transpose of a contiguous matrix (s_nb[1] == 4): transpose 4 x 4
  // blocks in registers, reading and writing 16-byte rows.
  if (s_nb[1] == sizeof(float)) {
    const int64_t i0_vec_end = i0_begin + (i0_end - i0_begin) / 4 * 4;
    for (; i1_vec + 4 <= i1_end; i1_vec += 4) {
      for (int64_t i0 = i0_begin; i0 < i0_vec_end; i0 += 4) {
        const char* src = s + i0 * s_nb[0] + i1_vec * s_nb[1];
        __m128 r0 = _mm_loadu_ps(reinterpret_cast<const float*>(src));
        __m128 r1 = _mm_loadu_ps(reinterpret_cast<const float*>(src + s_nb[0]));
        __m128 r2 = _mm_loadu_ps(reinterpret_cast<const float*>(src + 2 * s_nb[0]));
        __m128 r3 = _mm_loadu_ps(reinterpret_cast<const float*>(src + 3 * s_nb[0]));
        _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
        char* dst = d + i1_vec * d_nb1 + i0 * sizeof(float);
        _mm_storeu_ps(reinterpret_cast<float*>(dst), r0);
        _mm_storeu_ps(reinterpret_cast<float*>(dst + d_nb1), r1);
        _mm_storeu_ps(reinterpret_cast<float*>(dst + 2 * d_nb1), r2);
        _mm_storeu_ps(reinterpret_cast<float*>(dst + 3 * d_nb1), r3);
      }
      for (int64_t i1 = i1_vec; i1 < i1_vec + 4; ++i1) {
        auto* row = reinterpret_cast<float*>(d + i1 * d_nb1);
        for (int64_t i0 = i0_vec_end; i0 < i0_end; ++i0) {
          row[i0] = *reinterpret_cast<const float*>(s + i0 * s_nb[0] + i1 * s_nb[1]);
        }
      }
    }
  }
#endif
  for (int64_t i1 = i1_vec; i1 < i1_end; ++i1) {
    auto* row = reinterpret_cast<float*>(d + i1 * d_nb1);
    for (int64_t i0 = i0_begin; i0 < i0_end; ++i0) {
      row[i0] = *reinterpret_cast<const float*>(s + i0 * s_nb[0] + i1 * s_nb[1]);
    }
  }
}

// dst = contiguous copy of the strided F32 view src (same shape), in 32 x 32 tiles so that both
// the strided reads and the writes stay in cache. ggml's CONT copies a transposed view element by
// element through memcpy, which took a quarter of a training step.
void copy_tiled(ggml_tensor* dst, const ggml_tensor* src, int ith, int nth, void* /*user*/) {
  constexpr int64_t kTile = 32;
  const int64_t ne0 = dst->ne[0], ne1 = dst->ne[1];
  const int64_t n_tiles_1 = (ne1 + kTile - 1) / kTile;
  const int64_t n_jobs = n_tiles_1 * dst->ne[2] * dst->ne[3];
  for (int64_t job = ith; job < n_jobs; job += nth) {
    const int64_t i23 = job / n_tiles_1;
    const int64_t i2 = i23 % dst->ne[2], i3 = i23 / dst->ne[2];
    const int64_t i1_begin = (job % n_tiles_1) * kTile, i1_end = std::min(ne1, i1_begin + kTile);
    const char* s = static_cast<const char*>(src->data) + i2 * src->nb[2] + i3 * src->nb[3];
    char* d = static_cast<char*>(dst->data) + i2 * dst->nb[2] + i3 * dst->nb[3];
    for (int64_t i0_begin = 0; i0_begin < ne0; i0_begin += kTile) {
      copy_tile(d, dst->nb[1], s, src->nb, i0_begin, std::min(ne0, i0_begin + kTile), i1_begin,
                i1_end);
    }
  }
}

ggml_tensor* transposed_contiguous(ggml_context* ctx, ggml_tensor* x) {
  ggml_tensor* t = ggml_transpose(ctx, x);
  if (ggml_is_contiguous(t)) {
    return t;
  }
  return ggml_map_custom1(ctx, t, copy_tiled, GGML_N_TASKS_MAX, nullptr);
}

// ggml's backward of MUL_MAT uses OUT_PROD, whose CPU kernel is a row-by-row axpy loop: ~70% of
// a training step with 1 thread. out_prod(a, b)[i, j] = sum_k a[i, k] b[j, k] equals
// mul_mat(a^T, b^T), which runs on the blocked sgemm kernel (tinyBLAS). The node keeps its
// identity (consumers and gradient slots stay valid) and becomes a MUL_MAT of transposed copies;
// broadcasting along dims 2/3 follows the same rule (i02 = i12 / (ne12 / ne02)) in both ops.
// One copy per source tensor serves every product that reads it (the attention input feeds the
// q/k/v weight gradients, the FFN input the gate/up ones).
void rewrite_out_prod(ggml_context* ctx, ggml_cgraph* graph) {
  std::map<const ggml_tensor*, ggml_tensor*> transposed;
  auto transpose_of = [&](ggml_tensor* x) {
    ggml_tensor*& t = transposed[x];
    if (!t) {
      t = transposed_contiguous(ctx, x);
    }
    return t;
  };
  for (int i = 0; i < ggml_graph_n_nodes(graph); ++i) {
    ggml_tensor* node = ggml_graph_node(graph, i);
    if (node->op != GGML_OP_OUT_PROD || node->src[0]->type != GGML_TYPE_F32 ||
        node->src[1]->type != GGML_TYPE_F32) {
      continue;
    }
    ggml_tensor* a = transpose_of(node->src[0]);
    ggml_tensor* b = transpose_of(node->src[1]);
    node->op = GGML_OP_MUL_MAT;
    node->src[0] = a;
    node->src[1] = b;
  }
}

}  // namespace

BackwardGraph build_backward(ggml_context* ctx, ggml_tensor* loss,
                             const std::vector<ggml_tensor*>& params, ggml_tensor* loss_grad,
                             size_t graph_size) {
  ggml_cgraph* gf = ggml_new_graph_custom(ctx, graph_size, /*grads=*/true);
  ggml_build_forward_expand(gf, loss);
  ggml_set_loss(loss);
  // The loss's gradient accumulator is the persistent seed tensor.
  const int n_nodes = ggml_graph_n_nodes(gf);
  std::vector<ggml_tensor*> grad_accs(n_nodes, nullptr);
  for (int i = 0; i < n_nodes; ++i) {
    if (ggml_graph_node(gf, i) == loss) {
      grad_accs[i] = loss_grad;
    }
  }
  ggml_build_backward_expand(ctx, gf, grad_accs.data());

  BackwardGraph out;
  for (ggml_tensor* p : params) {
    ggml_tensor* g = ggml_graph_get_grad(gf, p);
    if (!g) {
      throw Error(ErrorCode::InvalidArgument,
                  std::string("parameter ") + p->name + " does not influence the loss");
    }
    out.grads.push_back(g);
  }
  protect_softmax_outputs(gf);
  rewrite_out_prod(ctx, gf);
  // Re-collect the graph from its sinks so that the new transposed copies are scheduled before
  // the rewritten nodes.
  out.graph = ggml_new_graph_custom(ctx, graph_size, /*grads=*/false);
  ggml_build_forward_expand(out.graph, loss);
  for (ggml_tensor* g : out.grads) {
    ggml_build_forward_expand(out.graph, g);
  }
  return out;
}

}  // namespace kvsteer::train
