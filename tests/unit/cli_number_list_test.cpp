// The list grammars of `kvsteer sweep` and `kvsteer diagnose` (tools/cli/number_list.h).
#include "number_list.h"

#include <gtest/gtest.h>

#include "kvsteer/error.h"

namespace kvsteer::cli {
namespace {

TEST(NumberList, ParsesFloatsAndIntegers) {
  EXPECT_EQ(parse_float_list("0,0.5,-4,1e-2", "--cv-grid"),
            (std::vector<float>{0.0f, 0.5f, -4.0f, 0.01f}));
  EXPECT_EQ(parse_float_list("1,,2,", "--cv-grid"), (std::vector<float>{1.0f, 2.0f}));
  EXPECT_EQ(parse_int_list("6,7,8", "--caa-layers", 0, 29), (std::vector<std::int32_t>{6, 7, 8}));
}

// A coefficient that is finite as a double but not as a float became inf and failed only after
// the vector was extracted; a layer of 1e20 was a float-to-int overflow (undefined behaviour).
TEST(NumberList, RefusesValuesThatDoNotFit) {
  for (const char* bad : {"1e39", "-1e39", "nan", "inf", "1e400", "x", "1,y", "", ",", "1e"}) {
    EXPECT_THROW(parse_float_list(bad, "--cv-grid"), Error) << bad;
  }
  for (const char* bad : {"1.5", "1e3", "-1", "30", "99999999999999999999", "", "+-2"}) {
    EXPECT_THROW(parse_int_list(bad, "--caa-layers", 0, 29), Error) << bad;
  }
  try {
    parse_float_list("1,1e39", "--cv-grid");
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("--cv-grid: '1e39'"), std::string::npos) << e.what();
  }
}

// An empty layer grid (";") made an empty sweep grid, and run_sweep divided by its size.
TEST(NumberList, RefusesAnEmptyLayerGrid) {
  EXPECT_EQ(parse_layer_grid("1-;8-;3,5", "--layers-grid"),
            (std::vector<std::string>{"1-", "8-", "3,5"}));
  for (const char* bad : {";", "", ";;", "1-;x", "5-2"}) {
    EXPECT_THROW(parse_layer_grid(bad, "--layers-grid"), Error) << bad;
  }
}

}  // namespace
}  // namespace kvsteer::cli
