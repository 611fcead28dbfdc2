// 64-bit FNV-1a: the one hash of the project for content identities (vocabularies, data sets,
// model files, seeds from names). Not cryptographic: it tells accidental changes apart.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kvsteer::base {

inline constexpr std::uint64_t kFnv1a64Basis = 14695981039346656037ULL;
inline constexpr std::uint64_t kFnv1a64Prime = 1099511628211ULL;

// FNV-1a over n bytes, continuing from h (kFnv1a64Basis to start).
inline std::uint64_t fnv1a64(const void* data, std::size_t n, std::uint64_t h = kFnv1a64Basis) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= kFnv1a64Prime;
  }
  return h;
}

inline std::uint64_t fnv1a64(std::string_view text, std::uint64_t h = kFnv1a64Basis) {
  return fnv1a64(text.data(), text.size(), h);
}

}  // namespace kvsteer::base
