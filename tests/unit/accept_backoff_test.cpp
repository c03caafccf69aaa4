// The accept loop's reaction to failing accept() calls, without sockets.
#include "ficbroker/front_door/accept_backoff.hpp"

#include <gtest/gtest.h>

namespace ficbroker {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(AcceptBackoff, PausesDoubleUpToOneSecond) {
  AcceptBackoff b;
  const auto t = AcceptBackoff::Clock::time_point{} + seconds(100);
  std::vector<milliseconds> delays;
  for (int i = 0; i < 9; ++i) delays.push_back(b.failed(t).delay);
  EXPECT_EQ(delays,
            (std::vector<milliseconds>{milliseconds(10), milliseconds(20), milliseconds(40),
                                       milliseconds(80), milliseconds(160), milliseconds(320),
                                       milliseconds(640), milliseconds(1000), milliseconds(1000)}));
}

TEST(AcceptBackoff, SuccessStartsOverFromTheShortestPause) {
  AcceptBackoff b;
  const auto t = AcceptBackoff::Clock::time_point{} + seconds(100);
  b.failed(t);
  b.failed(t);
  b.succeeded();
  EXPECT_EQ(b.failed(t).delay, milliseconds(10));
}

TEST(AcceptBackoff, LogsTheFirstFailureThenAtMostOncePerIntervalWithTheCountSuppressed) {
  AcceptBackoff b;
  auto t = AcceptBackoff::Clock::time_point{} + seconds(100);
  const auto first = b.failed(t);
  EXPECT_TRUE(first.log);
  EXPECT_EQ(first.suppressed_since_last_log, 0);
  int logged = 0;
  for (int i = 0; i < 999; ++i) {
    t += milliseconds(5);  // 1,000 failures in 5 s: 200 a second, as a spinning loop would see
    logged += b.failed(t).log ? 1 : 0;
  }
  EXPECT_EQ(logged, 0);
  t += seconds(10);
  const auto later = b.failed(t);
  EXPECT_TRUE(later.log);
  EXPECT_EQ(later.suppressed_since_last_log, 999);
}

}  // namespace
}  // namespace ficbroker
