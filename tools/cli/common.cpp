#include "common.h"

#include "eval/conversation.h"
#include "kvsteer/file_io.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

namespace kvsteer::cli {

void ModelOptions::add_to(CLI::App& app, bool model_required) {
  auto* m = app.add_option("-m,--model", model, "GGUF model file");
  if (model_required) {
    m->required();
  }
  app.add_option("-c,--ctx-size", session.n_ctx,
                 "context size in tokens (0 = model's, at most 8192)");
  app.add_option("-b,--batch-size", session.n_batch,
                 "tokens per decode call (fixed for reproducibility)")
      ->check(CLI::Range(1u, 65536u));
  app.add_option("-t,--threads", session.n_threads, "CPU threads (0 = all)")
      ->check(CLI::Range(0, 1024));
  add_engine_flags(app, session.type_k, session.type_v, session.flash_attn, session.kv_streams);
  app.add_option("--edit-route", session.edit_route,
                 "how cells are edited: one-cell (O(1), default) or full (whole sequence; "
                 "--kv-streams per-sequence implies it)")
      ->check(CLI::IsMember({"one-cell", "full"}));
  app.add_flag("-v,--verbose", verbose, "print libllama's log");
}

void add_engine_flags(CLI::App& app, std::string& cache_type_k, std::string& cache_type_v,
                      std::string& flash_attn, std::string& kv_streams) {
  app.add_option("--cache-type-k,--ctk", cache_type_k, "K cache type: f32, f16, bf16, q8_0, q4_0")
      ->capture_default_str();
  app.add_option("--cache-type-v,--ctv", cache_type_v, "V cache type: f32, f16, bf16, q8_0, q4_0")
      ->capture_default_str();
  app.add_option("--flash-attn,--fa", flash_attn, "flash attention: on, off, auto")
      ->capture_default_str()
      ->check(CLI::IsMember({"on", "off", "auto"}));
  app.add_option("--kv-streams", kv_streams,
                 "unified (one cache stream) or per-sequence (each sequence attends over its own "
                 "cells only: faster with many long sequences; docs/DESIGN.md)")
      ->capture_default_str()
      ->check(CLI::IsMember({"unified", "per-sequence"}));
}

std::shared_ptr<const Model> ModelOptions::load() const {
  if (verbose) {
    Backend::set_log_level(LogLevel::Info);
  }
  return load_model(model);
}

SessionParams ModelOptions::session_params(const Model& m, std::uint32_t n_seq) const {
  return kvsteer::session_params(m, session, n_seq);
}

void PromptOptions::add_to(CLI::App& app) {
  auto* text = app.add_option("-p,--prompt", prompt, "prompt text (the user turn, unless --raw)");
  auto* file = app.add_option("-f,--file", prompt_file, "read the prompt from a file")
                   ->check(CLI::ExistingFile)
                   ->excludes(text);
  auto* messages = app.add_option("--messages", messages_file,
                                  "a conversation instead of a prompt: a JSON file holding a list "
                                  "of {\"role\", \"content\"} messages, rendered with the "
                                  "template and its generation prompt")
                       ->check(CLI::ExistingFile)
                       ->excludes(text)
                       ->excludes(file);
  messages->excludes(app.add_option("--system", system, "system message"));
  app.add_option("--prompt-family", prompt_family,
                 "render with the reference template of a family: llama32, llama31, qwen2, "
                 "smollm2, phi4mini, chatml (default: detected from the model's template)");
  app.add_option("--chat-template", chat_template,
                 "chat template override: a built-in name (chatml, llama3, phi3, ...) or text");
  messages->excludes(
      app.add_flag("--raw", raw, "tokenize the prompt as is, without the chat template"));
  app.add_option("--cot-prefix", cot_prefix,
                 "text appended after the generation prompt, e.g. \"Let's think step by step.\"");
  app.add_flag("-e,--escape", escape,
               "read the escapes \\n, \\t, \\r and \\\\ in --prompt, --system and --cot-prefix "
               "(a --file is read as it is)");
}

namespace {

// The flags whose text is content: kept as typed unless --escape.
struct PromptText {
  const char* flag;
  std::string text;
};

bool holds_escape(const std::string& text) {
  for (std::size_t i = 0; i + 1 < text.size(); ++i) {
    if (text[i] == '\\' && (text[i + 1] == 'n' || text[i + 1] == 't' || text[i + 1] == 'r')) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::vector<Token> PromptOptions::tokens(const Model& model) const {
  PromptText user{"--prompt", prompt};
  PromptText sys{"--system", system};
  PromptText cot{"--cot-prefix", cot_prefix};
  for (PromptText* t : {&user, &sys, &cot}) {
    if (escape) {
      if (auto why = read_escapes(t->text)) {
        throw Error(ErrorCode::InvalidArgument, std::string(t->flag) + ": " + *why);
      }
    } else if (holds_escape(t->text)) {
      // A prompt is content, so it is kept as typed; but `-p "a\nb"` in a shell is rarely meant
      // to hold a backslash, and the model would answer another prompt without a word.
      std::cerr << "kvsteer: note: " << t->flag
                << " holds a backslash escape (\\n, \\t or \\r), kept as typed; -e reads it\n";
    }
  }
  if (!messages_file.empty()) {
    const std::string where = "messages file '" + messages_file + "'";
    nlohmann::json list;
    try {
      list = nlohmann::json::parse(read_text_file(messages_file, "messages file"));
    } catch (const nlohmann::json::exception& e) {
      throw Error(ErrorCode::Format, where + " is not valid JSON: " + e.what());
    }
    return model.tokenize_prompt(
        eval::render_conversation(model, eval::conversation_from_json(list, where), prompt_family,
                                  chat_template) +
        cot.text);
  }
  std::string text = user.text;
  if (!prompt_file.empty()) {
    text = read_text_file(prompt_file, "prompt file");
  }
  if (text.empty()) {
    throw Error(ErrorCode::InvalidArgument,
                "no prompt: pass --prompt TEXT, --file FILE or --messages FILE");
  }
  if (raw) {
    return model.tokenize_prompt(text + cot.text);
  }
  return model.tokenize_prompt(
      eval::render_user_turn(model, text, sys.text, prompt_family, chat_template) + cot.text);
}

// The spellings of `kvsteer eval` and `sweep` (--vector, --ck, --cv; the server's vector, c_k,
// c_v); --steer, --coef-k and --coef-v stay as aliases for scripts written before.
void SteerOptions::add_to(CLI::App& app) {
  app.add_option("--vector,--steer", vector_file, "steering vector file (from kvsteer extract)");
  vector_flags_ = {
      app.add_option("--ck,--coef-k", coef_k, "c_k: scale of the key vector (paper default 0)"),
      app.add_option("--cv,--coef-v", coef_v, "c_v: scale of the value vector"),
      app.add_option("--layers", layers,
                     "layers to steer: '1-' (>= 1, default), 'all', '3,5', '2-6'"),
      app.add_option("--layers-k", layers_k, "layers for keys (overrides --layers)"),
      app.add_option("--layers-v", layers_v, "layers for values (overrides --layers)")};
  app.add_option("--offset", offset,
                 "text whose first token is decoded after the edit (paper: \"\\n\", escapes "
                 "read); 'none' steers the second-last prompt token and decodes the last")
      ->transform(escaped_text());
  app.add_option("--offset-id", offset_id, "offset token by id (overrides --offset)");
}

std::optional<std::string> read_escapes(std::string& text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\') {
      out += text[i];
      continue;
    }
    if (++i == text.size()) {
      return "ends with a lone backslash; write \\\\ for one";
    }
    switch (text[i]) {
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case '\\':
        out += '\\';
        break;
      default:
        return std::string("unknown escape '\\") + text[i] + "'; use \\n, \\t, \\r or \\\\";
    }
  }
  text = std::move(out);
  return std::nullopt;
}

CLI::Validator escaped_text() {
  return CLI::Validator(
      [](std::string& text) -> std::string { return read_escapes(text).value_or(""); }, "",
      "escaped text");
}

std::optional<SteeringVector> SteerOptions::load_vector() const {
  if (vector_file.empty()) {
    for (const CLI::Option* flag : vector_flags_) {
      if (flag->count() > 0) {
        throw Error(ErrorCode::InvalidArgument,
                    flag->get_name() + " scales or places a steering vector: give --vector FILE");
      }
    }
    return std::nullopt;
  }
  return load_steering_vector(vector_file);
}

SteeringParams SteerOptions::params(const Model& model) const {
  SteeringParams p;
  p.coef_k = coef_k;
  p.coef_v = coef_v;
  const std::string both = layers.empty() ? "1-" : layers;
  p.layers_k = LayerSelection::parse(layers_k.empty() ? both : layers_k);
  p.layers_v = LayerSelection::parse(layers_v.empty() ? both : layers_v);
  if (!std::isfinite(coef_k) || !std::isfinite(coef_v)) {
    throw Error(ErrorCode::InvalidArgument, "--ck and --cv must be finite numbers");
  }
  if (offset_id >= 0) {
    model.check_token(offset_id);
    p.offset_token = offset_id;
  } else if (offset != "none") {
    const auto ids = model.tokenize(offset, false, false);
    if (ids.empty()) {
      throw Error(ErrorCode::InvalidArgument,
                  "--offset '" + offset + "' has no token; --offset none decodes none");
    }
    p.offset_token = ids.front();
  }
  return p;
}

nlohmann::json fingerprint_json(const ModelFingerprint& fp) {
  return {{"arch", fp.arch},
          {"n_layer", fp.n_layer},
          {"n_head", fp.n_head},
          {"n_head_kv", fp.n_head_kv},
          {"n_embd", fp.n_embd},
          {"n_embd_head_k", fp.n_embd_head_k},
          {"n_embd_head_v", fp.n_embd_head_v},
          {"n_embd_k_gqa", fp.n_embd_k_gqa},
          {"n_embd_v_gqa", fp.n_embd_v_gqa},
          {"rope_type", fp.rope_type},
          {"n_vocab", fp.n_vocab},
          {"vocab_hash", fp.vocab_hash}};
}

}  // namespace kvsteer::cli
