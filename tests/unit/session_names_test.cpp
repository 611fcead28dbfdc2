// The names of the engine settings as the CLI, config.json and Python spell them: every value
// round-trips through its name, and a wrong name is refused with the accepted ones listed.
#include <gtest/gtest.h>

#include <string>

#include "kvsteer/error.h"
#include "kvsteer/session.h"

namespace kvsteer {
namespace {

std::string refusal(void (*parse)(const std::string&), const std::string& name) {
  try {
    parse(name);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    return e.what();
  }
  return "(accepted)";
}

TEST(SessionNames, EveryValueRoundTripsThroughItsName) {
  for (FlashAttn fa : {FlashAttn::On, FlashAttn::Off, FlashAttn::Auto}) {
    EXPECT_EQ(parse_flash_attn(flash_attn_name(fa)), fa);
  }
  for (KvStreams s : {KvStreams::Unified, KvStreams::PerSequence}) {
    EXPECT_EQ(parse_kv_streams(kv_streams_name(s)), s);
  }
  for (EditRoute r : {EditRoute::OneCell, EditRoute::FullSequence}) {
    EXPECT_EQ(parse_edit_route(edit_route_name(r)), r);
  }
  EXPECT_STREQ(flash_attn_name(FlashAttn::Auto), "auto");
  EXPECT_STREQ(kv_streams_name(KvStreams::PerSequence), "per-sequence");
  EXPECT_STREQ(edit_route_name(EditRoute::FullSequence), "full");
}

TEST(SessionNames, AWrongNameIsRefusedWithTheAcceptedOnes) {
  EXPECT_EQ(refusal([](const std::string& n) { parse_flash_attn(n); }, "yes"),
            "flash_attn must be on, off or auto, got 'yes'");
  EXPECT_EQ(refusal([](const std::string& n) { parse_kv_streams(n); }, "Unified"),
            "kv_streams must be unified or per-sequence, got 'Unified'");
  EXPECT_EQ(refusal([](const std::string& n) { parse_edit_route(n); }, ""),
            "edit_route must be one-cell or full, got ''");
}

}  // namespace
}  // namespace kvsteer
