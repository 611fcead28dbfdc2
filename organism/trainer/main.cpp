// kvsteer-train: trains every weight of a small llama GGUF on KVSD records (README.md).
// Exit codes: 0 success, 1 runtime error, 2 usage error.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <exception>
#include <iostream>

#include "ggml.h"
#include "kvsteer/error.h"
#include "organism/trainer/run.h"

namespace {

using kvsteer::train::RunOptions;

void add_flags(CLI::App& app, RunOptions& o) {
  app.add_option("--model-in", o.model_in, "init GGUF (llama architecture, F32 or F16)")
      ->required();
  app.add_option("--data", o.data, "training records (KVSD file)")->required();
  app.add_option("--val-data", o.val_data, "validation records (KVSD file)");
  app.add_option("--out", o.out, "trained GGUF, written when the run completes");
  app.add_option("-c,--ctx", o.n_ctx, "tokens per packed sequence")->capture_default_str();
  app.add_option("--batch", o.n_batch, "sequences per optimiser step")->capture_default_str();
  auto* steps = app.add_option("--steps", o.n_steps, "optimiser steps");
  auto* epochs = app.add_option("--epochs", o.n_epochs, "passes over the training sequences");
  steps->excludes(epochs);
  app.add_option("--lr", o.adamw.lr, "peak learning rate")->capture_default_str();
  app.add_option("--lr-min", o.adamw.lr_min, "final learning rate (default lr / 10)");
  app.add_option("--warmup", o.adamw.warmup, "linear warmup steps")->capture_default_str();
  app.add_option("--weight-decay", o.adamw.weight_decay, "AdamW decoupled weight decay")
      ->capture_default_str();
  app.add_option("--grad-clip", o.adamw.grad_clip, "global gradient-norm clip (0: off)")
      ->capture_default_str();
  app.add_option("-s,--seed", o.seed, "seed of the data order")->capture_default_str();
  app.add_option("-t,--threads", o.n_threads, "CPU threads")->capture_default_str();
  app.add_option("--checkpoint", o.checkpoint_dir, "checkpoint folder");
  app.add_option("--checkpoint-every", o.checkpoint_every, "checkpoint every K steps");
  app.add_flag("--resume", o.resume, "continue from the checkpoint in --checkpoint");
  app.add_option("--eval-every", o.eval_every, "validation loss every N steps");
  app.add_option("--log-every", o.log_every, "progress line every N steps")->capture_default_str();
  app.add_option("--halt-after", o.halt_after, "stop after step S (resume later with --resume)");
}

// ggml and gguf log the low-level cause of a failure (e.g. "failed to open GGUF file") before the
// library throws; the Error message already names it, so the CLI keeps stderr to one error line.
void drop_ggml_log(ggml_log_level /*level*/, const char* /*text*/, void* /*user*/) noexcept {}

// ggml's CPU backend here runs on OpenMP, whose barriers spin. When another process holds one of
// the two cores, a 2-thread step then waits a scheduler quantum at each of its ~2000 barriers and
// runs 5-10x slower than with 1 thread; with passive waiting it runs at least as fast as 1
// thread, and at most ~20% slower than spinning on an idle machine (README.md, "Threads").
// libgomp reads its settings when it is loaded, so the program re-executes itself with
// OMP_WAIT_POLICY=passive unless the user chose a policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT).
void ensure_passive_openmp(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) {
    return;
  }
  setenv("OMP_WAIT_POLICY", "passive", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: keep the default policy then
}

// Parses, validates and runs; returns the exit code.
int run_cli(int argc, char** argv) {
  CLI::App app{"kvsteer-train: train every weight of a small llama GGUF on KVSD records"};
  RunOptions opts;
  add_flags(app, opts);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::ParseError& e) {
    std::cerr << "kvsteer-train: error: " << e.what() << " (see --help)\n";
    return 2;
  }
  try {
    kvsteer::train::validate_options(opts);
  } catch (const kvsteer::Error& e) {
    std::cerr << "kvsteer-train: error: " << e.what() << " (see --help)\n";
    return 2;
  }
  ggml_log_set(drop_ggml_log, nullptr);
  kvsteer::train::run_training(opts, std::cerr);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ensure_passive_openmp(argv);
  try {
    return run_cli(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "kvsteer-train: error: " << e.what() << "\n";
  } catch (...) {
    std::cerr << "kvsteer-train: error: unknown exception\n";
  }
  return 1;
}
