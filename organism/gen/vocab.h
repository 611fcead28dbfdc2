// Vocabulary of the organism's SentencePiece-style tokenizer ("llama" vocab type in GGUF) and its
// ChatML chat template. The GGUF writer stores pieces()[i] as token i.
//
// Every word the generator can emit is one piece, in two forms: "▁word" (after a space) and
// "word" (at the start of a line or text). Numbers 0..max_number are single pieces too, so each
// arithmetic step is one lookup for the model instead of digit-by-digit carries.
//
// llama.cpp's SPM tokenizer does not match longest pieces: it starts from single characters and
// repeatedly merges the adjacent pair with the highest score whose concatenation is a piece. A
// word is therefore reachable only if its intermediate merges are pieces too, so every prefix of
// a piece is also a piece ("▁a", "▁ap", ..., "▁apples"). With prefix-closed pieces and no piece
// that spans a space or punctuation, the merges always end at the whole word, whatever the scores.
// "\n" has no piece: it falls back to the byte token <0x0A>, as in Llama-2 vocabularies.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvsteer::organism {

// Values of llama.cpp's llama_token_type (tokenizer.ggml.token_type in GGUF).
enum class TokenType : int32_t {
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6,
};

struct VocabPiece {
  std::string text;    // UTF-8; spaces are written as U+2581 "▁"; bytes as "<0x0A>"
  float score = 0.0f;  // SPM merge priority; higher merges first
  TokenType type = TokenType::Normal;
};

// U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's space marker.
inline constexpr std::string_view kSpaceMarker = "\xe2\x96\x81";

// Fixed token ids: <unk>, <s>, </s>, then the 256 byte tokens <0x00>..<0xFF> at
// [kFirstByteId, kFirstByteId + 256), then the ChatML control tokens, then normal pieces.
inline constexpr int32_t kUnkId = 0;
inline constexpr int32_t kBosId = 1;
inline constexpr int32_t kEosId = 2;
inline constexpr int32_t kFirstByteId = 3;
inline constexpr int32_t kImStartId = kFirstByteId + 256;  // <|im_start|>
inline constexpr int32_t kImEndId =
    kImStartId + 1;  // <|im_end|>: end of turn (tokenizer.ggml.eot_token_id)

// ChatML, as stored in tokenizer.chat_template; llama.cpp detects it by "<|im_start|>" and
// formats exactly like format_chatml() in mixture.h.
inline constexpr std::string_view kChatTemplate =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

// The whole words the generator and the chat format can emit (without "▁"), including the
// numbers 0..max_number, the operators and the sentence punctuation; sorted, unique.
std::vector<std::string> vocab_words(int max_number);

// All pieces, indexed by token id (see the fixed ids above). max_number: largest number that is
// a single piece, in [9, 999]; use GeneratorOptions::max_value. Throws kvsteer::Error
// (InvalidArgument) when max_number is out of range.
std::vector<VocabPiece> build_vocab(int max_number);

// The vocabulary as JSON named after the GGUF keys (tokenizer.ggml.model = "llama", tokens,
// scores, token_type, bos/eos/unknown/eot ids, add_space_prefix = false, chat_template).
// add_space_prefix is false so that the paper's offset token, the first id of "\n", is <0x0A>.
std::string vocab_json(int max_number);

}  // namespace kvsteer::organism
