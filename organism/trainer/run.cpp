#include "organism/trainer/run.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "kvsteer/error.h"
#include "organism/trainer/checkpoint.h"
#include "organism/trainer/dataset.h"
#include "organism/trainer/model.h"
#include "organism/trainer/trainer.h"

namespace kvsteer::train {
namespace {

using Clock = std::chrono::steady_clock;

std::string format_duration(double seconds) {
  const int64_t s = std::llround(seconds);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  }
  return buf;
}

}  // namespace

void validate_options(const RunOptions& o) {
  auto bad = [](const std::string& what) { throw Error(ErrorCode::InvalidArgument, what); };
  if (o.model_in.empty() || o.data.empty()) {
    bad("--model-in and --data are required");
  }
  if (o.n_ctx < 2 || o.n_batch < 1 || o.n_threads < 1) {
    bad("--ctx >= 2, --batch >= 1 and --threads >= 1 expected");
  }
  if ((o.n_steps > 0) == (o.n_epochs > 0.0)) {
    bad("give exactly one of --steps and --epochs (> 0)");
  }
  if ((o.resume || o.checkpoint_every > 0) && o.checkpoint_dir.empty()) {
    bad("--resume and --checkpoint-every need --checkpoint DIR");
  }
  if (o.out.empty() && o.checkpoint_dir.empty()) {
    bad("give --out or --checkpoint DIR (otherwise the run saves nothing)");
  }
  if (o.eval_every > 0 && o.val_data.empty()) {
    bad("--eval-every needs --val-data");
  }
}

namespace {

std::vector<PackedSequence> load_sequences(const std::string& path, const RunOptions& o,
                                           int n_vocab, std::ostream& log) {
  PackStats st;
  std::vector<PackedSequence> seqs = pack_records(load_dataset(path), o.n_ctx, n_vocab, &st);
  log << "data " << path << ": " << st.n_records << " records -> " << st.n_sequences
      << " sequences of " << o.n_ctx << " tokens (" << st.n_tokens << " tokens, "
      << st.n_loss_tokens << " trained";
  if (st.n_empty_dropped > 0) {
    log << ", " << st.n_empty_dropped << " untrained sequences dropped";
  }
  log << ")\n";
  if (seqs.empty()) {
    throw Error(ErrorCode::InvalidArgument, "dataset " + path + " has no trained token");
  }
  return seqs;
}

HostBatch next_batch(const std::vector<PackedSequence>& seqs, SequenceStream& stream, int64_t step,
                     int n_batch) {
  std::vector<const PackedSequence*> part;
  part.reserve(n_batch);
  for (int b = 0; b < n_batch; ++b) {
    part.push_back(&seqs[stream.at(uint64_t(step) * n_batch + b)]);
  }
  return make_batch(part);
}

// Per-session progress: step timing and the progress line.
struct Progress {
  Clock::time_point start = Clock::now();
  int64_t first_step = 0;
  int64_t tokens_per_step = 0;

  double tokens_per_s(int64_t steps_done) const {
    const double dt = std::chrono::duration<double>(Clock::now() - start).count();
    return dt > 0 ? double((steps_done - first_step) * tokens_per_step) / dt : 0.0;
  }
  void line(std::ostream& log, const StepResult& r, int64_t done, int64_t n_steps) const {
    const double dt = std::chrono::duration<double>(Clock::now() - start).count();
    const double per_step = dt / double(done - first_step);
    char buf[256];
    std::snprintf(buf, sizeof(buf),
                  "step %lld/%lld | loss %.4f | lr %.2e | gnorm %.3f | %.0f tok/s | "
                  "elapsed %s | ETA %s\n",
                  static_cast<long long>(done), static_cast<long long>(n_steps), r.loss, r.lr,
                  r.grad_norm, tokens_per_s(done), format_duration(dt).c_str(),
                  format_duration(per_step * double(n_steps - done)).c_str());
    log << buf << std::flush;
  }
};

double run_eval(Trainer& trainer, const std::vector<PackedSequence>& val, int n_batch, int64_t step,
                std::ostream& log) {
  const EvalResult e = trainer.evaluate(val, n_batch);
  char buf[128];
  std::snprintf(buf, sizeof(buf), "eval step %lld | val loss %.4f | %lld tokens\n",
                static_cast<long long>(step), e.loss, static_cast<long long>(e.n_rows));
  log << buf << std::flush;
  return e.loss;
}

bool due(int64_t every, int64_t step) { return every > 0 && step % every == 0; }

// What the step loop reads and updates.
struct Session {
  const RunOptions& o;
  const std::vector<PackedSequence>& train;
  const std::vector<PackedSequence>& val;
  const RunIdentity& id;
  Trainer& trainer;
  std::ostream& log;
};

void describe(const Session& s, const Model& model, int64_t n_steps) {
  const Hparams& hp = model.hparams();
  s.log << "model " << s.o.model_in << ": " << model.n_params() << " parameters, " << hp.n_layer
        << " layers, n_embd " << hp.n_embd << ", heads " << hp.n_head << "/" << hp.n_head_kv
        << ", vocab " << hp.n_vocab << "; " << n_steps << " steps of " << s.o.n_batch << " x "
        << s.o.n_ctx << " tokens, " << s.o.n_threads << " threads\n";
  if (s.o.n_ctx > hp.n_ctx_train) {
    s.log << "warning: --ctx " << s.o.n_ctx << " exceeds llama.context_length " << hp.n_ctx_train
          << " of the model; libllama will warn when a context is longer than that\n";
  }
}

// Runs steps until n_steps (or --halt-after); returns the last step's result.
StepResult train_loop(Session& s, int64_t n_steps, Progress& progress) {
  SequenceStream stream(static_cast<uint32_t>(s.train.size()), s.o.seed);
  StepResult last;
  while (s.trainer.step_index() < n_steps) {
    if (s.o.halt_after > 0 && s.trainer.step_index() >= s.o.halt_after) {
      break;
    }
    last =
        s.trainer.step(next_batch(s.train, stream, s.trainer.step_index(), s.o.n_batch), n_steps);
    const int64_t done = s.trainer.step_index();
    if (!std::isfinite(last.loss)) {
      throw Error(ErrorCode::InvalidArgument, "loss is " + std::to_string(last.loss) + " at step " +
                                                  std::to_string(done) +
                                                  " (lower --lr or --grad-clip)");
    }
    if (due(s.o.log_every, done) || done == n_steps || done == 1) {
      progress.line(s.log, last, done, n_steps);
    }
    if (!s.val.empty() && due(s.o.eval_every, done) && done != n_steps) {
      run_eval(s.trainer, s.val, s.o.n_batch, done, s.log);
    }
    if (due(s.o.checkpoint_every, done) && done != n_steps) {
      save_checkpoint(checkpoint_path(s.o.checkpoint_dir), s.trainer, s.id);
      // The weights alone, loadable by libllama, to evaluate a run while it trains.
      s.trainer.model().save(snapshot_path(s.o.checkpoint_dir));
    }
  }
  return last;
}

}  // namespace

RunSummary run_training(const RunOptions& o, std::ostream& log) {
  validate_options(o);
  Model model = Model::load(o.model_in);
  const std::vector<PackedSequence> train = load_sequences(o.data, o, model.hparams().n_vocab, log);
  std::vector<PackedSequence> val;
  if (!o.val_data.empty()) {
    val = load_sequences(o.val_data, o, model.hparams().n_vocab, log);
  }
  RunSummary sum;
  sum.n_params = model.n_params();
  sum.n_steps =
      o.n_steps > 0
          ? o.n_steps
          : static_cast<int64_t>(std::ceil(o.n_epochs * double(train.size()) / double(o.n_batch)));
  const RunIdentity id{o.seed, sum.n_steps, o.n_ctx, o.n_batch, fingerprint(train), o.adamw};
  Trainer trainer(model, o.adamw, o.n_threads);
  Session session{o, train, val, id, trainer, log};
  if (o.resume) {
    load_checkpoint(checkpoint_path(o.checkpoint_dir), trainer, id);
    log << "resumed from " << checkpoint_path(o.checkpoint_dir) << " at step "
        << trainer.step_index() << "\n";
  }
  if (!o.checkpoint_dir.empty()) {
    std::filesystem::create_directories(o.checkpoint_dir);
  }
  describe(session, model, sum.n_steps);

  Progress progress{Clock::now(), trainer.step_index(), int64_t(o.n_ctx) * o.n_batch};
  sum.last_loss = train_loop(session, sum.n_steps, progress).loss;
  sum.steps_done = trainer.step_index();
  sum.tokens_per_s = progress.tokens_per_s(sum.steps_done);
  sum.completed = sum.steps_done == sum.n_steps;
  if (!o.checkpoint_dir.empty()) {
    save_checkpoint(checkpoint_path(o.checkpoint_dir), trainer, id);
  }
  if (!sum.completed) {
    log << "halted after step " << sum.steps_done << "; continue with --resume\n";
    return sum;
  }
  if (!val.empty()) {
    sum.val_loss = run_eval(trainer, val, o.n_batch, sum.steps_done, log);
  }
  if (!o.out.empty()) {
    model.save(o.out);
    log << "saved " << o.out << "\n";
  }
  return sum;
}

}  // namespace kvsteer::train
