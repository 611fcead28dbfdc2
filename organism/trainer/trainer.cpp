#include "organism/trainer/trainer.h"

#include <algorithm>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"
#include "kvsteer/error.h"
#include "organism/trainer/backward.h"

namespace kvsteer::train {
namespace {

enum GraphMode { kForward = 0, kGrads = 1, kUpdate = 2 };

// Upper bound of graph nodes: forward ~35 per layer, backward ~3x that plus the transposed copies
// of backward.cpp, and ~8 per parameter tensor for clipping and AdamW.
size_t graph_size(const Model& model) {
  return 1024 + 512 * size_t(model.hparams().n_layer) + 16 * model.params().size();
}

float read_scalar(const ggml_tensor* t) {
  float v = 0.0f;
  ggml_backend_tensor_get(t, &v, 0, sizeof(v));
  return v;
}

}  // namespace

struct Trainer::Graph {
  ggml_context_ptr ctx;
  ggml_cgraph* graph = nullptr;
  ggml_tensor* loss = nullptr;
  ggml_tensor* grad_norm = nullptr;
  std::vector<ggml_tensor*> grads;  // of model params, in order; empty for forward graphs
  GraphInputs in;
};

Trainer::Trainer(Model& model, const AdamWOptions& adamw, int n_threads)
    : model_(model), adamw_(model, adamw), n_threads_(n_threads) {
  if (n_threads < 1) {
    throw Error(ErrorCode::InvalidArgument,
                "threads " + std::to_string(n_threads) + " (at least 1 expected)");
  }
  backend_.reset(ggml_backend_cpu_init());
  if (!backend_) {
    throw Error(ErrorCode::InvalidArgument, "cannot initialise the ggml CPU backend");
  }
  ggml_backend_cpu_set_n_threads(backend_.get(), n_threads_);
  alloc_train_.reset(ggml_gallocr_new(ggml_backend_cpu_buffer_type()));
  alloc_eval_.reset(ggml_gallocr_new(ggml_backend_cpu_buffer_type()));
}

Trainer::~Trainer() = default;

Trainer::Graph Trainer::build(const BatchShape& shape, int mode) const {
  Graph g;
  const size_t size = graph_size(model_);
  g.ctx.reset(
      ggml_init({4 * size * ggml_tensor_overhead() + 2 * ggml_graph_overhead_custom(size, true),
                 nullptr, /*no_alloc=*/true}));
  g.loss = build_loss(g.ctx.get(), model_, shape, &g.in);
  if (mode == kForward) {
    g.graph = ggml_new_graph_custom(g.ctx.get(), size, /*grads=*/false);
    ggml_build_forward_expand(g.graph, g.loss);
    return g;
  }
  BackwardGraph bw = build_backward(g.ctx.get(), g.loss, model_.params(), adamw_.loss_grad(), size);
  g.graph = bw.graph;
  g.grads = std::move(bw.grads);
  if (mode == kUpdate) {
    g.grad_norm = adamw_.build_update(g.ctx.get(), g.graph, model_, g.grads);
  }
  return g;
}

void Trainer::compute(ggml_cgraph* graph) {
  if (ggml_backend_graph_compute(backend_.get(), graph) != GGML_STATUS_SUCCESS) {
    throw Error(ErrorCode::InvalidArgument, "ggml graph computation failed");
  }
}

StepResult Trainer::step(const HostBatch& batch, int64_t n_steps) {
  Graph g = build(batch.shape, kUpdate);
  if (!ggml_gallocr_alloc_graph(alloc_train_.get(), g.graph)) {
    throw Error(ErrorCode::InvalidArgument, "cannot allocate the training graph");
  }
  set_inputs(g.in, batch, model_.hparams().n_vocab);
  adamw_.set_step(step_, n_steps);
  compute(g.graph);
  StepResult r;
  r.loss = read_scalar(g.loss);
  r.grad_norm = read_scalar(g.grad_norm);
  r.lr = learning_rate(adamw_.options(), step_, n_steps);
  r.n_rows = batch.shape.n_rows;
  ++step_;
  return r;
}

float Trainer::loss_and_grads(const HostBatch& batch, std::vector<std::vector<float>>* grads) {
  Graph g = build(batch.shape, kGrads);
  // Every parameter gradient must survive to the end of the graph to be read back.
  for (ggml_tensor* grad : g.grads) {
    ggml_set_output(grad);
  }
  if (!ggml_gallocr_alloc_graph(alloc_train_.get(), g.graph)) {
    throw Error(ErrorCode::InvalidArgument, "cannot allocate the gradient graph");
  }
  set_inputs(g.in, batch, model_.hparams().n_vocab);
  compute(g.graph);
  grads->clear();
  for (const ggml_tensor* grad : g.grads) {
    std::vector<float> v(static_cast<size_t>(ggml_nelements(grad)));
    ggml_backend_tensor_get(grad, v.data(), 0, ggml_nbytes(grad));
    grads->push_back(std::move(v));
  }
  return read_scalar(g.loss);
}

EvalResult Trainer::evaluate(const std::vector<PackedSequence>& seqs, int n_batch) {
  EvalResult r;
  double nll_sum = 0.0;
  for (size_t begin = 0; begin < seqs.size(); begin += size_t(n_batch)) {
    const size_t end = std::min(seqs.size(), begin + size_t(n_batch));
    std::vector<const PackedSequence*> part;
    for (size_t i = begin; i < end; ++i) {
      part.push_back(&seqs[i]);
    }
    const HostBatch batch = make_batch(part);
    Graph g = build(batch.shape, kForward);
    if (!ggml_gallocr_alloc_graph(alloc_eval_.get(), g.graph)) {
      throw Error(ErrorCode::InvalidArgument, "cannot allocate the evaluation graph");
    }
    set_inputs(g.in, batch, model_.hparams().n_vocab);
    compute(g.graph);
    nll_sum += double(read_scalar(g.loss)) * batch.shape.n_rows;
    r.n_rows += batch.shape.n_rows;
  }
  r.loss = r.n_rows > 0 ? nll_sum / double(r.n_rows) : 0.0;
  return r;
}

}  // namespace kvsteer::train
