// Small text helpers shared by the generator, the mixture builder and the vocabulary.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvsteer::organism {

// A template placeholder and its replacement, e.g. {"{name}", "Tom"}.
using Field = std::pair<std::string_view, std::string>;

// `tmpl` with every placeholder "{...}" that is a field's key replaced by the field's value, in
// one pass (values are not scanned again); unknown placeholders stay as they are.
std::string render(std::string_view tmpl, const std::vector<Field>& fields);

// The strings joined with `separator` between them.
std::string join(const std::vector<std::string>& parts, std::string_view separator);

// True for the sentence punctuation that the vocabulary keeps as separate pieces: . , ? : ! ;
bool is_punctuation(char c);

// Words of `text` in the vocabulary's sense: split at spaces and newlines, with sentence
// punctuation as one-character words of its own, and template placeholders "{...}" removed.
// "Tom has 5 apples." gives {"Tom", "has", "5", "apples", "."}.
std::vector<std::string> split_words(std::string_view text);

}  // namespace kvsteer::organism
