// What a fetch does after each failed upstream call (next_step), as tables of steps: each row is
// one failure — the error, when it happened (seconds since the fetch started), whether the broker
// is stopping — and the step expected. The rows of a table run in order against one FetchState.
#include "ficbroker/upstream/fetch_plan.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ficbroker {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Action = FetchStep::Action;

const SteadyTime kStart = SteadyTime{} + std::chrono::hours(1000);
constexpr const char* kSourcePrefix = "source 'mi' could not get a token: ";
constexpr const char* kExchangePrefix =
    "token exchange in tenant 'contoso' for app '11111111-2222-3333-4444-555555555555' failed: ";

UpstreamError imds_status(unsigned status) {
  UpstreamError e = UpstreamError::transient("IMDS answered HTTP " + std::to_string(status), 1);
  e.upstream_status = status;
  return e;
}

UpstreamError entra_throttled(int retry_after) {
  UpstreamError e =
      UpstreamError::throttled("Entra is throttling requests (HTTP 429)", retry_after);
  e.upstream_status = 429;
  return e;
}

UpstreamError entra_aadsts(UpstreamError e, int code) {
  e.aadsts = code;
  e.upstream_status = 400;
  return e;
}

const UpstreamError kExpiredAssertion = entra_aadsts(
    UpstreamError::assertion_rejected(
        "invalid_client", "AADSTS700024: Client assertion is not within its valid time"),
    700024);
const UpstreamError kNoMatchingFic = entra_aadsts(
    UpstreamError::permanent("invalid_client", "AADSTS700213: No matching federated identity"),
    700213);
const UpstreamError kPropagation =
    entra_aadsts(UpstreamError::permanent("invalid_client",
                                          "AADSTS70021: No matching federated identity record"),
                 70021);

struct Row {
  UpstreamError error;
  seconds at;  // since the fetch started
  bool stopping;
  Action action;
  milliseconds delay;  // for wait
  bool forget_assertion;
};

Row wait(UpstreamError e, seconds at, milliseconds delay) {
  return {std::move(e), at, false, Action::wait, delay, false};
}
Row give_up(UpstreamError e, seconds at, bool forget_assertion = false) {
  return {std::move(e), at, false, Action::give_up, milliseconds(0), forget_assertion};
}
Row refresh(UpstreamError e, seconds at) {
  return {std::move(e), at, false, Action::refresh_assertion, milliseconds(0), true};
}
Row stopping(Row row) {
  row.stopping = true;
  return row;
}

// Runs the rows in order against `state`; returns the last step (the give-up, in most tables).
FetchStep run_table(FetchState state, const std::vector<Row>& rows) {
  const RetryPolicy policy;
  FetchStep step;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    SCOPED_TRACE("row " + std::to_string(i + 1) + ": " + row.error.description);
    EXPECT_EQ(state.attempt, static_cast<int>(i) + 1) << "each failure is the next attempt";
    step = next_step(state, row.error, kStart + row.at, row.stopping, policy);
    EXPECT_EQ(step.action, row.action);
    if (row.action == Action::wait) {
      EXPECT_EQ(step.delay, row.delay);
    }
    EXPECT_EQ(step.forget_assertion, row.forget_assertion);
  }
  return step;
}

FetchState source_fetch() { return FetchState::for_source("mi", kStart); }
FetchState exchange_fetch() {
  return FetchState::for_exchange("contoso", "11111111-2222-3333-4444-555555555555", kStart);
}

TEST(FetchPlanTest, TransientSourceFailuresBackOffOneTwoFourSecondsThenGiveUpWithThePrefix) {
  const auto last = run_table(source_fetch(), {
                                                  wait(imds_status(500), seconds(0), seconds(1)),
                                                  wait(imds_status(503), seconds(1), seconds(2)),
                                                  wait(imds_status(500), seconds(3), seconds(4)),
                                                  give_up(imds_status(500), seconds(7)),
                                              });
  EXPECT_EQ(last.error.description, std::string(kSourcePrefix) + "IMDS answered HTTP 500");
  EXPECT_EQ(last.error.kind, UpstreamError::Kind::transient);
  EXPECT_EQ(http_status(last.error), 503u);
}

TEST(FetchPlanTest, ImdsGoneIsRetriedEveryTenSecondsWithinSeventySeconds) {
  std::vector<Row> rows;
  for (int at = 0; at <= 60; at += 10)
    rows.push_back(wait(imds_status(410), seconds(at), seconds(10)));
  rows.push_back(give_up(imds_status(410), seconds(70)));  // 70 + 10 is past the budget
  const auto last = run_table(source_fetch(), rows);
  EXPECT_EQ(rows.size(), 8u);
  EXPECT_EQ(last.error.description, std::string(kSourcePrefix) + "IMDS answered HTTP 410");
}

TEST(FetchPlanTest, ImdsGoneBudgetCountsTimeSpentInCallsToo) {
  // Slow calls eat the budget: a 410 at 61 s leaves no room for another 10 s wait.
  run_table(source_fetch(), {
                                wait(imds_status(410), seconds(25), seconds(10)),
                                give_up(imds_status(410), seconds(61)),
                            });
}

TEST(FetchPlanTest, RetryAfterUpToTheCapIsWaitedOutWithinTheAttemptLimit) {
  const auto last =
      run_table(exchange_fetch(), {
                                      wait(entra_throttled(3), seconds(0), seconds(3)),
                                      wait(entra_throttled(10), seconds(3), seconds(10)),
                                      wait(entra_throttled(1), seconds(13), seconds(1)),
                                      give_up(entra_throttled(1), seconds(14)),
                                  });
  EXPECT_EQ(last.error.kind, UpstreamError::Kind::throttled);
}

TEST(FetchPlanTest, RetryAfterOverTheCapGoesBackToTheCallerWithItsRetryAfter) {
  const auto last = run_table(exchange_fetch(), {give_up(entra_throttled(30), seconds(0))});
  EXPECT_EQ(last.error.kind, UpstreamError::Kind::throttled);
  EXPECT_EQ(last.error.retry_after_seconds, 30) << "the caller is told how long to wait";
  EXPECT_EQ(http_status(last.error), 429u);
  EXPECT_EQ(last.error.description,
            std::string(kExchangePrefix) + "Entra is throttling requests (HTTP 429)");
}

TEST(FetchPlanTest, TransientRetryAfterLongerThanTheBackOffIsHonouredUpToTheCap) {
  UpstreamError five = imds_status(503);
  five.retry_after_seconds = 5;
  UpstreamError long_wait = imds_status(503);
  long_wait.retry_after_seconds = 11;
  run_table(source_fetch(), {
                                wait(five, seconds(0), seconds(5)),
                                give_up(long_wait, seconds(5)),
                            });
}

TEST(FetchPlanTest, RejectedAssertionGetsOneFreshAssertionThenIsPermanent) {
  const auto last = run_table(exchange_fetch(), {
                                                    refresh(kExpiredAssertion, seconds(0)),
                                                    give_up(kExpiredAssertion, seconds(1), true),
                                                });
  EXPECT_EQ(last.error.kind, UpstreamError::Kind::permanent);
  EXPECT_EQ(http_status(last.error), 400u);
  EXPECT_EQ(last.error.aadsts, 700024);
  EXPECT_EQ(
      last.error.description,
      std::string(kExchangePrefix) + "AADSTS700024: Client assertion is not within its valid time");
}

TEST(FetchPlanTest, FreshAssertionIsTriedOncePerFetchEvenAfterOtherFailures) {
  run_table(exchange_fetch(), {
                                  refresh(kExpiredAssertion, seconds(0)),
                                  wait(imds_status(503), seconds(0), seconds(2)),
                                  give_up(kExpiredAssertion, seconds(2), true),
                              });
}

TEST(FetchPlanTest, FederatedCredentialPropagationIsRetriedAfterTwoThenFourSeconds) {
  run_table(exchange_fetch(), {
                                  wait(kPropagation, seconds(0), seconds(2)),
                                  wait(kPropagation, seconds(2), seconds(4)),
                                  give_up(kPropagation, seconds(6)),
                              });
}

TEST(FetchPlanTest, PermanentErrorsGiveUpAtOnce) {
  const auto last = run_table(exchange_fetch(), {give_up(kNoMatchingFic, seconds(0))});
  EXPECT_EQ(last.error.error, "invalid_client");
  EXPECT_EQ(http_status(last.error), 400u);

  UpstreamError bad_request = UpstreamError::permanent("invalid_request", "IMDS answered HTTP 400");
  bad_request.upstream_status = 400;
  run_table(source_fetch(), {give_up(bad_request, seconds(0))});
}

TEST(FetchPlanTest, AStoppingBrokerGivesUpInsteadOfWaitingOrRefreshing) {
  const auto last = run_table(source_fetch(), {stopping(give_up(imds_status(503), seconds(0)))});
  EXPECT_EQ(last.error.description, std::string(kSourcePrefix) + "IMDS answered HTTP 503");
  EXPECT_EQ(last.error.kind, UpstreamError::Kind::transient) << "a later fetch may well work";

  const auto rejected =
      run_table(exchange_fetch(), {stopping(give_up(kExpiredAssertion, seconds(0), true))});
  EXPECT_EQ(rejected.error.kind, UpstreamError::Kind::permanent);
}

TEST(FetchPlanTest, AWaitCutShortByStopEndsTheFetch) {
  // What the broker does when stop() wakes a retry's wait: the same error again, stopping.
  run_table(source_fetch(), {
                                wait(imds_status(500), seconds(0), seconds(1)),
                                stopping(give_up(imds_status(500), seconds(0))),
                            });
}

TEST(FetchPlanTest, ManagedIdentityUpstreamsNeverRefreshAnAssertion) {
  UpstreamError odd = UpstreamError::assertion_rejected("invalid_grant", "odd");
  run_table(source_fetch(), {give_up(odd, seconds(0))});
}

}  // namespace
}  // namespace ficbroker
