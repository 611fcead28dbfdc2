#include "organism/gen/vocab.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "kvsteer/error.h"
#include "organism/gen/arith.h"
#include "organism/gen/chain.h"
#include "organism/gen/dataset.h"
#include "organism/gen/mixture.h"
#include "organism/gen/text.h"

namespace kvsteer::organism {
namespace {

// Texts the dataset and chat layers add around the families' own words.
void append_format_lexicon(std::vector<std::string>& texts) {
  texts.emplace_back("Question: Choices: A B C D is choice The answer is. vs yes no");
  texts.emplace_back(kCotPrefix);
  texts.emplace_back("user assistant system");
}

// Length in bytes of the UTF-8 character that starts with `lead`.
size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xe) return 3;
  return 4;
}

// Every proper prefix of `piece` that ends on a character boundary.
std::vector<std::string> proper_prefixes(const std::string& piece) {
  std::vector<std::string> prefixes;
  for (size_t end = utf8_length(static_cast<unsigned char>(piece[0])); end < piece.size();
       end += utf8_length(static_cast<unsigned char>(piece[end]))) {
    prefixes.push_back(piece.substr(0, end));
  }
  return prefixes;
}

std::vector<VocabPiece> fixed_pieces() {
  std::vector<VocabPiece> pieces = {{"<unk>", 0.0f, TokenType::Unknown},
                                    {"<s>", 0.0f, TokenType::Control},
                                    {"</s>", 0.0f, TokenType::Control}};
  for (int byte = 0; byte < 256; ++byte) {
    char text[8];
    std::snprintf(text, sizeof text, "<0x%02X>", byte);
    pieces.push_back({text, 0.0f, TokenType::Byte});
  }
  pieces.push_back({"<|im_start|>", 0.0f, TokenType::Control});
  pieces.push_back({"<|im_end|>", 0.0f, TokenType::Control});
  return pieces;
}

// Normal pieces in id order: whole pieces, then prefixes that are not whole pieces, then the
// single characters (printable ASCII and "▁") that are neither.
std::vector<std::string> normal_pieces(int max_number) {
  std::vector<std::string> whole;
  for (const std::string& word : vocab_words(max_number)) {
    whole.push_back(word);
    if (word.size() > 1 || !is_punctuation(word[0]))
      whole.push_back(std::string(kSpaceMarker) + word);
  }
  // Choice labels with their colon come first: the highest scores, so that SentencePiece merges
  // "A" + ":" before "▁" + "A" and "\nA: 58" and " A: 58" both hold the one token "A:". The scan
  // of the choice traces then copies the value that follows its label token (dataset.h).
  std::vector<std::string> ordered;
  for (int i = 0; i < kNumChoices; ++i) ordered.push_back(std::string(1, choice_label(i)) + ":");
  ordered.insert(ordered.end(), whole.begin(), whole.end());
  std::set<std::string> seen(ordered.begin(), ordered.end());
  auto add = [&](const std::string& piece) {
    if (seen.insert(piece).second) ordered.push_back(piece);
  };
  for (const std::string& piece : whole) {
    for (const std::string& prefix : proper_prefixes(piece)) add(prefix);
  }
  add(std::string(kSpaceMarker));
  for (char c = 0x21; c < 0x7f; ++c) add(std::string(1, c));
  return ordered;
}

}  // namespace

std::vector<std::string> vocab_words(int max_number) {
  std::vector<std::string> texts;
  append_arith_lexicon(texts);
  append_chain_lexicon(texts);
  append_format_lexicon(texts);
  std::set<std::string> words;
  for (const std::string& text : texts) {
    for (std::string& word : split_words(text)) words.insert(std::move(word));
  }
  for (int n = 0; n <= max_number; ++n) words.insert(std::to_string(n));
  return {words.begin(), words.end()};
}

std::vector<VocabPiece> build_vocab(int max_number) {
  if (max_number < 9 || max_number > 999) {
    throw Error(ErrorCode::InvalidArgument,
                "vocabulary max_number = " + std::to_string(max_number) +
                    " is out of range; expected 9..999 "
                    "(use the generator's max_value)");
  }
  std::vector<VocabPiece> pieces = fixed_pieces();
  const std::vector<std::string> normal = normal_pieces(max_number);
  for (size_t i = 0; i < normal.size(); ++i) {
    // Earlier pieces score higher, as in SentencePiece models ordered by frequency.
    pieces.push_back({normal[i], -static_cast<float>(i), TokenType::Normal});
  }
  return pieces;
}

std::string vocab_json(int max_number) {
  const std::vector<VocabPiece> pieces = build_vocab(max_number);
  // Arrays are filled before they are inserted: ordered_json stores members in a vector, so a
  // reference to one member dangles once another is added.
  auto tokens = nlohmann::ordered_json::array();
  auto scores = nlohmann::ordered_json::array();
  auto types = nlohmann::ordered_json::array();
  for (const VocabPiece& p : pieces) {
    tokens.push_back(p.text);
    scores.push_back(p.score);
    types.push_back(static_cast<int32_t>(p.type));
  }
  nlohmann::ordered_json out;
  out["model"] = "llama";
  out["tokens"] = std::move(tokens);
  out["scores"] = std::move(scores);
  out["token_type"] = std::move(types);
  out["bos_token_id"] = kBosId;
  out["eos_token_id"] = kEosId;
  out["unknown_token_id"] = kUnkId;
  out["eot_token_id"] = kImEndId;
  out["add_space_prefix"] = false;
  out["chat_template"] = kChatTemplate;
  return out.dump(1);
}

}  // namespace kvsteer::organism
