// The CLI's small grammars: layer selections (LayerSelection::parse: "1-", "all", "3,5,7", "2-6",
// "none"), number lists (--cv-grid, --caa-coefs, --scales), layer-index lists (--caa-layers) and
// layer grids (--layers-grid). Any input must give a value or Error(InvalidArgument), and a
// parsed selection must print as text that parses back to the same selection.
#include <cmath>
#include <cstdlib>
#include <string>

#include "fuzz_util.h"
#include "kvsteer/error.h"
#include "kvsteer/steering.h"
#include "number_list.h"

namespace {

using kvsteer::fuzz::check;

void fuzz_selection(const std::string& text) {
  kvsteer::LayerSelection sel;
  try {
    sel = kvsteer::LayerSelection::parse(text);
  } catch (const kvsteer::Error& e) {
    check(e.code() == kvsteer::ErrorCode::InvalidArgument, "parse threw another error code");
    return;
  }
  const kvsteer::LayerSelection again = kvsteer::LayerSelection::parse(sel.to_string());
  check(again.min_layer == sel.min_layer && again.layers == sel.layers,
        "to_string does not parse back to the same selection");
  for (std::int32_t il : {0, 1, 5, 100000}) (void)sel.contains(il);
}

template <typename F>
void expect_invalid_argument_or_value(F&& f) {
  try {
    f();
  } catch (const kvsteer::Error& e) {
    check(e.code() == kvsteer::ErrorCode::InvalidArgument, "list parser threw another code");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(kvsteer::fuzz::as_text(data, size));
  fuzz_selection(text);
  expect_invalid_argument_or_value([&] {
    for (float x : kvsteer::cli::parse_float_list(text, "--cv-grid")) {
      check(std::isfinite(x), "a parsed coefficient is not finite");
    }
  });
  expect_invalid_argument_or_value([&] {
    for (std::int32_t il : kvsteer::cli::parse_int_list(text, "--caa-layers", 0, 63)) {
      check(il >= 0 && il <= 63, "a parsed layer index is out of range");
    }
  });
  expect_invalid_argument_or_value([&] {
    for (const std::string& s : kvsteer::cli::parse_layer_grid(text, "--layers-grid")) {
      (void)kvsteer::LayerSelection::parse(s);
    }
  });
  return 0;
}
