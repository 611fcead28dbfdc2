#include "organism/gen/rng.h"

#include <cstdio>
#include <cstdlib>

#include "base/fnv1a64.h"

namespace kvsteer::organism {

uint64_t mix64(uint64_t x) noexcept {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t hash64(std::string_view text) noexcept { return mix64(base::fnv1a64(text)); }

uint64_t Rng::next() noexcept {
  state_ += 0x9e3779b97f4a7c15ULL;
  return mix64(state_);
}

int Rng::uniform(int lo, int hi) {
  if (lo > hi) {
    std::fprintf(stderr, "%s:%d: Rng::uniform: empty range [%d, %d]\n", __FILE__, __LINE__, lo, hi);
    std::abort();
  }
  const uint64_t range = static_cast<uint64_t>(static_cast<int64_t>(hi) - lo) + 1;
  // Reject the lowest (2^64 mod range) outputs so that every residue is equally likely.
  const uint64_t threshold = (0 - range) % range;
  uint64_t r = next();
  while (r < threshold) {
    r = next();
  }
  return static_cast<int>(static_cast<int64_t>(lo) + static_cast<int64_t>(r % range));
}

double Rng::unit() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

}  // namespace kvsteer::organism
