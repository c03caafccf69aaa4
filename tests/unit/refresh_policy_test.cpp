// When tokens are refreshed, when they may be served and how failures back off: table tests over
// lifetimes and jitter samples, no clock.
#include "ficbroker/cache/refresh_policy.hpp"

#include <gtest/gtest.h>

#include <chrono>

namespace ficbroker {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

const SteadyTime kIssued = SteadyTime{} + hours(1000);
constexpr double kJitters[] = {0.0, 0.01, 0.25, 0.5, 0.75, 0.999999};

TEST(RefreshPolicyTest, DayLongTokenRefreshesAtHalfLifeWithoutJitter) {
  const RefreshPolicy p;
  EXPECT_EQ(p.refresh_at(kIssued, kIssued + hours(24), 0.0), kIssued + hours(12));
}

TEST(RefreshPolicyTest, DayLongTokenRefreshesWithinTenPercentOfTheWindowBeforeHalfLife) {
  const RefreshPolicy p;
  const auto lifetime = hours(24);
  const auto window = lifetime - p.min_validity;
  const auto earliest =
      kIssued + lifetime / 2 - std::chrono::duration_cast<SteadyTime::duration>(window / 10);
  for (double j : kJitters) {
    SCOPED_TRACE(j);
    const auto at = p.refresh_at(kIssued, kIssued + lifetime, j);
    EXPECT_LE(at, kIssued + lifetime / 2);
    EXPECT_GE(at, earliest);
  }
}

TEST(RefreshPolicyTest, MoreJitterNeverMeansALaterRefresh) {
  const RefreshPolicy p;
  auto previous = SteadyTime::max();
  for (double j : kJitters) {
    const auto at = p.refresh_at(kIssued, kIssued + hours(24), j);
    EXPECT_LE(at, previous) << j;
    previous = at;
  }
}

struct LifetimeCase {
  seconds lifetime;
};

class ShortLifetimeTest : public ::testing::TestWithParam<LifetimeCase> {};

TEST_P(ShortLifetimeTest, RefreshIsAfterIssueAndBeforeTheFloor) {
  const RefreshPolicy p;
  const auto expires = kIssued + GetParam().lifetime;
  for (double j : kJitters) {
    SCOPED_TRACE(j);
    const auto at = p.refresh_at(kIssued, expires, j);
    EXPECT_GT(at, kIssued);
    EXPECT_LT(at, expires - p.min_validity) << "a refresh must come before callers see the floor";
    // A quarter of the servable window is kept for retries.
    EXPECT_LE(at - kIssued, std::chrono::duration_cast<SteadyTime::duration>(GetParam().lifetime -
                                                                             p.min_validity) *
                                3 / 4);
  }
}

INSTANTIATE_TEST_SUITE_P(Lifetimes, ShortLifetimeTest,
                         ::testing::Values(LifetimeCase{hours(1)}, LifetimeCase{minutes(7)},
                                           LifetimeCase{hours(2)},
                                           LifetimeCase{minutes(5) + seconds(1)},
                                           LifetimeCase{seconds(3599)}));

TEST(RefreshPolicyTest, OneHourTokenRefreshesAtThreeQuartersOfTheWindow) {
  const RefreshPolicy p;
  // (3600 - 300) * 3 / 4 = 2475 s
  EXPECT_EQ(p.refresh_at(kIssued, kIssued + hours(1), 0.0), kIssued + seconds(2475));
}

TEST(RefreshPolicyTest, SevenMinuteTokenRefreshesAtThreeQuartersOfTheWindow) {
  const RefreshPolicy p;
  // (420 - 300) * 3 / 4 = 90 s
  EXPECT_EQ(p.refresh_at(kIssued, kIssued + minutes(7), 0.0), kIssued + seconds(90));
}

class LongLifetimeTest : public ::testing::TestWithParam<LifetimeCase> {};

TEST_P(LongLifetimeTest, RefreshIsAtMostHalfLifeAndBeforeTheFloor) {
  const RefreshPolicy p;
  const auto lifetime = std::chrono::duration_cast<SteadyTime::duration>(GetParam().lifetime);
  const auto expires = kIssued + lifetime;
  for (double j : kJitters) {
    SCOPED_TRACE(j);
    const auto at = p.refresh_at(kIssued, expires, j);
    EXPECT_GT(at, kIssued);
    EXPECT_LE(at, kIssued + lifetime / 2);
    EXPECT_LT(at, expires - p.min_validity);
  }
}

INSTANTIATE_TEST_SUITE_P(Lifetimes, LongLifetimeTest,
                         ::testing::Values(LifetimeCase{hours(2) + seconds(1)},
                                           LifetimeCase{hours(3)}, LifetimeCase{hours(24)},
                                           LifetimeCase{hours(24 * 7)}));

TEST(RefreshPolicyTest, TokenNoLongerThanTheFloorRefreshesImmediately) {
  const RefreshPolicy p;
  for (auto lifetime : {seconds(0), seconds(1), seconds(299), seconds(300)}) {
    SCOPED_TRACE(lifetime.count());
    for (double j : kJitters) {
      EXPECT_EQ(p.refresh_at(kIssued, kIssued + lifetime, j), kIssued);
    }
  }
}

TEST(RefreshPolicyTest, AlreadyExpiredTokenRefreshesImmediately) {
  const RefreshPolicy p;
  EXPECT_EQ(p.refresh_at(kIssued, kIssued - seconds(10), 0.5), kIssued);
}

TEST(RefreshPolicyTest, CustomFloorIsRespected) {
  RefreshPolicy p;
  p.min_validity = seconds(600);
  const auto expires = kIssued + minutes(15);
  for (double j : kJitters) {
    const auto at = p.refresh_at(kIssued, expires, j);
    EXPECT_GT(at, kIssued);
    EXPECT_LT(at, expires - seconds(600));
  }
  EXPECT_EQ(p.refresh_at(kIssued, kIssued + minutes(10), 0.0), kIssued);
}

TEST(RefreshPolicyTest, ZeroJitterFractionIgnoresTheSample) {
  RefreshPolicy p;
  p.jitter_fraction = 0.0;
  EXPECT_EQ(p.refresh_at(kIssued, kIssued + hours(24), 0.9), kIssued + hours(12));
}

// --- servable
// --------------------------------------------------------------------------------------

Token token_expiring_at(SteadyTime at) {
  Token t;
  t.issued_at = kIssued;
  t.expires_at = at;
  return t;
}

TEST(ServableTest, BoundaryIsExclusiveAtMinValidity) {
  const RefreshPolicy p;
  const Token t = token_expiring_at(kIssued + hours(1));
  const auto floor = t.expires_at - p.min_validity;
  EXPECT_TRUE(p.servable(t, floor - seconds(1)));
  EXPECT_TRUE(p.servable(t, floor - std::chrono::nanoseconds(1)));
  EXPECT_FALSE(p.servable(t, floor)) << "exactly min_validity left is not enough";
  EXPECT_FALSE(p.servable(t, floor + seconds(1)));
  EXPECT_FALSE(p.servable(t, t.expires_at));
  EXPECT_FALSE(p.servable(t, t.expires_at + hours(1)));
}

TEST(ServableTest, ZeroFloorServesUntilExpiry) {
  RefreshPolicy p;
  p.min_validity = seconds(0);
  const Token t = token_expiring_at(kIssued + hours(1));
  EXPECT_TRUE(p.servable(t, t.expires_at - seconds(1)));
  EXPECT_FALSE(p.servable(t, t.expires_at));
}

// --- retry_delay
// -----------------------------------------------------------------------------------

TEST(RetryDelayTest, DoublesFromOneSecondUpToTheCap) {
  const RefreshPolicy p;  // max_backoff 60 s
  const milliseconds expected[] = {seconds(1),  seconds(2),  seconds(4),  seconds(8),
                                   seconds(16), seconds(32), seconds(60), seconds(60)};
  for (int failures = 1; failures <= 8; ++failures) {
    EXPECT_EQ(p.retry_delay(failures, 0, 0.0), expected[failures - 1]) << failures;
  }
}

TEST(RetryDelayTest, StaysCappedForManyFailures) {
  const RefreshPolicy p;
  for (int failures : {16, 17, 30, 1000, 2147483647}) {
    EXPECT_EQ(p.retry_delay(failures, 0, 0.0), seconds(60)) << failures;
  }
}

TEST(RetryDelayTest, NonPositiveFailureCountsActLikeTheFirst) {
  const RefreshPolicy p;
  EXPECT_EQ(p.retry_delay(0, 0, 0.0), seconds(1));
  EXPECT_EQ(p.retry_delay(-3, 0, 0.0), seconds(1));
}

TEST(RetryDelayTest, CustomCapIsRespected) {
  RefreshPolicy p;
  p.max_backoff = seconds(5);
  EXPECT_EQ(p.retry_delay(3, 0, 0.0), seconds(4));
  EXPECT_EQ(p.retry_delay(4, 0, 0.0), seconds(5));
  EXPECT_EQ(p.retry_delay(10, 0, 0.0), seconds(5));
}

TEST(RetryDelayTest, RetryAfterIsAFloor) {
  const RefreshPolicy p;
  EXPECT_EQ(p.retry_delay(1, 7, 0.0), seconds(7));
  EXPECT_EQ(p.retry_delay(1, 7, 0.999), seconds(7)) << "1.5 s of jitter is still under 7 s";
  EXPECT_EQ(p.retry_delay(5, 7, 0.0), seconds(16)) << "a floor, not a replacement";
  EXPECT_EQ(p.retry_delay(10, 120, 0.5), seconds(120)) << "beyond max_backoff when asked";
}

TEST(RetryDelayTest, JitterAddsAtMostHalf) {
  const RefreshPolicy p;
  for (int failures = 1; failures <= 10; ++failures) {
    const auto base = p.retry_delay(failures, 0, 0.0);
    for (double j : kJitters) {
      SCOPED_TRACE(j);
      const auto d = p.retry_delay(failures, 0, j);
      EXPECT_GE(d, base);
      EXPECT_LE(d, base + base / 2);
    }
  }
  EXPECT_EQ(p.retry_delay(2, 0, 0.5), milliseconds(2500));
}

}  // namespace
}  // namespace ficbroker
