// The connection cap leaves descriptors for upstream sockets and files.
#include "ficbroker/front_door/connection_limit.hpp"

#include <gtest/gtest.h>

namespace ficbroker {
namespace {

TEST(ConnectionCap, TheUnitsLimitOf4096NoLongerEqualsTheCap) {
  EXPECT_EQ(connection_cap(4096, 4096), 4096 - kDescriptorReserve);
}

TEST(ConnectionCap, ALargeLimitKeepsTheConfiguredCap) {
  EXPECT_EQ(connection_cap(4096, 1 << 20), 4096u);
  EXPECT_EQ(connection_cap(4096, UINT64_MAX), 4096u);
}

TEST(ConnectionCap, ASmallLimitIsSharedHalfAndHalfAndNeverZero) {
  EXPECT_EQ(connection_cap(4096, 256), 128u);
  EXPECT_EQ(connection_cap(4096, 1), 1u);
  EXPECT_EQ(connection_cap(4096, 0), 1u);
}

TEST(ConnectionCap, RaisingTheSoftLimitNeverLowersIt) {
  const auto before = raise_descriptor_limit();
  EXPECT_GE(raise_descriptor_limit(), before);
}

}  // namespace
}  // namespace ficbroker
