#include "organism/gen/commands.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <utility>

#include "kvsteer/error.h"
#include "organism/gen/io.h"
#include "organism/gen/vocab.h"

namespace kvsteer::organism {
namespace {

// Flags shared by gen and mixture that set GeneratorOptions.
void add_generator_flags(CLI::App& cmd, GeneratorOptions& g) {
  cmd.add_option("--max-value", g.max_value, "Largest count, intermediate or answer (9..999)")
      ->capture_default_str();
  cmd.add_option("--max-operand", g.max_operand, "Largest amount added or subtracted")
      ->capture_default_str();
  cmd.add_option("--min-ops", g.min_ops, "Fewest operations or hops (1..8)")->capture_default_str();
  cmd.add_option("--max-ops", g.max_ops, "Most operations or hops (min-ops..8)")
      ->capture_default_str();
  cmd.add_flag("--mul", g.allow_mul, "arith: also doubling and tripling steps");
  cmd.add_option("--distractors", g.max_distractors, "chain: most distractor assignments (0..4)")
      ->capture_default_str();
  cmd.add_flag("!--no-shuffle", g.shuffle_chain, "chain: statements in definition order");
}

struct GenState {
  GenOptions options;
  std::string out, split = "train", variant = "numeric", family = "mixed";
};

void add_gen_command(CLI::App& app, const MixtureOptions& defaults) {
  auto state = std::make_shared<GenState>();
  state->options.generator = defaults.generator;
  state->family = std::string(family_mix_name(defaults.family));
  CLI::App* cmd = app.add_subcommand("gen", "Write problems and teacher traces as JSONL");
  cmd->add_option("-s,--seed", state->options.seed, "Random seed")->capture_default_str();
  cmd->add_option("--n", state->options.n, "Number of problems")->capture_default_str();
  cmd->add_option("--split", state->split, "train, validation or test")->capture_default_str();
  cmd->add_option("--variant", state->variant, "numeric or choice")->capture_default_str();
  cmd->add_option("--family", state->family, "arith, chain or mixed")->capture_default_str();
  cmd->add_option("-o,--out", state->out, "Output JSONL file")->required();
  add_generator_flags(*cmd, state->options.generator);
  cmd->callback([state] {
    state->options.split = parse_split(state->split);
    state->options.variant = parse_variant(state->variant);
    state->options.family = parse_family_mix(state->family);
    const int n = run_gen(state->options, state->out);
    std::printf("wrote %d items to %s\n", n, state->out.c_str());
  });
}

struct MixtureState {
  MixtureOptions options;
  std::string out, family = "mixed";
};

void add_mixture_command(CLI::App& app, const MixtureOptions& defaults) {
  auto state = std::make_shared<MixtureState>();
  state->options = defaults;
  state->family = std::string(family_mix_name(defaults.family));
  MixtureOptions& o = state->options;
  CLI::App* cmd = app.add_subcommand("mixture", "Write the training mixture as chat JSONL");
  cmd->add_option("-s,--seed", o.seed, "Random seed")->capture_default_str();
  cmd->add_option("--n", o.n, "Number of conversations")->capture_default_str();
  cmd->add_option("--family", state->family, "arith, chain or mixed")->capture_default_str();
  cmd->add_option("--share-offset", o.share_offset, "Final answers with the extra \\n")
      ->capture_default_str();
  cmd->add_option("--share-offset-examples", o.share_offset_examples,
                  "Example answers of few-shot conversations with the extra \\n")
      ->capture_default_str();
  cmd->add_option("--share-choice", o.share_choice, "Multiple-choice conversations")
      ->capture_default_str();
  cmd->add_option("--share-lookup", o.share_choice_lookup,
                  "Choice-lookup drills (\"What is the choice of V?\")")
      ->capture_default_str();
  cmd->add_option("--share-first-reasoned-trained", o.share_first_reasoned_trained,
                  "Reasoned few-shot conversations whose first example answer carries loss")
      ->capture_default_str();
  cmd->add_option("--max-shots", o.max_shots, "Largest k of few-shot conversations")
      ->capture_default_str();
  cmd->add_option("-o,--out", state->out, "Output JSONL file")->required();
  add_generator_flags(*cmd, o.generator);
  cmd->callback([state] {
    state->options.family = parse_family_mix(state->family);
    const int n = run_mixture(state->options, state->out);
    std::printf("wrote %d conversations to %s\n", n, state->out.c_str());
  });
}

void add_vocab_command(CLI::App& app, const MixtureOptions& defaults) {
  auto state = std::make_shared<std::pair<int, std::string>>(defaults.generator.max_value, "");
  CLI::App* cmd =
      app.add_subcommand("vocab", "Write the tokenizer vocabulary and template as JSON");
  cmd->add_option("--max-value", state->first, "Largest number that is one piece (9..999)")
      ->capture_default_str();
  cmd->add_option("-o,--out", state->second, "Output JSON file")->required();
  cmd->callback([state] {
    const int n = run_vocab(state->first, state->second);
    std::printf("wrote %d pieces to %s\n", n, state->second.c_str());
  });
}

}  // namespace

int run_gen(const GenOptions& options, const std::string& out) {
  std::vector<std::string> lines;
  for (const Item& item : generate_items(options)) lines.push_back(trace_line(item));
  write_lines_atomic(out, lines);
  return static_cast<int>(lines.size());
}

int run_mixture(const MixtureOptions& options, const std::string& out) {
  std::vector<std::string> lines;
  for (const Conversation& c : build_mixture(options)) lines.push_back(conversation_line(c));
  write_lines_atomic(out, lines);
  return static_cast<int>(lines.size());
}

int run_vocab(int max_number, const std::string& out) {
  const int n = static_cast<int>(build_vocab(max_number).size());
  write_text_atomic(out, vocab_json(max_number) + "\n");
  return n;
}

void add_organism_commands(CLI::App& app, const MixtureOptions& defaults) {
  add_gen_command(app, defaults);
  add_mixture_command(app, defaults);
  add_vocab_command(app, defaults);
}

int organism_main(int argc, const char* const* argv) {
  CLI::App app{
      "Generates the reasoning organism's problems, traces, training mixture and "
      "vocabulary.",
      "kvsteer-organism-gen"};
  add_organism_commands(app);
  app.require_subcommand(1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "kvsteer: error: %s\n", e.what());
    return e.code() == ErrorCode::InvalidArgument ? 2 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvsteer: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace kvsteer::organism
