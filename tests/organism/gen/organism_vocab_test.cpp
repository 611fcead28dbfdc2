// The organism vocabulary: layout, and coverage of every generated text under llama.cpp's SPM
// tokenization algorithm (re-implemented below as a reference).
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "kvsteer/error.h"
#include "organism/gen/dataset.h"
#include "organism/gen/mixture.h"
#include "organism/gen/vocab.h"

namespace kvsteer::organism {
namespace {

// llama.cpp's llm_tokenizer_spm on one raw-text fragment (src/llama-vocab.cpp): start from
// UTF-8 characters, repeatedly merge the adjacent pair with the highest score whose
// concatenation is a piece (ties: leftmost), then emit pieces, or byte tokens for characters
// that are no piece. Special tokens are split out first, as with parse_special = true.
class SpmReference {
 public:
  explicit SpmReference(const std::vector<VocabPiece>& pieces) : pieces_(pieces) {
    for (size_t i = 0; i < pieces.size(); ++i) ids_[pieces[i].text] = static_cast<int>(i);
  }

  std::vector<int> tokenize(const std::string& text, bool add_space_prefix) const {
    std::vector<int> ids;
    bool prev_special = true;
    for (size_t pos = 0; pos < text.size();) {
      const size_t special = std::min(text.find("<|im_start|>", pos), text.find("<|im_end|>", pos));
      if (special == pos) {
        const bool start = text.compare(pos, 12, "<|im_start|>") == 0;
        ids.push_back(start ? kImStartId : kImEndId);
        pos += start ? 12 : 10;
        prev_special = true;
        continue;
      }
      const size_t end = std::min(special, text.size());
      fragment(text.substr(pos, end - pos), add_space_prefix && prev_special, ids);
      prev_special = false;
      pos = end;
    }
    return ids;
  }

  // Concatenated piece texts with "▁" as spaces and byte tokens as their bytes.
  std::string detokenize(const std::vector<int>& ids) const {
    std::string out;
    for (const int id : ids) {
      const VocabPiece& p = pieces_[static_cast<size_t>(id)];
      if (p.type == TokenType::Byte) {
        out += static_cast<char>(std::stoi(p.text.substr(3, 2), nullptr, 16));
      } else {
        out += p.text;
      }
    }
    for (size_t at = out.find(kSpaceMarker); at != std::string::npos; at = out.find(kSpaceMarker)) {
      out.replace(at, kSpaceMarker.size(), " ");
    }
    return out;
  }

 private:
  void fragment(std::string text, bool space_prefix, std::vector<int>& ids) const {
    if (space_prefix) text = " " + text;
    std::vector<std::string> symbols;
    for (size_t i = 0; i < text.size();) {
      const auto lead = static_cast<unsigned char>(text[i]);
      const size_t n = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xe ? 3 : 4;
      symbols.push_back(text[i] == ' ' ? std::string(kSpaceMarker) : text.substr(i, n));
      i += n;
    }
    merge(symbols);
    for (const std::string& s : symbols) {
      const auto it = ids_.find(s);
      if (it != ids_.end()) {
        ids.push_back(it->second);
        continue;
      }
      for (const char c : s) ids.push_back(kFirstByteId + static_cast<unsigned char>(c));
    }
  }

  // Score of merging symbols[i] and symbols[i + 1], or -inf when the pair is no piece.
  float pair_score(const std::vector<std::string>& symbols, size_t i) const {
    const auto it = ids_.find(symbols[i] + symbols[i + 1]);
    return it == ids_.end() ? -1e30f : pieces_[static_cast<size_t>(it->second)].score;
  }

  void merge(std::vector<std::string>& symbols) const {
    std::vector<float> scores;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) scores.push_back(pair_score(symbols, i));
    while (!scores.empty()) {
      size_t best = 0;
      for (size_t i = 1; i < scores.size(); ++i) best = scores[i] > scores[best] ? i : best;
      if (scores[best] <= -1e30f) return;
      symbols[best] += symbols[best + 1];
      symbols.erase(symbols.begin() + static_cast<long>(best) + 1);
      scores.erase(scores.begin() + static_cast<long>(best));
      if (best < scores.size()) scores[best] = pair_score(symbols, best);
      if (best > 0) scores[best - 1] = pair_score(symbols, best - 1);
    }
  }

  std::vector<VocabPiece> pieces_;
  std::unordered_map<std::string, int> ids_;
};

// What llama.cpp tokenizes with add_space_prefix: a space before every raw-text fragment that
// starts the text or follows a special token.
std::string with_space_prefixes(const std::string& text) {
  std::string out;
  bool prev_special = true;
  for (size_t pos = 0; pos < text.size();) {
    bool matched = false;
    for (const std::string special : {"<|im_start|>", "<|im_end|>"}) {
      if (!matched && text.compare(pos, special.size(), special) == 0) {
        out += special;
        pos += special.size();
        matched = true;
      }
    }
    if (!matched) {
      if (prev_special) out += ' ';
      out += text[pos++];
    }
    prev_special = matched;
  }
  return out;
}

class OrganismVocabCoverage : public ::testing::Test {
 protected:
  OrganismVocabCoverage() : pieces_(build_vocab(99)), spm_(pieces_) {  // spm_ copies pieces_
    for (const std::string& w : vocab_words(99)) {
      whole_.insert(w);
      whole_.insert(std::string(kSpaceMarker) + w);
    }
    whole_.insert(std::string(kSpaceMarker));
    for (const char* label : {"A:", "B:", "C:", "D:"}) whole_.insert(label);
  }

  // Every token is a whole word, "▁", a control token or the newline byte, and the tokens
  // spell the text again.
  void expect_covered(const std::string& text) {
    for (const bool space_prefix : {false, true}) {
      const std::vector<int> ids = spm_.tokenize(text, space_prefix);
      for (const int id : ids) {
        const VocabPiece& p = pieces_[static_cast<size_t>(id)];
        if (p.type == TokenType::Byte) {
          ASSERT_EQ(p.text, "<0x0A>") << "byte fallback in: " << text;
        } else if (p.type == TokenType::Normal) {
          ASSERT_TRUE(whole_.count(p.text)) << "partial piece '" << p.text << "' in: " << text;
        }
      }
      const std::string expected = space_prefix ? with_space_prefixes(text) : text;
      ASSERT_EQ(spm_.detokenize(ids), expected);
    }
  }

  std::vector<VocabPiece> pieces_;
  SpmReference spm_;
  std::set<std::string> whole_;
};

TEST(OrganismVocab, FixedIdsAndTypes) {
  const std::vector<VocabPiece> pieces = build_vocab(99);
  EXPECT_EQ(pieces[kUnkId].text, "<unk>");
  EXPECT_EQ(pieces[kUnkId].type, TokenType::Unknown);
  EXPECT_EQ(pieces[kBosId].text, "<s>");
  EXPECT_EQ(pieces[kEosId].text, "</s>");
  EXPECT_EQ(pieces[kBosId].type, TokenType::Control);
  EXPECT_EQ(pieces[kFirstByteId].text, "<0x00>");
  EXPECT_EQ(pieces[kFirstByteId + 10].text, "<0x0A>");
  EXPECT_EQ(pieces[kFirstByteId + 255].text, "<0xFF>");
  for (int b = 0; b < 256; ++b) EXPECT_EQ(pieces[kFirstByteId + b].type, TokenType::Byte);
  EXPECT_EQ(pieces[kImStartId].text, "<|im_start|>");
  EXPECT_EQ(pieces[kImEndId].text, "<|im_end|>");
  EXPECT_EQ(pieces[kImEndId].type, TokenType::Control);
}

TEST(OrganismVocab, PiecesAreUniqueAndPrefixClosed) {
  const std::vector<VocabPiece> pieces = build_vocab(99);
  std::set<std::string> texts;
  for (const VocabPiece& p : pieces) EXPECT_TRUE(texts.insert(p.text).second) << p.text;
  for (const VocabPiece& p : pieces) {
    if (p.type != TokenType::Normal) continue;
    EXPECT_EQ(p.text.find('\n'), std::string::npos);
    EXPECT_EQ(p.text.find(' '), std::string::npos);
    // A "▁" only at the start; every shorter prefix is a piece too.
    EXPECT_EQ(p.text.find(kSpaceMarker, 1), std::string::npos) << p.text;
    const size_t first = p.text.rfind(kSpaceMarker, 0) == 0 ? kSpaceMarker.size() : 1;
    for (size_t end = first; end < p.text.size(); ++end) {
      EXPECT_TRUE(texts.count(p.text.substr(0, end))) << p.text << " lacks prefix " << end;
    }
  }
  EXPECT_LT(pieces.size(), 4000u);
}

TEST(OrganismVocab, NumbersAreSinglePiecesInBothForms) {
  SpmReference spm(build_vocab(99));
  const std::vector<VocabPiece> pieces = build_vocab(99);
  for (int n = 0; n <= 99; ++n) {
    const auto with_space = spm.tokenize(" " + std::to_string(n), false);
    ASSERT_EQ(with_space.size(), 1u) << n;
    EXPECT_EQ(pieces[static_cast<size_t>(with_space[0])].text,
              std::string(kSpaceMarker) + std::to_string(n));
    EXPECT_EQ(spm.tokenize(std::to_string(n), false).size(), 1u) << n;
  }
}

// The choice scan copies the value after its label token, in the list and in the trace alike.
TEST(OrganismVocab, ChoiceLabelsAreOneTokenInTheListAndInTheScan) {
  const std::vector<VocabPiece> pieces = build_vocab(39);
  SpmReference spm(pieces);
  auto texts = [&](const std::string& text) {
    std::vector<std::string> out;
    for (const int id : spm.tokenize(text, false)) out.push_back(pieces[size_t(id)].text);
    return out;
  };
  const std::string space(kSpaceMarker);
  EXPECT_EQ(texts("\nC: 23"), (std::vector<std::string>{"<0x0A>", "C:", space + "23"}));
  EXPECT_EQ(texts(". C: 23 vs 5 no."),
            (std::vector<std::string>{".", space, "C:", space + "23", space + "vs", space + "5",
                                      space + "no", "."}));
  EXPECT_EQ(texts("A: 5 vs 5 yes."), (std::vector<std::string>{"A:", space + "5", space + "vs",
                                                               space + "5", space + "yes", "."}));
  // Elsewhere the letters stay words: the answer and the question's own colons.
  EXPECT_EQ(texts(" The answer is C."), (std::vector<std::string>{space + "The", space + "answer",
                                                                  space + "is", space + "C", "."}));
  EXPECT_EQ(texts("Choices:"), (std::vector<std::string>{"Choices", ":"}));
}

TEST(OrganismVocab, NewlineIsTheByteTokenAndOffsetIsOneToken) {
  SpmReference spm(build_vocab(99));
  EXPECT_EQ(spm.tokenize("\n", false), std::vector<int>{kFirstByteId + 0x0A});
}

TEST_F(OrganismVocabCoverage, EveryTraceTextIsWholeWords) {
  for (const Variant v : {Variant::Numeric, Variant::Choice}) {
    GenOptions o;
    o.seed = 12;
    o.n = 400;
    o.variant = v;
    o.generator.allow_mul = true;
    for (const Item& item : generate_items(o)) {
      expect_covered(item.query);
      expect_covered(reasoned_answer(item));
      expect_covered(direct_answer(item));
    }
  }
}

TEST_F(OrganismVocabCoverage, EveryMixtureConversationIsWholeWords) {
  MixtureOptions o;
  o.seed = 13;
  o.n = 300;
  for (const Conversation& c : build_mixture(o)) expect_covered(format_chatml(c.messages, false));
}

TEST(OrganismVocab, JsonNamesTheGgufFields) {
  const auto json = nlohmann::json::parse(vocab_json(99));
  EXPECT_EQ(json.at("model"), "llama");
  EXPECT_EQ(json.at("tokens").size(), build_vocab(99).size());
  EXPECT_EQ(json.at("scores").size(), json.at("tokens").size());
  EXPECT_EQ(json.at("token_type").size(), json.at("tokens").size());
  EXPECT_EQ(json.at("eot_token_id"), kImEndId);
  EXPECT_NE(json.at("chat_template").get<std::string>().find("<|im_start|>"), std::string::npos);
}

TEST(OrganismVocab, RejectsOutOfRangeNumbers) {
  EXPECT_THROW(build_vocab(5), Error);
  EXPECT_THROW(build_vocab(1000), Error);
}

}  // namespace
}  // namespace kvsteer::organism
