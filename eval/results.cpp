// Item records, reasoning-step counts, intervals and summaries.
#include "eval/runner.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include "eval/run_support.h"

namespace kvsteer::eval {

using nlohmann::ordered_json;

ordered_json ItemResult::to_json() const {
  ordered_json j{{"index", index}, {"id", id}};
  if (has_text) {
    j["prompt"] = prompt;
    j["response"] = response;
  }
  j["extracted"] = extracted;
  j["target"] = target;
  j["correct"] = correct;
  j["n_tokens"] = n_tokens;
  j["n_steps"] = n_steps;
  j["reasoning"] = reasoning;
  j["forced"] = forced;
  j["ttft_ms"] = std::round(ttft_ms * 100.0) / 100.0;
  return j;
}

namespace {

// An integer field of a record, refused unless it is a JSON integer within T's range: a float or
// an out-of-range number would otherwise be converted with undefined behaviour.
template <typename T>
T integer_field(const ordered_json& j, const char* key) {
  const ordered_json& v = j.at(key);
  const auto refuse = [&] {
    throw Error(ErrorCode::Format, std::string("field '") + key + "' is " + v.dump() +
                                       ", expected an integer in [" +
                                       std::to_string(std::numeric_limits<T>::min()) + ", " +
                                       std::to_string(std::numeric_limits<T>::max()) + "]");
  };
  if (!v.is_number_integer()) {
    refuse();
  }
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) {
      refuse();
    }
    return static_cast<T>(u);
  }
  const auto i = v.get<std::int64_t>();
  if (std::cmp_less(i, std::numeric_limits<T>::min()) ||
      std::cmp_greater(i, std::numeric_limits<T>::max())) {
    refuse();
  }
  return static_cast<T>(i);
}

}  // namespace

ItemResult ItemResult::from_json(const ordered_json& j) {
  ItemResult r;
  r.index = integer_field<std::size_t>(j, "index");
  r.id = j.at("id").get<std::string>();
  // Both texts or neither: a record with one of them is damaged, not compact.
  r.has_text = j.contains("prompt") || j.contains("response");
  if (r.has_text) {
    r.prompt = j.at("prompt").get<std::string>();
    r.response = j.at("response").get<std::string>();
  }
  r.extracted = j.at("extracted").get<std::string>();
  r.target = j.at("target").get<std::string>();
  r.correct = j.at("correct").get<bool>();
  r.n_tokens = integer_field<std::int32_t>(j, "n_tokens");
  r.n_steps = integer_field<int>(j, "n_steps");
  r.reasoning = j.at("reasoning").get<bool>();
  r.forced = j.at("forced").get<bool>();
  r.ttft_ms = j.value("ttft_ms", 0.0);
  return r;
}

int count_reasoning_steps(Task task, const std::string& response) {
  if (is_organism(task)) {
    const std::size_t at = response.rfind("The answer is");
    const std::string before = response.substr(0, at == std::string::npos ? response.size() : at);
    int n = 0;
    std::size_t start = 0;
    while (start < before.size()) {
      std::size_t stop = before.find(". ", start);
      if (stop == std::string::npos) {
        stop = before.size();
      }
      if (before.substr(start, stop - start).find(" = ") != std::string::npos) {
        ++n;
      }
      start = stop + 2;
    }
    return n;
  }
  const std::string low = lower(response);
  const std::size_t at = low.rfind("answer is");
  std::string before = response.substr(0, at == std::string::npos ? response.size() : at);
  if (at != std::string::npos) {
    // Drop the start of the answer sentence itself ("So the").
    const std::size_t end = before.find_last_of(".!?\n");
    before = end == std::string::npos ? "" : before.substr(0, end + 1);
  }
  int n = 0;
  std::string sentence;
  auto flush = [&] {
    if (std::any_of(sentence.begin(), sentence.end(),
                    [](unsigned char c) { return std::isalnum(c) != 0; })) {
      ++n;
    }
    sentence.clear();
  };
  for (std::size_t i = 0; i < before.size(); ++i) {
    const char c = before[i];
    sentence += c;
    if (c == '\n' ||
        ((c == '.' || c == '!' || c == '?') && (i + 1 == before.size() || before[i + 1] == ' '))) {
      flush();
    }
  }
  flush();
  // Without an answer statement the last sentence is the answer itself.
  if (at == std::string::npos && n > 0) {
    --n;
  }
  return n;
}

std::pair<double, double> wilson_interval(std::size_t correct, std::size_t n) {
  if (n == 0) {
    return {0.0, 0.0};
  }
  const double z = 1.959963984540054, p = double(correct) / double(n), nn = double(n);
  const double centre = (p + z * z / (2 * nn)) / (1 + z * z / nn);
  const double half = z * std::sqrt(p * (1 - p) / nn + z * z / (4 * nn * nn)) / (1 + z * z / nn);
  return {100.0 * std::max(0.0, centre - half), 100.0 * std::min(1.0, centre + half)};
}

ordered_json summarize(const std::vector<ItemResult>& results) {
  std::size_t correct = 0, reasoning = 0, forced = 0;
  std::vector<std::int32_t> lengths;
  double total_tokens = 0, total_ttft = 0;
  for (const ItemResult& r : results) {
    total_ttft += r.ttft_ms;
    correct += r.correct ? 1 : 0;
    reasoning += r.reasoning ? 1 : 0;
    forced += r.forced ? 1 : 0;
    lengths.push_back(r.n_tokens);
    total_tokens += r.n_tokens;
  }
  const std::size_t n = results.size();
  auto sorted = lengths;
  std::sort(sorted.begin(), sorted.end());
  const double median = n == 0  ? 0.0
                        : n % 2 ? sorted[n / 2]
                                : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  const auto ci = wilson_interval(correct, n);
  auto r2 = [](double x) { return std::round(x * 100.0) / 100.0; };
  return ordered_json{{"n", n},
                      {"correct", correct},
                      {"accuracy", r2(n ? 100.0 * double(correct) / double(n) : 0.0)},
                      {"ci95", {r2(ci.first), r2(ci.second)}},
                      {"reasoning_rate", r2(n ? 100.0 * double(reasoning) / double(n) : 0.0)},
                      {"forced", forced},
                      {"mean_tokens", r2(n ? total_tokens / double(n) : 0.0)},
                      {"median_tokens", median},
                      {"mean_ttft_ms", r2(n ? total_ttft / double(n) : 0.0)},
                      {"lengths", lengths}};
}

}  // namespace kvsteer::eval
