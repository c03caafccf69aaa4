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

namespace ficbroker {
namespace {

TEST(FairQueueTest, IdentitiesTakeTurnsSoAFloodWaitsBehindItself) {
  FairQueue<int> q;
  for (int i = 0; i < 100; ++i) q.push("flooder#p", i);  // one caller's pass-through flood
  q.push("uami#a", 1000);                                // an assertion every target needs
  q.push("other#p", 2000);
  std::vector<int> order;
  for (int i = 0; i < 4; ++i) {
    order.push_back(q.front());
    q.pop_front();
  }
  EXPECT_EQ(order, (std::vector<int>{0, 1000, 2000, 1}));
}

TEST(FairQueueTest, WithinAnIdentityArrivalOrderIsKept) {
  FairQueue<int> q;
  q.push("a", 1);
  q.push("a", 2);
  q.push("a", 3);
  std::vector<int> order;
  while (!q.empty()) {
    order.push_back(q.front());
    q.pop_front();
  }
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

}  // namespace
}  // namespace ficbroker
