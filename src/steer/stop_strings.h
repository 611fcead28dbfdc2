// Stop strings of a generation, shared by generate() and the continuous batcher.
#pragma once

#include <string>
#include <vector>

namespace kvsteer::detail {

// The earliest stop string in text that ends after `from` (text before it was checked already);
// npos if none. Empty stop strings are ignored.
std::size_t find_stop(const std::string& text, std::size_t from,
                      const std::vector<std::string>& stops);

}  // namespace kvsteer::detail
