// Flags and helpers shared by the kvsteer subcommands.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "eval/prompts.h"
#include "kvsteer/kvsteer.h"

namespace kvsteer::cli {

// Model and context flags (llama.cpp spellings where the concept is the same).
struct ModelOptions {
  std::string model;
  SessionSettings session;
  bool verbose = false;

  void add_to(CLI::App& app, bool model_required = true);
  std::shared_ptr<const Model> load() const;
  SessionParams session_params(const Model& model, std::uint32_t n_seq = 1) const;
};

// The flags that say how the cache is held (--cache-type-k/-v, --flash-attn, --kv-streams), bound
// to the given names; shared by the model-level commands (ModelOptions) and eval/sweep/diagnose.
void add_engine_flags(CLI::App& app, std::string& cache_type_k, std::string& cache_type_v,
                      std::string& flash_attn, std::string& kv_streams);

// How a prompt becomes tokens.
struct PromptOptions {
  std::string prompt;
  std::string prompt_file;
  std::string messages_file;  // a conversation (JSON), rendered with the template
  std::string system;
  std::string prompt_family;
  std::string chat_template;
  bool raw = false;  // no chat template, tokenizer adds BOS as the vocabulary asks
  std::string cot_prefix;
  bool escape = false;  // read \n, \t, \r and \\ in prompt, system and cot_prefix

  void add_to(CLI::App& app);
  // Renders (unless raw) and tokenizes. Throws Error(InvalidArgument) when no prompt is given or
  // an escape cannot be read, Error(Format) for a messages file that is not a conversation
  // (eval/conversation.h); notes on stderr an escape kept as typed.
  std::vector<Token> tokens(const Model& model) const;
};

// Reads the escapes \n, \t, \r and \\ in a text flag, as llama.cpp's tools do: `--offset "\n"`
// typed in a shell passes a backslash and an n, which would otherwise be decoded as the
// backslash's token, silently another offset than the paper's. Other escapes are refused.
CLI::Validator escaped_text();

// Reads the escapes of escaped_text() in place; returns why the text cannot be read, if it cannot.
std::optional<std::string> read_escapes(std::string& text);

// Steering-vector application flags.
struct SteerOptions {
  std::string vector_file;
  float coef_k = 0.0f;
  float coef_v = 1.0f;
  std::string layers;  // both halves, unless layers_k / layers_v are given
  std::string layers_k;
  std::string layers_v;
  std::string offset = "\n";  // text whose first token is decoded after the edit; "none" = off
  std::int32_t offset_id = -1;

  void add_to(CLI::App& app);
  // The vector of --vector, or none. Throws Error(InvalidArgument) when a coefficient or layer
  // flag was given without --vector: the command would run unsteered and look steered.
  std::optional<SteeringVector> load_vector() const;
  SteeringParams params(const Model& model) const;

 private:
  std::vector<const CLI::Option*> vector_flags_;  // --ck, --cv and the layer selections
};

// JSON object describing a fingerprint.
nlohmann::json fingerprint_json(const ModelFingerprint& fp);

// Registers each subcommand on the app; the returned callback runs it.
void add_generate(CLI::App& app);
void add_extract(CLI::App& app);
void add_kv_dump(CLI::App& app);
void add_info(CLI::App& app);
void add_bench(CLI::App& app);
void add_organism(CLI::App& app);
void add_eval(CLI::App& app);
void add_sweep(CLI::App& app);
void add_diagnose(CLI::App& app);
void add_report(CLI::App& app);
void add_serve(CLI::App& app);

}  // namespace kvsteer::cli
