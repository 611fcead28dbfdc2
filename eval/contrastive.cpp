#include "eval/contrastive.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "kvsteer/error.h"
#include "kvsteer/file_io.h"

namespace kvsteer::eval {
namespace {

void check_k(std::size_t k, std::size_t n) {
  if (k >= n && k > 0) {
    throw Error(ErrorCode::InvalidArgument,
                "shots (" + std::to_string(k) + ") must be smaller than the number of pairs (" +
                    std::to_string(n) + "): neighbours come from the same subset");
  }
}

}  // namespace

std::set<std::string> question_words(const std::string& text) {
  std::set<std::string> words;
  std::string cur;
  for (char c : text) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      cur += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else if (!cur.empty()) {
      words.insert(cur);
      cur.clear();
    }
  }
  if (!cur.empty()) {
    words.insert(cur);
  }
  return words;
}

double jaccard(const std::set<std::string>& a, const std::set<std::string>& b) {
  if (a.empty() && b.empty()) {
    return 0.0;
  }
  std::size_t common = 0;
  for (const auto& w : a) {
    common += b.count(w);
  }
  return static_cast<double>(common) / static_cast<double>(a.size() + b.size() - common);
}

NeighbourMap lexical_neighbours(const std::vector<TraceRow>& rows, std::size_t k) {
  check_k(k, rows.size());
  std::vector<std::set<std::string>> words;
  words.reserve(rows.size());
  for (const auto& r : rows) {
    words.push_back(question_words(r.question));
  }
  NeighbourMap out(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::vector<std::pair<double, std::size_t>> ranked;
    for (std::size_t j = 0; j < rows.size(); ++j) {
      if (j != i) {
        ranked.emplace_back(-jaccard(words[i], words[j]), j);
      }
    }
    std::stable_sort(ranked.begin(), ranked.end());
    for (std::size_t n = 0; n < k; ++n) {
      out[i].push_back(ranked[n].second);
    }
  }
  return out;
}

NeighbourMap neighbours_from_map_file(const std::string& path, const std::vector<TraceRow>& rows,
                                      std::size_t k) {
  check_k(k, rows.size());
  require_file(path, "few-shot map file");
  nlohmann::json maps;
  try {
    std::ifstream in(path);
    maps = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::Format,
                "few-shot map file '" + path + "' is not valid JSON: " + e.what());
  }
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    index[rows[i].source] = i;
  }
  std::string available;
  for (const auto& [key, entry] : maps.items()) {
    available += "\n  " + key;
    if (!entry.is_object() || !entry.contains("targets_in_order") || !entry.contains("fewshot") ||
        entry.value("num_fewshot_examples", 0u) != k) {
      continue;
    }
    const auto& targets = entry["targets_in_order"];
    if (!targets.is_array() || targets.size() != rows.size()) {
      continue;
    }
    bool same = true;
    for (std::size_t i = 0; i < rows.size() && same; ++i) {
      same = targets[i].is_string() && targets[i].get<std::string>() == rows[i].source;
    }
    if (!same) {
      continue;
    }
    NeighbourMap out(rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto& list = entry["fewshot"].value(rows[i].source, nlohmann::json::array());
      for (const auto& src : list) {
        auto it = src.is_string() ? index.find(src.get<std::string>()) : index.end();
        if (it == index.end() || it->second == i) {
          throw Error(ErrorCode::Format, "few-shot map '" + key + "' lists a neighbour of '" +
                                             rows[i].source + "' outside the subset");
        }
        out[i].push_back(it->second);
      }
      if (out[i].size() != k) {
        throw Error(ErrorCode::Format, "few-shot map '" + key + "' gives " +
                                           std::to_string(out[i].size()) + " neighbours for '" +
                                           rows[i].source + "', expected " + std::to_string(k));
      }
    }
    return out;
  }
  throw Error(ErrorCode::Format, "few-shot map file '" + path + "' has no entry for these " +
                                     std::to_string(rows.size()) + " rows with " +
                                     std::to_string(k) + " shots; entries:" + available);
}

std::string positive_answer(const TraceRow& row) {
  std::string steps;
  for (const auto& s : row.steps) {
    steps += (steps.empty() ? "" : " ") + s;
  }
  return steps + " The answer is " + row.answer + ".";
}

std::string negative_answer(const TraceRow& row) { return " The answer is " + row.answer + "."; }

std::vector<ChatMessage> contrastive_messages(const std::vector<TraceRow>& rows,
                                              const std::vector<std::size_t>& neighbours,
                                              std::size_t target, bool positive) {
  std::vector<ChatMessage> messages;
  for (std::size_t j : neighbours) {
    messages.push_back({"user", rows.at(j).question});
    messages.push_back(
        {"assistant", positive ? positive_answer(rows.at(j)) : negative_answer(rows.at(j))});
  }
  messages.push_back({"user", rows.at(target).question});
  return messages;
}

std::vector<ContrastivePair> build_contrastive_pairs(const Model& model,
                                                     const std::vector<TraceRow>& rows,
                                                     const NeighbourMap& neighbours,
                                                     const ContrastiveOptions& options) {
  std::vector<ContrastivePair> pairs;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    ContrastivePair pair;
    for (bool positive : {true, false}) {
      const auto messages = contrastive_messages(rows, neighbours.at(i), i, positive);
      const std::string text =
          (options.family ? render_reference_prompt(*options.family, messages, true)
                          : model.apply_chat_template(messages, true, options.chat_template)) +
          options.cot_prefix;
      (positive ? pair.positive : pair.negative) = model.tokenize_prompt(text);
    }
    pairs.push_back(std::move(pair));
  }
  return pairs;
}

}  // namespace kvsteer::eval
