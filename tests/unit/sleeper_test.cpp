// The production Sleeper: wake_all() ends pending waits at once (a stopping broker must not wait
// out a retry's back-off). Only waits that end early are run, so no test waits for real time.
#include "ficbroker/util/sleeper.hpp"

#include "run_coro.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <gtest/gtest.h>

#include <optional>

namespace ficbroker {
namespace {

using std::chrono::hours;
using testing::run_coro;
using testing::yield_until;

TEST(TimerSleeperTest, WakeAllEndsEveryPendingSleepEarly) {
  asio::io_context ioc;
  TimerSleeper sleeper(ioc.get_executor());
  std::optional<bool> first, second;
  const auto start = [&](std::optional<bool>& out) {
    asio::co_spawn(ioc, sleeper.sleep_for(hours(1)), [&out](std::exception_ptr e, bool completed) {
      EXPECT_FALSE(e);
      out = completed;
    });
  };
  run_coro(ioc, [&]() -> asio::awaitable<void> {
    start(first);
    start(second);
    co_await testing::yield_once();
    EXPECT_FALSE(first.has_value()) << "an hour has not passed";
    sleeper.wake_all();
    const bool woken = co_await yield_until([&] { return first && second; });
    EXPECT_TRUE(woken) << "wake_all() left a sleep pending";
  }());
  EXPECT_EQ(first, false) << "a sleep cut short reports it";
  EXPECT_EQ(second, false);
}

TEST(TimerSleeperTest, ASleepThatRunsOutReportsCompletion) {
  asio::io_context ioc;
  TimerSleeper sleeper(ioc.get_executor());
  EXPECT_TRUE(run_coro(ioc, sleeper.sleep_for(std::chrono::milliseconds(0))));
  sleeper.wake_all();  // nothing pending: harmless
}

}  // namespace
}  // namespace ficbroker
