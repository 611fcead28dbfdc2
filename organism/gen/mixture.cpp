#include "organism/gen/mixture.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "kvsteer/error.h"
#include "organism/gen/dataset.h"
#include "organism/gen/rng.h"
#include "organism/gen/text.h"

namespace kvsteer::organism {
namespace {

void require(bool ok, std::string_view field, const std::string& value, std::string_view expected) {
  if (!ok) {
    throw Error(ErrorCode::InvalidArgument, "mixture option " + std::string(field) + " = " + value +
                                                " is out of range; expected " +
                                                std::string(expected));
  }
}

bool is_share(double p) { return p >= 0.0 && p <= 1.0; }

void validate_mixture(const MixtureOptions& o) {
  validate(o.generator);
  require(o.n >= 1 && o.n <= 1'000'000, "n", std::to_string(o.n), "1..1000000");
  require(o.min_shots >= 1, "min_shots", std::to_string(o.min_shots), ">= 1");
  require(o.max_shots >= o.min_shots && o.max_shots <= 16, "max_shots", std::to_string(o.max_shots),
          "min_shots..16");
  const double shares[] = {o.share_fewshot_reasoned, o.share_fewshot_direct,
                           o.share_zeroshot_direct, o.share_zeroshot_cot};
  double sum = 0.0;
  for (const double s : shares) {
    require(is_share(s), "kind share", std::to_string(s), "0..1");
    sum += s;
  }
  require(std::fabs(sum - 1.0) <= 1e-6, "sum of kind shares", std::to_string(sum), "1");
  require(is_share(o.share_offset), "share_offset", std::to_string(o.share_offset), "0..1");
  require(is_share(o.share_choice), "share_choice", std::to_string(o.share_choice), "0..1");
  require(is_share(o.share_offset_examples), "share_offset_examples",
          std::to_string(o.share_offset_examples), "0..1");
  require(is_share(o.share_choice_lookup), "share_choice_lookup",
          std::to_string(o.share_choice_lookup), "0..1");
  require(is_share(o.share_first_reasoned_trained), "share_first_reasoned_trained",
          std::to_string(o.share_first_reasoned_trained), "0..1");
}

ConversationKind choose_kind(const MixtureOptions& o, Rng& rng) {
  const double u = rng.unit();
  if (u < o.share_fewshot_reasoned) return ConversationKind::FewShotReasoned;
  if (u < o.share_fewshot_reasoned + o.share_fewshot_direct) return ConversationKind::FewShotDirect;
  if (u < 1.0 - o.share_zeroshot_cot) return ConversationKind::ZeroShotDirect;
  return ConversationKind::ZeroShotCot;
}

// Drawn only for a share strictly between 0 and 1, so that the all-or-nothing mixtures of organism
// v2 and v3 keep their bytes.
bool first_reasoned_trained(const MixtureOptions& o, Rng& rng) {
  if (o.share_first_reasoned_trained <= 0.0) return false;
  if (o.share_first_reasoned_trained >= 1.0) return true;
  return rng.bernoulli(o.share_first_reasoned_trained);
}

bool is_fewshot(ConversationKind kind) {
  return kind == ConversationKind::FewShotReasoned || kind == ConversationKind::FewShotDirect;
}

// The final assistant turn. The offset "\n" comes right after what the prompt would hold: the
// generation prompt, or "Let's think step by step." for the CoT kind (method.md 1.4, 3.4).
std::string final_answer(const Conversation& c, const Item& item) {
  const std::string newline = c.offset ? "\n" : "";
  switch (c.kind) {
    case ConversationKind::FewShotReasoned:
      return newline + reasoned_answer(item);
    case ConversationKind::ZeroShotCot:
      return std::string(kCotPrefix) + newline + " " + reasoned_answer(item);
    default:
      return newline + direct_answer(item);
  }
}

// k + 1 distinct problems of one family: the examples, then the final question.
std::vector<Item> draw_items(const Conversation& c, ProblemSource& source, uint64_t seed) {
  std::vector<Item> items;
  while (static_cast<int>(items.size()) < c.k + 1) {
    Problem problem = source.next(c.family);
    bool duplicate = false;
    for (const Item& item : items)
      duplicate = duplicate || item.problem.question == problem.question;
    if (!duplicate)
      items.push_back(make_item(std::move(problem), c.variant, seed, source.options()));
  }
  return items;
}

// k + 1 rounds, each a fresh choice set of a train-split problem; the asked value is uniform over
// the four, so the letter cannot be guessed from the position of the answer in the problems.
Conversation build_lookup(const MixtureOptions& o, ProblemSource& source, Rng& rng) {
  Conversation c;
  c.kind = ConversationKind::ChoiceLookup;
  c.k = rng.uniform(o.min_shots, o.max_shots) - 1;
  c.family = o.family == FamilyMix::Chain ? Family::Chain : Family::Arith;
  c.variant = Variant::Choice;
  c.offset = rng.bernoulli(o.share_offset);
  for (int round = 0; round <= c.k; ++round) {
    const Item item = make_item(source.next(c.family), Variant::Choice, o.seed, source.options());
    const int asked = rng.uniform(0, kNumChoices - 1);
    const bool offset = round == c.k ? c.offset : rng.bernoulli(o.share_offset_examples);
    c.messages.push_back({"user", lookup_query(item.choices, asked)});
    c.messages.push_back({"assistant", (offset ? "\n" : "") + lookup_answer(item.choices, asked)});
  }
  return c;
}

Conversation build_conversation(const MixtureOptions& o, ProblemSource& source, Rng& rng) {
  if (o.share_choice_lookup > 0.0 && rng.bernoulli(o.share_choice_lookup)) {
    return build_lookup(o, source, rng);
  }
  Conversation c;
  c.kind = choose_kind(o, rng);
  c.k = is_fewshot(c.kind) ? rng.uniform(o.min_shots, o.max_shots) : 0;
  c.family = o.family == FamilyMix::Arith   ? Family::Arith
             : o.family == FamilyMix::Chain ? Family::Chain
             : rng.bernoulli(0.5)           ? Family::Chain
                                            : Family::Arith;
  c.variant = rng.bernoulli(o.share_choice) ? Variant::Choice : Variant::Numeric;
  c.offset = rng.bernoulli(o.share_offset);
  const std::vector<Item> items = draw_items(c, source, o.seed);
  for (int i = 0; i < c.k; ++i) {
    const Item& example = items[static_cast<size_t>(i)];
    c.messages.push_back({"user", example.query});
    // Drawn only when enabled, so that a mixture without example offsets keeps its bytes.
    const bool offset = o.share_offset_examples > 0.0 && rng.bernoulli(o.share_offset_examples);
    const bool reasoned = c.kind == ConversationKind::FewShotReasoned;
    const bool trained = !reasoned || i > 0 || first_reasoned_trained(o, rng);
    c.messages.push_back(
        {"assistant",
         (offset ? "\n" : "") + (reasoned ? reasoned_answer(example) : direct_answer(example)),
         trained});
  }
  c.messages.push_back({"user", items.back().query});
  c.messages.push_back({"assistant", final_answer(c, items.back())});
  return c;
}

}  // namespace

std::string_view conversation_kind_name(ConversationKind kind) {
  switch (kind) {
    case ConversationKind::FewShotReasoned:
      return "fewshot_reasoned";
    case ConversationKind::FewShotDirect:
      return "fewshot_direct";
    case ConversationKind::ZeroShotDirect:
      return "zeroshot_direct";
    case ConversationKind::ZeroShotCot:
      return "zeroshot_cot";
    case ConversationKind::ChoiceLookup:
      return "choice_lookup";
  }
  return "zeroshot_direct";
}

std::vector<Conversation> build_mixture(const MixtureOptions& options) {
  validate_mixture(options);
  // Separate streams: the problem stream does not shift when the mixture shares change.
  ProblemSource source(options.seed, options.split, options.family, options.generator);
  Rng rng(mix64(options.seed ^ 0x6d69787475726521ULL));  // "mixture!"
  std::vector<Conversation> conversations;
  conversations.reserve(static_cast<size_t>(options.n));
  for (int i = 0; i < options.n; ++i) {
    conversations.push_back(build_conversation(options, source, rng));
  }
  return conversations;
}

std::string conversation_line(const Conversation& conversation) {
  auto messages = nlohmann::ordered_json::array();
  for (const Message& m : conversation.messages) {
    nlohmann::ordered_json message = {{"role", m.role}, {"content", m.content}};
    if (!m.trained) message["train"] = false;
    messages.push_back(std::move(message));
  }
  nlohmann::ordered_json line;
  line["messages"] = std::move(messages);
  const bool all_trained = std::all_of(conversation.messages.begin(), conversation.messages.end(),
                                       [](const Message& m) { return m.trained; });
  line["loss_on"] = all_trained ? "all_assistant" : "assistant_unless_marked";
  line["meta"] = {{"kind", conversation_kind_name(conversation.kind)},
                  {"k", conversation.k},
                  {"family", family_name(conversation.family)},
                  {"variant", variant_name(conversation.variant)},
                  {"offset", conversation.offset}};
  return line.dump();
}

std::string lookup_query(const ChoiceSet& choices, int asked) {
  const int value = choices.values.at(static_cast<size_t>(asked));
  return choice_query("What is the choice of " + std::to_string(value) + "?", choices);
}

std::string lookup_answer(const ChoiceSet& choices, int asked) {
  const int value = choices.values.at(static_cast<size_t>(asked));
  return join(choice_scan(choices, value), " ") + " The answer is " +
         std::string(1, choice_label(asked)) + ".";
}

std::string format_chatml(const std::vector<Message>& messages, bool add_generation_prompt) {
  std::string text;
  for (const Message& m : messages) {
    text += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  }
  if (add_generation_prompt) text += "<|im_start|>assistant\n";
  return text;
}

}  // namespace kvsteer::organism
