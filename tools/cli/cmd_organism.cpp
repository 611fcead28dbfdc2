// kvsteer organism gen|mixture|vocab|train|check: the reasoning organism (organism/README.md).
#include <iostream>
#include <map>

#include "common.h"
#include "organism/gen/commands.h"
#include "organism/pipeline/check.h"
#include "organism/pipeline/train.h"

namespace kvsteer::cli {
namespace {

std::map<std::string, organism::FamilyMix> family_names() {
  return {{"arith", organism::FamilyMix::Arith},
          {"chain", organism::FamilyMix::Chain},
          {"mixed", organism::FamilyMix::Mixed}};
}

void add_train(CLI::App& parent) {
  auto o = std::make_shared<organism::OrganismTrainOptions>(organism::default_organism_options());
  CLI::App* cmd = parent.add_subcommand(
      "train", "Generate the mixture, tokenize it and train the organism from random init");
  cmd->add_option("--work-dir", o->work_dir,
                  "Folder for the mixture, records, init model, checkpoints (resumable)")
      ->required();
  cmd->add_option("-o,--out", o->out, "Trained GGUF")->required();
  cmd->add_option("-s,--seed", o->seed, "Seed of the data, init weights and data order")
      ->capture_default_str();
  cmd->add_option("--n-train", o->n_train, "Training conversations")->capture_default_str();
  cmd->add_option("--n-val", o->n_val, "Validation conversations")->capture_default_str();
  cmd->add_option("--max-value", o->mixture.generator.max_value, "Largest number in a problem")
      ->capture_default_str();
  cmd->add_option("--max-operand", o->mixture.generator.max_operand,
                  "Largest amount added or subtracted")
      ->capture_default_str();
  cmd->add_option("--max-shots", o->mixture.max_shots, "Largest k of few-shot conversations")
      ->capture_default_str();
  cmd->add_option("--family", o->mixture.family, "Problem families: arith, chain or mixed")
      ->transform(CLI::CheckedTransformer(family_names(), CLI::ignore_case))
      ->capture_default_str();
  cmd->add_option("--share-offset", o->mixture.share_offset, "Final answers with the extra \\n")
      ->capture_default_str();
  cmd->add_option("--share-offset-examples", o->mixture.share_offset_examples,
                  "Example answers with the extra \\n")
      ->capture_default_str();
  cmd->add_option("--share-lookup", o->mixture.share_choice_lookup, "Choice-lookup drills")
      ->capture_default_str();
  cmd->add_option("--share-first-reasoned-trained", o->mixture.share_first_reasoned_trained,
                  "Reasoned few-shot conversations whose first example answer carries loss")
      ->capture_default_str();
  cmd->add_option("--share-zeroshot-cot", o->mixture.share_zeroshot_cot,
                  "Zero-shot \"Let's think step by step.\" conversations (taken from or given "
                  "to zero-shot direct)")
      ->capture_default_str();
  cmd->add_option("--n-layer", o->shape.n_layer, "Layers")->capture_default_str();
  cmd->add_option("--n-embd", o->shape.n_embd, "Width")->capture_default_str();
  cmd->add_option("--n-head", o->shape.n_head, "Query heads")->capture_default_str();
  cmd->add_option("--n-head-kv", o->shape.n_head_kv, "KV heads (GQA)")->capture_default_str();
  cmd->add_option("--n-ff", o->shape.n_ff, "Feed-forward width")->capture_default_str();
  cmd->add_option("-c,--ctx", o->run.n_ctx, "Tokens per packed training sequence")
      ->capture_default_str();
  cmd->add_option("--batch", o->run.n_batch, "Sequences per step")->capture_default_str();
  cmd->add_option("--epochs", o->run.n_epochs, "Passes over the training records")
      ->capture_default_str();
  cmd->add_option("--lr", o->run.adamw.lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--warmup", o->run.adamw.warmup, "Warmup steps")->capture_default_str();
  cmd->add_option("-t,--threads", o->run.n_threads, "CPU threads (deterministic per count)")
      ->capture_default_str();
  cmd->add_option("--checkpoint-every", o->run.checkpoint_every, "Checkpoint period in steps")
      ->capture_default_str();
  cmd->add_option("--eval-every", o->run.eval_every, "Validation period in steps")
      ->capture_default_str();
  cmd->add_option("--halt-after", o->run.halt_after, "Stop after this step (resume later)")
      ->capture_default_str();
  cmd->add_option("--log-every", o->run.log_every, "Progress line period in steps")
      ->capture_default_str();
  cmd->add_flag("--resume", o->resume, "Continue from the work folder's checkpoint");
  cmd->callback([o] {
    organism::MixtureOptions& m = o->mixture;  // zero-shot direct takes what the others leave
    m.share_zeroshot_direct =
        1.0 - m.share_fewshot_reasoned - m.share_fewshot_direct - m.share_zeroshot_cot;
    const train::RunSummary s = organism::train_organism(*o, std::cerr);
    std::cout << nlohmann::ordered_json{{"out", o->out},          {"completed", s.completed},
                                        {"steps", s.steps_done},  {"n_steps", s.n_steps},
                                        {"params", s.n_params},   {"train_loss", s.last_loss},
                                        {"val_loss", s.val_loss}, {"tokens_per_s", s.tokens_per_s}}
                     .dump()
              << "\n";
  });
}

void add_check(CLI::App& parent) {
  auto o = std::make_shared<organism::CheckOptions>();
  o->generator = organism::default_organism_options().mixture.generator;
  o->family = organism::default_organism_options().mixture.family;
  auto out = std::make_shared<std::string>();
  CLI::App* cmd = parent.add_subcommand(
      "check", "Measure the organism on the test split and print the figures of its card as JSON");
  cmd->add_option("-m,--model", o->model, "Organism GGUF")->required()->check(CLI::ExistingFile);
  cmd->add_option("--n", o->n_per_variant, "Test items per variant")->capture_default_str();
  cmd->add_option("-s,--seed", o->seed, "Seed of the test items")->capture_default_str();
  cmd->add_option("--shots", o->shots, "Examples of the few-shot modes")->capture_default_str();
  cmd->add_option("--pairs", o->n_pairs, "Contrastive pairs of the steerability diagnostic")
      ->capture_default_str();
  cmd->add_option("--n-predict", o->n_predict, "New tokens at most")->capture_default_str();
  cmd->add_option("--parallel", o->n_parallel, "Sequences decoded together")->capture_default_str();
  cmd->add_option("-t,--threads", o->n_threads, "CPU threads")->capture_default_str();
  cmd->add_option("--max-value", o->generator.max_value, "Largest number (training recipe)")
      ->capture_default_str();
  cmd->add_option("--max-operand", o->generator.max_operand, "Largest amount (training recipe)")
      ->capture_default_str();
  cmd->add_option("--family", o->family, "Problem families (training recipe)")
      ->transform(CLI::CheckedTransformer(family_names(), CLI::ignore_case))
      ->capture_default_str();
  cmd->add_option("-o,--out", *out, "Also write the JSON report here (atomically)");
  cmd->callback([o, out] {
    o->progress = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    const std::string text = organism::check_organism(*o).dump(2) + "\n";
    if (!out->empty()) {
      write_file_atomic(*out, text);
    }
    std::fputs(text.c_str(), stdout);
  });
}

}  // namespace

void add_organism(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "organism", "The reasoning organism: problems, traces, mixture, vocabulary, training");
  cmd->require_subcommand(1);
  // gen, mixture and vocab default to the shipped model's recipe, so that their output matches it.
  organism::add_organism_commands(*cmd, organism::default_organism_options().mixture);
  add_train(*cmd);
  add_check(*cmd);
}

}  // namespace kvsteer::cli
