// The small list grammars of the sweep and diagnose flags: comma-separated numbers
// ("0,0.5,1e-2"), comma-separated layer indices ("6,7,8") and ';'-separated layer selections
// ("1-;8-;3,5"). Kept apart from the subcommands so that fuzz/ can drive them directly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvsteer::cli {

// Splits text at sep and drops empty parts ("1,,2," -> {"1", "2"}).
std::vector<std::string> split_list(const std::string& text, char sep);

// Comma-separated numbers that are finite as floats (|x| <= 3.4e38; "1e39" and "nan" are
// refused, since a float coefficient would become infinite). Throws Error(InvalidArgument)
// naming flag and the part that is not such a number, or when the list is empty.
std::vector<float> parse_float_list(const std::string& text, const char* flag);

// Comma-separated integers in [lo, hi] ("1.5", "1e3" and "+-2" are refused). Throws
// Error(InvalidArgument) naming flag and the bad part, or when the list is empty.
std::vector<std::int32_t> parse_int_list(const std::string& text, const char* flag, std::int32_t lo,
                                         std::int32_t hi);

// ';'-separated layer selections, each checked with LayerSelection::parse and kept as written.
// Throws Error(InvalidArgument) for a bad selection or an empty list (a sweep needs at least one
// setting).
std::vector<std::string> parse_layer_grid(const std::string& text, const char* flag);

}  // namespace kvsteer::cli
