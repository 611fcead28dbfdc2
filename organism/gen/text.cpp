#include "organism/gen/text.h"

#include <algorithm>

namespace kvsteer::organism {

std::string render(std::string_view tmpl, const std::vector<Field>& fields) {
  std::string out;
  out.reserve(tmpl.size() + 16);
  size_t pos = 0;
  while (pos < tmpl.size()) {
    const size_t open = tmpl.find('{', pos);
    const size_t close = open == std::string_view::npos ? open : tmpl.find('}', open);
    if (close == std::string_view::npos) break;
    out.append(tmpl.substr(pos, open - pos));
    const std::string_view key = tmpl.substr(open, close + 1 - open);
    const auto field =
        std::find_if(fields.begin(), fields.end(), [&](const Field& f) { return f.first == key; });
    out.append(field == fields.end() ? key : std::string_view(field->second));
    pos = close + 1;
  }
  out.append(tmpl.substr(std::min(pos, tmpl.size())));
  return out;
}

std::string join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out += separator;
    out += parts[i];
  }
  return out;
}

bool is_punctuation(char c) {
  return c == '.' || c == ',' || c == '?' || c == ':' || c == '!' || c == ';';
}

std::vector<std::string> split_words(std::string_view text) {
  std::vector<std::string> words;
  std::string current;
  auto flush = [&] {
    if (!current.empty()) words.push_back(current);
    current.clear();
  };
  bool in_placeholder = false;
  for (const char c : text) {
    if (in_placeholder) {
      in_placeholder = c != '}';
    } else if (c == '{') {
      flush();
      in_placeholder = true;
    } else if (c == ' ' || c == '\n') {
      flush();
    } else if (is_punctuation(c)) {
      flush();
      words.emplace_back(1, c);
    } else {
      current += c;
    }
  }
  flush();
  return words;
}

}  // namespace kvsteer::organism
