// How a failed upstream call is retried within one fetch, per the Azure retry guidance.
#include "ficbroker/upstream/retry_policy.hpp"

#include <gtest/gtest.h>

#include <chrono>

namespace ficbroker {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

UpstreamError error_of(UpstreamError::Kind kind, int retry_after = 0, int aadsts = 0) {
  UpstreamError e;
  e.kind = kind;
  e.retry_after_seconds = retry_after;
  e.aadsts = aadsts;
  return e;
}

const auto kTransient = UpstreamError::Kind::transient;
const auto kThrottled = UpstreamError::Kind::throttled;
const auto kPermanent = UpstreamError::Kind::permanent;
const auto kAssertion = UpstreamError::Kind::assertion_rejected;

TEST(RetryPolicyTest, TransientFailuresBackOffOneTwoFourSecondsThenGiveUp) {
  const RetryPolicy p;  // max_attempts 4
  const auto e = error_of(kTransient);
  EXPECT_EQ(p.next_delay(Upstream::managed_identity, e, 500, 1, milliseconds(0)), seconds(1));
  EXPECT_EQ(p.next_delay(Upstream::managed_identity, e, 500, 2, seconds(1)), seconds(2));
  EXPECT_EQ(p.next_delay(Upstream::managed_identity, e, 500, 3, seconds(3)), seconds(4));
  EXPECT_EQ(p.next_delay(Upstream::managed_identity, e, 500, 4, seconds(7)), std::nullopt);
  EXPECT_EQ(p.next_delay(Upstream::entra, e, 503, 1, milliseconds(0)), seconds(1));
  EXPECT_EQ(p.next_delay(Upstream::entra, e, 0, 4, seconds(7)), std::nullopt);
}

TEST(RetryPolicyTest, PermanentAndRejectedAssertionsAreNeverRetried) {
  const RetryPolicy p;
  for (auto kind : {kPermanent, kAssertion}) {
    EXPECT_EQ(p.next_delay(Upstream::entra, error_of(kind), 400, 1, milliseconds(0)), std::nullopt);
    EXPECT_EQ(p.next_delay(Upstream::managed_identity, error_of(kind), 400, 1, milliseconds(0)),
              std::nullopt);
  }
}

TEST(RetryPolicyTest, ImdsGoneIsRetriedEveryTenSecondsForSeventySeconds) {
  const RetryPolicy p;
  const auto e = error_of(kTransient, 1);
  EXPECT_EQ(p.next_delay(Upstream::managed_identity, e, 410, 1, milliseconds(0)), seconds(10));
  EXPECT_EQ(p.next_delay(Upstream::managed_identity, e, 410, 6, seconds(60)), seconds(10))
      << "410 is not bounded by max_attempts";
  EXPECT_EQ(p.next_delay(Upstream::managed_identity, e, 410, 7, seconds(61)), std::nullopt);
}

TEST(RetryPolicyTest, GoneFromEntraIsAnOrdinaryTransientFailure) {
  const RetryPolicy p;
  EXPECT_EQ(p.next_delay(Upstream::entra, error_of(kTransient), 410, 1, milliseconds(0)),
            seconds(1));
}

TEST(RetryPolicyTest, ShortRetryAfterIsHonouredWhenThrottled) {
  const RetryPolicy p;  // max_retry_after 10 s
  EXPECT_EQ(p.next_delay(Upstream::entra, error_of(kThrottled, 7), 429, 1, milliseconds(0)),
            seconds(7));
  EXPECT_EQ(p.next_delay(Upstream::entra, error_of(kThrottled, 10), 429, 3, milliseconds(0)),
            seconds(10));
}

TEST(RetryPolicyTest, LongRetryAfterGoesBackToTheCaller) {
  const RetryPolicy p;
  EXPECT_EQ(p.next_delay(Upstream::entra, error_of(kThrottled, 11), 429, 1, milliseconds(0)),
            std::nullopt);
  EXPECT_EQ(p.next_delay(Upstream::entra, error_of(kTransient, 30), 503, 1, milliseconds(0)),
            std::nullopt);
}

TEST(RetryPolicyTest, RetryAfterIsAFloorForTransientFailures) {
  const RetryPolicy p;
  EXPECT_EQ(p.next_delay(Upstream::entra, error_of(kTransient, 3), 503, 1, milliseconds(0)),
            seconds(3));
  EXPECT_EQ(p.next_delay(Upstream::entra, error_of(kTransient, 3), 503, 3, milliseconds(0)),
            seconds(4));
}

TEST(RetryPolicyTest, ThrottlingStopsAtMaxAttemptsToo) {
  const RetryPolicy p;
  EXPECT_EQ(p.next_delay(Upstream::entra, error_of(kThrottled, 1), 429, 4, milliseconds(0)),
            std::nullopt);
}

TEST(RetryPolicyTest, FicPropagationDelayIsRetriedABoundedNumberOfTimes) {
  const RetryPolicy p;  // propagation_attempts 3
  const auto e = error_of(kPermanent, 0, 70021);
  EXPECT_EQ(p.next_delay(Upstream::entra, e, 400, 1, milliseconds(0)), seconds(2));
  EXPECT_EQ(p.next_delay(Upstream::entra, e, 400, 2, seconds(2)), seconds(4));
  EXPECT_EQ(p.next_delay(Upstream::entra, e, 400, 3, seconds(6)), std::nullopt);
  EXPECT_EQ(p.next_delay(Upstream::managed_identity, e, 400, 1, milliseconds(0)), std::nullopt)
      << "AADSTS codes only mean something from Entra";
}

TEST(RetryPolicyTest, SettingsAreRespected) {
  RetryPolicy p;
  p.max_attempts = 2;
  p.max_retry_after = seconds(60);
  EXPECT_EQ(p.next_delay(Upstream::entra, error_of(kTransient), 500, 1, milliseconds(0)),
            seconds(1));
  EXPECT_EQ(p.next_delay(Upstream::entra, error_of(kTransient), 500, 2, milliseconds(0)),
            std::nullopt);
  EXPECT_EQ(p.next_delay(Upstream::entra, error_of(kThrottled, 30), 429, 1, milliseconds(0)),
            seconds(30));
}

}  // namespace
}  // namespace ficbroker
