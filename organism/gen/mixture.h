// The organism's training mixture: chat conversations in which step-by-step reasoning exists but
// is not the default (organism/README.md, "Training mixture").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "organism/gen/dataset.h"
#include "organism/gen/problem.h"

namespace kvsteer::organism {

enum class ConversationKind {
  FewShotReasoned,  // k examples answered with steps, then a reasoned answer
  FewShotDirect,    // k examples answered " The answer is X.", then a direct answer
  ZeroShotDirect,   // one question answered directly: the model's default behaviour
  ZeroShotCot,      // one question; the answer starts "Let's think step by step." then reasons
  ChoiceLookup,     // k + 1 rounds of "Question: What is the choice of V?" over a choice set,
                    // answered with the choice scan up to V ("A: 12 vs V no. B: V vs V yes.
                    // The answer is B."): the last steps of the choice traces, drilled alone
};

inline constexpr std::string_view kCotPrefix = "Let's think step by step.";

// Shares are probabilities per conversation; the four kind shares must sum to 1 (+-1e-6). A
// share_choice_lookup of the conversations are lookup drills instead (drawn first).
struct MixtureOptions {
  uint64_t seed = 0;                     // same seed, same options: identical output bytes
  int n = 1000;                          // conversations, [1, 1'000'000]
  double share_fewshot_reasoned = 0.35;  // k-shot with reasoning examples
  double share_fewshot_direct = 0.20;    // k-shot with direct examples
  double share_zeroshot_direct = 0.35;   // zero-shot direct (the default)
  double share_zeroshot_cot = 0.10;      // a small share of zero-shot CoT
  int min_shots = 1;                     // k for few-shot kinds, [1, max_shots]
  int max_shots = 5;                     // k = 1..5
  double share_offset = 0.30;            // final answer starts with one extra "\n" (the paper's
                                         // offset token, in 30 %)
  double share_offset_examples = 0.0;    // each example answer of a few-shot conversation starts
                                         // with the extra "\n" (independently)
  double share_choice = 0.5;             // multiple-choice conversations, rest numeric
  double share_choice_lookup = 0.0;      // ChoiceLookup drills (not counted in share_choice)
  // Probability that the first example answer of a FewShotReasoned conversation carries loss (the
  // model versions are in organism/model/README.md). That
  // turn is a zero-shot question answered with reasoning: always trained (1, organism v2), 35 % of
  // all first turns were reasoned and v2 reasoned on 16 % of zero-shot questions with the offset
  // token (6 % without); never trained (0, v3), zero-shot reasoning vanished and steering had
  // nothing left to induce. Drawn per conversation only when strictly between 0 and 1.
  double share_first_reasoned_trained = 1.0;
  FamilyMix family = FamilyMix::Mixed;  // which families; Mixed draws 50/50 per conversation
  GeneratorOptions generator;           // difficulty
  Split split = Split::Train;           // problems of this split only (validation: held-out loss)
};

struct Message {
  std::string role;  // "user" or "assistant"
  std::string content;
  bool trained = true;  // assistant turns only: the loss covers this turn
};

struct Conversation {
  ConversationKind kind = ConversationKind::ZeroShotDirect;
  int k = 0;  // example pairs (lookup: earlier rounds) before the final question; 0 for zero-shot
  Family family = Family::Arith;
  Variant variant = Variant::Numeric;
  bool offset = false;            // the final assistant turn starts with the extra "\n"
  std::vector<Message> messages;  // [2 * (k + 1)], user and assistant alternating
};

// Stable names used in the JSONL "meta" object: "fewshot_reasoned", "fewshot_direct",
// "zeroshot_direct", "zeroshot_cot", "choice_lookup".
std::string_view conversation_kind_name(ConversationKind kind);

// n conversations over train-split problems only; within a conversation all problems share the
// family and variant and are distinct. Throws kvsteer::Error(InvalidArgument) for invalid
// options (the message names the field).
std::vector<Conversation> build_mixture(const MixtureOptions& options);

// One JSONL line (no trailing newline):
// {"messages":[{"role":...,"content":...},...],"loss_on":"all_assistant",
//  "meta":{"kind":...,"k":...,"family":...,"variant":...,"offset":...}}.
// The loss is meant for every assistant turn (organism/README.md, "Training mixture").
std::string conversation_line(const Conversation& conversation);

// The user question of a lookup round: "Question: What is the choice of V?" with the choices of
// `choices` in the ARC layout of dataset.h, and its answer: choice_scan up to V, then
// " The answer is L.".
std::string lookup_query(const ChoiceSet& choices, int asked);
std::string lookup_answer(const ChoiceSet& choices, int asked);

// The conversation as llama.cpp's ChatML formatter renders it (and kChatTemplate in vocab.h):
// "<|im_start|>{role}\n{content}<|im_end|>\n" per message, then "<|im_start|>assistant\n" when
// add_generation_prompt. Content is not trimmed.
std::string format_chatml(const std::vector<Message>& messages, bool add_generation_prompt);

}  // namespace kvsteer::organism
