// Training the reasoning organism end to end (organism/README.md): the mixture, a random-init llama
// GGUF with the organism's vocabulary and ChatML template, tokenization through libllama into KVSD
// records with the loss on every assistant turn, and the full-gradient trainer.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "kvsteer/model.h"
#include "organism/gen/mixture.h"
#include "organism/trainer/dataset.h"
#include "organism/trainer/random_init.h"
#include "organism/trainer/run.h"

namespace kvsteer::organism {

// Everything that determines the trained model; each field is a `kvsteer organism train` flag.
struct OrganismTrainOptions {
  std::string work_dir;    // mixture JSONL, init GGUF, KVSD records, checkpoints, log
  std::string out;         // the trained GGUF
  uint64_t seed = 1;       // mixture (train: seed, validation: seed + 1), init weights, data order
  int n_train = 44000;     // training conversations
  int n_val = 600;         // validation conversations (validation-split problems)
  MixtureOptions mixture;  // shares and difficulty; seed/n/split are set from the above
  train::RandomInitSpec shape;  // layers, width, heads; vocabulary is set from the generator
  train::RunOptions run;        // ctx, batch, epochs, lr, threads, checkpoints...
  bool resume = false;
};

// The organism defaults: the shipped model's recipe (organism/model/README.md).
OrganismTrainOptions default_organism_options();

// The tokenizer of the organism (vocab.h) for a generator whose numbers go up to max_value.
train::SpmTokenizer organism_tokenizer(int max_value);

// Tokenizes conversations as chat-formatted text through `model`'s tokenizer: BOS, then per
// message "<|im_start|>{role}\n" + content + "<|im_end|>" + "\n"; the loss covers the content and
// the <|im_end|> of every assistant turn whose Message::trained is set. Checks that the pieces
// tokenize exactly like the whole text; throws Error(Format) naming the conversation otherwise.
std::vector<train::Record> tokenize_conversations(const Model& model,
                                                  const std::vector<Conversation>& conversations);

// Writes the mixture, init model and records into work_dir (skipped when work_dir/prepared.json
// records the same options), then trains (resuming from work_dir/ckpt when asked) and writes out.
train::RunSummary train_organism(const OrganismTrainOptions& options, std::ostream& log);

}  // namespace kvsteer::organism
