#include "eval/pairs_file.h"

#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "eval/conversation.h"
#include "eval/prompts.h"
#include "eval/traces.h"
#include "kvsteer/error.h"
#include "kvsteer/file_io.h"

namespace kvsteer::eval {
namespace {

struct Renderer {
  const Model& model;
  const PairsFileExtraction& x;
  const std::string& path;

  std::string at(std::size_t line) const {
    return "pairs file '" + path + "' line " + std::to_string(line) + ": ";
  }

  [[noreturn]] void refuse(std::size_t line, const std::string& what) const {
    throw Error(ErrorCode::Format, at(line) + what);
  }

  std::vector<Token> tokens(const nlohmann::json& row, std::size_t line, const char* key) const {
    if (!row.contains(key)) {
      refuse(line, std::string("no '") + key + "' side");
    }
    const nlohmann::json& side = row[key];
    std::string text;
    if (side.is_string()) {
      text = side.get<std::string>();
      if (text.empty()) {
        refuse(line, std::string("'") + key + "' is an empty string");
      }
      if (!x.raw) {
        text = render_user_turn(model, text, "", x.prompt_family, x.chat_template);
      }
    } else if (side.is_array()) {
      if (x.raw) {
        throw Error(ErrorCode::InvalidArgument,
                    at(line) + "'" + key +
                        "' is a message list, which needs the chat template; --raw takes strings");
      }
      const auto chat = conversation_from_json(side, at(line) + "'" + key + "'");
      text = render_conversation(model, chat, x.prompt_family, x.chat_template);
    } else {
      refuse(line, std::string("'") + key + "' is neither a string nor a list of messages");
    }
    return model.tokenize_prompt(text + x.cot_prefix);
  }
};

}  // namespace

PairsFromFile contrastive_set_from_pairs_file(const Model& model, const PairsFileExtraction& x) {
  const std::string bytes = read_text_file(x.path, "pairs file");
  const Renderer render{model, x, x.path};
  PairsFromFile out;
  std::istringstream lines(bytes);
  std::string line;
  std::size_t n = 0;
  while (std::getline(lines, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      continue;
    }
    if (x.n_pairs != 0 && out.set.pairs.size() == x.n_pairs) {
      break;
    }
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      render.refuse(n, std::string("not valid JSON: ") + e.what());
    }
    if (!row.is_object()) {
      render.refuse(n, "not an object {\"positive\": ..., \"negative\": ...}");
    }
    out.set.pairs.push_back({render.tokens(row, n, "positive"), render.tokens(row, n, "negative")});
    out.lines.push_back(n);
  }
  if (out.set.pairs.empty()) {
    throw Error(ErrorCode::Format, "pairs file '" + x.path + "' has no pairs");
  }
  if (x.n_pairs > out.set.pairs.size()) {
    throw Error(ErrorCode::InvalidArgument,
                "--n-pairs " + std::to_string(x.n_pairs) + " is more than the " +
                    std::to_string(out.set.pairs.size()) + " pairs of '" + x.path + "'");
  }
  out.set.traces_sha256 = sha256_hex(bytes);
  out.set.rendered_with =
      x.raw ? "none (raw)" : rendered_with(model, x.prompt_family, x.chat_template);
  return out;
}

std::vector<std::size_t> pairs_differing_at(std::span<const ContrastivePair> pairs, Pos position) {
  std::vector<std::size_t> out;
  const auto at = [position](const std::vector<Token>& t) -> std::optional<Token> {
    const auto n = static_cast<Pos>(t.size());
    const Pos p = position < 0 ? n + position : position;
    if (p < 0 || p >= n) {
      return std::nullopt;
    }
    return t[static_cast<std::size_t>(p)];
  };
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    const auto pos = at(pairs[i].positive);
    const auto neg = at(pairs[i].negative);
    if (pos && neg && *pos != *neg) {
      out.push_back(i);
    }
  }
  return out;
}

void record_pairs_file_provenance(SteeringVector& vector, const PairsFileExtraction& x,
                                  const ContrastiveSet& set, Pos position, std::uint32_t parallel,
                                  std::uint32_t n_batch) {
  vector.info.n_shots = 0;
  vector.info.traces_sha256 = set.traces_sha256;
  vector.info.chat_template = set.rendered_with;
  vector.info.source = "kvsteer extract --pairs-file" +
                       (x.n_pairs == 0 ? "" : " --n-pairs " + std::to_string(x.n_pairs)) +
                       (x.raw ? " --raw" : "") + (x.cot_prefix.empty() ? "" : " --cot-prefix") +
                       (position == -1 ? "" : " --position " + std::to_string(position)) +
                       " --parallel " + std::to_string(parallel) + " --batch-size " +
                       std::to_string(n_batch);
}

}  // namespace kvsteer::eval
