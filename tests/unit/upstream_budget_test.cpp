// The pure part of the upstream budget: a token bucket plus a concurrency limit on injected time.
#include "ficbroker/upstream/upstream_budget.hpp"

#include <gtest/gtest.h>

#include <chrono>

namespace ficbroker {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;

const auto kStart = std::chrono::steady_clock::time_point{} + hours(1000);

TEST(RateWindowTest, ConcurrencyLimitHoldsUntilARelease) {
  RateWindow w(100.0, 100, 5);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(w.try_acquire(kStart), nanoseconds::zero()) << i;
  EXPECT_EQ(w.in_flight(), 5);
  EXPECT_GT(w.try_acquire(kStart), nanoseconds::zero()) << "a sixth concurrent call waits";
  EXPECT_EQ(w.in_flight(), 5);
  w.release();
  EXPECT_EQ(w.try_acquire(kStart), nanoseconds::zero());
  EXPECT_EQ(w.in_flight(), 5);
}

TEST(RateWindowTest, BurstIsSpentThenCallsWaitForTheRate) {
  RateWindow w(1.0, 2, 100);
  EXPECT_EQ(w.try_acquire(kStart), nanoseconds::zero());
  EXPECT_EQ(w.try_acquire(kStart), nanoseconds::zero());
  const auto wait = w.try_acquire(kStart);
  EXPECT_GT(wait, nanoseconds::zero());
  EXPECT_LE(wait, seconds(1) + nanoseconds(1)) << "one token refills in one second";
  EXPECT_EQ(w.try_acquire(kStart + wait), nanoseconds::zero());
}

TEST(RateWindowTest, IdleTimeRefillsNoMoreThanTheBurst) {
  RateWindow w(10.0, 3, 100);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(w.try_acquire(kStart), nanoseconds::zero());
  const auto later = kStart + hours(1);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(w.try_acquire(later), nanoseconds::zero()) << i;
  EXPECT_GT(w.try_acquire(later), nanoseconds::zero()) << "an hour of idling buys only the burst";
}

TEST(RateWindowTest, TwentyPerSecondAllowsTwentyCallsPerSecondOnAverage) {
  RateWindow w(20.0, 20, 1000);  // IMDS: 20 requests per second
  int started = 0;
  for (auto t = kStart; t < kStart + seconds(10); t += milliseconds(5)) {
    while (w.try_acquire(t) == nanoseconds::zero()) ++started;
  }
  EXPECT_GE(started, 20 * 10);
  EXPECT_LE(started, 20 * 10 + 20 + 1);
}

}  // namespace
}  // namespace ficbroker
