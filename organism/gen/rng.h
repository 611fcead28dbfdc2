// Portable pseudo-random numbers and hashes for the organism generator.
//
// Datasets must be identical, byte for byte, on every platform and standard library for a given
// seed. The standard distributions (std::uniform_int_distribution, std::shuffle) are
// implementation-defined, so every draw here is built from the raw 64-bit output of SplitMix64.
#pragma once

#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace kvsteer::organism {

// SplitMix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mix with good avalanche.
uint64_t mix64(uint64_t x) noexcept;

// 64-bit FNV-1a over the bytes of `text`, finished with mix64 so that low bits are usable for
// `% m`. Stable across platforms; this hash defines the train/validation/test split.
uint64_t hash64(std::string_view text) noexcept;

// SplitMix64 generator. Thread-compatible: use one Rng per thread.
class Rng {
 public:
  explicit Rng(uint64_t seed) noexcept : state_(seed) {}

  // Next raw 64-bit output.
  uint64_t next() noexcept;

  // Uniform integer in the closed range [lo, hi], without modulo bias (rejection sampling).
  // Requires lo <= hi (asserted: callers compute the bounds, users never pass them directly).
  int uniform(int lo, int hi);

  // Uniform double in [0, 1) with 53 random bits; exact IEEE arithmetic, hence portable.
  double unit() noexcept;

  // True with probability p (p <= 0: never, p >= 1: always).
  bool bernoulli(double p) noexcept { return unit() < p; }

  // Uniformly chosen element; requires a non-empty vector.
  template <class T>
  const T& pick(const std::vector<T>& items) {
    return items[static_cast<size_t>(uniform(0, static_cast<int>(items.size()) - 1))];
  }

  // Fisher-Yates shuffle with this generator (std::shuffle's algorithm is unspecified).
  template <class T>
  void shuffle(std::vector<T>& items) {
    for (size_t i = items.size(); i > 1; --i) {
      const auto j = static_cast<size_t>(uniform(0, static_cast<int>(i) - 1));
      std::swap(items[i - 1], items[j]);
    }
  }

 private:
  uint64_t state_;
};

}  // namespace kvsteer::organism
