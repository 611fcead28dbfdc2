// kvsteer-train-bench: training throughput (tokens/s) of a random-init llama of a given shape on
// random tokens, to choose a model size for a time budget (README.md, "Throughput"); with
// --demo-dir it writes such a model and toy-language data for a trial run of kvsteer-train.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <random>

#include "organism/trainer/dataset.h"
#include "organism/trainer/graph.h"
#include "organism/trainer/llama_loss.h"
#include "organism/trainer/model.h"
#include "organism/trainer/random_init.h"
#include "organism/trainer/toy_data.h"
#include "organism/trainer/trainer.h"

namespace {

using namespace kvsteer::train;

struct BenchOptions {
  RandomInitSpec spec;
  int n_ctx = 256;
  int n_batch = 8;
  int n_steps = 10;
  int n_warmup = 2;
  int n_threads = 2;
  std::string demo_dir;  // write a demo model and toy data here instead of benchmarking
  int demo_records = 20000;
  std::string score_model;  // score this GGUF on score_data with the trainer and with libllama
  std::string score_data;
};

// Masked loss of a KVSD file under the trainer's evaluation and under libllama (the parity check
// of README.md), as one JSON line.
void score(const BenchOptions& o) {
  const std::vector<Record> records = load_dataset(o.score_data);
  Model model = Model::load(o.score_model);
  Trainer trainer(model, AdamWOptions{}, o.n_threads);
  const EvalResult ours =
      trainer.evaluate(pack_records(records, o.n_ctx, model.hparams().n_vocab), o.n_batch);
  const LlamaLoss ref = llama_masked_loss(o.score_model, records, o.n_ctx, o.n_threads);
  std::printf(
      "{\"model\": \"%s\", \"data\": \"%s\", \"tokens\": %lld, \"trainer_loss\": %.6f, "
      "\"libllama_loss\": %.6f, \"rel_diff\": %.3g}\n",
      o.score_model.c_str(), o.score_data.c_str(), static_cast<long long>(ref.n_rows), ours.loss,
      ref.loss, std::abs(ours.loss - ref.loss) / ref.loss);
}

// Writes init.gguf (the benchmark shape), train.kvsd and val.kvsd (toy language) into the folder.
void write_demo(const BenchOptions& o) {
  std::filesystem::create_directories(o.demo_dir);
  const std::string dir = o.demo_dir + "/";
  write_random_init(dir + "init.gguf", o.spec);
  save_dataset(dir + "train.kvsd", toy_language(o.demo_records, 1, true));
  save_dataset(dir + "val.kvsd", toy_language(std::max(1, o.demo_records / 20), 2, true));
  std::printf("wrote %sinit.gguf (%lld parameters), %strain.kvsd (%d records), %sval.kvsd\n",
              dir.c_str(), static_cast<long long>(count_params(o.spec)), dir.c_str(),
              o.demo_records, dir.c_str());
}

std::vector<PackedSequence> random_sequences(const BenchOptions& o, int n) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> tok(3, o.spec.n_vocab - 1);
  std::vector<Record> recs(n);
  for (Record& r : recs) {
    for (int t = 0; t < o.n_ctx; ++t) {
      r.tokens.push_back(tok(rng));
      r.loss_mask.push_back(1);
    }
  }
  return pack_records(recs, o.n_ctx, o.spec.n_vocab);
}

struct Timing {
  double wall_s = 0.0;
  double cpu_s = 0.0;  // process CPU time, all threads
};

// Wall and CPU time of n_steps training steps. On a shared machine the wall time depends on the
// other load; tokens per CPU-second does not (much), so the bench reports both.
Timing time_steps(Trainer& trainer, const std::vector<PackedSequence>& seqs, const BenchOptions& o,
                  int n_steps) {
  std::vector<const PackedSequence*> part;
  part.reserve(o.n_batch);
  for (int b = 0; b < o.n_batch; ++b) {
    part.push_back(&seqs[b]);
  }
  const HostBatch batch = make_batch(part);
  const auto t0 = std::chrono::steady_clock::now();
  const std::clock_t c0 = std::clock();
  for (int s = 0; s < n_steps; ++s) {
    trainer.step(batch, o.n_warmup + o.n_steps);
  }
  Timing t;
  t.cpu_s = double(std::clock() - c0) / CLOCKS_PER_SEC;
  t.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return t;
}

int run_bench(int argc, char** argv) {
  CLI::App app{"kvsteer-train-bench: training tokens/s of a random llama"};
  BenchOptions o;
  app.add_option("--n-vocab", o.spec.n_vocab)->capture_default_str();
  app.add_option("--n-embd", o.spec.n_embd)->capture_default_str();
  app.add_option("--n-layer", o.spec.n_layer)->capture_default_str();
  app.add_option("--n-head", o.spec.n_head)->capture_default_str();
  app.add_option("--n-head-kv", o.spec.n_head_kv)->capture_default_str();
  app.add_option("--n-ff", o.spec.n_ff)->capture_default_str();
  app.add_option("-c,--ctx", o.n_ctx)->capture_default_str();
  app.add_option("--batch", o.n_batch)->capture_default_str();
  app.add_option("--steps", o.n_steps)->capture_default_str();
  app.add_option("-t,--threads", o.n_threads)->capture_default_str();
  app.add_option("--demo-dir", o.demo_dir, "write init.gguf + toy train/val data there and exit");
  app.add_option("--demo-records", o.demo_records, "training records of the demo")
      ->capture_default_str();
  app.add_option("--score", o.score_model, "GGUF to score on --score-data (trainer vs libllama)");
  app.add_option("--score-data", o.score_data, "KVSD records for --score");
  CLI11_PARSE(app, argc, argv);
  try {
    if (!o.score_model.empty()) {
      score(o);
      return 0;
    }
    o.spec.n_ctx_train = o.n_ctx;
    if (!o.demo_dir.empty()) {
      write_demo(o);
      return 0;
    }
    const std::string path =
        (std::filesystem::temp_directory_path() / "kvsteer-train-bench.gguf").string();
    write_random_init(path, o.spec);
    Model model = Model::load(path);
    std::filesystem::remove(path);
    Trainer trainer(model, AdamWOptions{}, o.n_threads);
    const std::vector<PackedSequence> seqs = random_sequences(o, o.n_batch);
    time_steps(trainer, seqs, o, o.n_warmup);
    const Timing t = time_steps(trainer, seqs, o, o.n_steps);
    const double tokens = double(o.n_steps) * o.n_batch * o.n_ctx;
    std::printf(
        "{\"params\": %lld, \"n_embd\": %d, \"n_layer\": %d, \"n_head\": %d, \"n_head_kv\": %d, "
        "\"n_ff\": %d, \"n_vocab\": %d, \"ctx\": %d, \"batch\": %d, \"threads\": %d, "
        "\"s_per_step\": %.4f, \"tokens_per_s\": %.0f, \"cpu_s_per_step\": %.4f, "
        "\"tokens_per_cpu_s\": %.0f}\n",
        static_cast<long long>(model.n_params()), o.spec.n_embd, o.spec.n_layer, o.spec.n_head,
        o.spec.n_head_kv, o.spec.n_ff, o.spec.n_vocab, o.n_ctx, o.n_batch, o.n_threads,
        t.wall_s / o.n_steps, tokens / t.wall_s, t.cpu_s / o.n_steps, tokens / t.cpu_s);
  } catch (const std::exception& e) {
    std::cerr << "kvsteer-train-bench: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run_bench(argc, argv);
  } catch (...) {
    std::cerr << "kvsteer-train-bench: error: unexpected exception\n";
    return 1;
  }
}
