// How a spawned task's end is observed: logged when it may end, fatal when it must not die.
#include "ficbroker/util/task.hpp"

#include "ficbroker/util/asio.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <gtest/gtest.h>

#include <cstdio>
#include <stdexcept>
#include <string>

namespace ficbroker {
namespace {

// A Logger writing into memory, so the test can read what was logged.
struct CapturedLog {
  CapturedLog() : file(open_memstream(&data, &size)), log(LogLevel::info, file) {}
  ~CapturedLog() {
    std::fclose(file);
    std::free(data);
  }
  std::string text() {
    std::fflush(file);
    return std::string(data, size);
  }
  char* data = nullptr;
  std::size_t size = 0;
  std::FILE* file;
  Logger log;
};

asio::awaitable<void> throws_runtime_error() {
  throw std::runtime_error("boom");
  co_return;
}

asio::awaitable<void> throws_an_int() {
  throw 42;
  co_return;
}

asio::awaitable<void> ends_normally() { co_return; }

TEST(TaskExit, AFailedTaskThatMayEndIsLoggedAndTheLoopGoesOn) {
  CapturedLog captured;
  asio::io_context ioc;
  asio::co_spawn(ioc, throws_runtime_error(),
                 on_task_exit(captured.log, "session", TaskRole::may_end));
  EXPECT_NO_THROW(ioc.run());
  const auto text = captured.text();
  EXPECT_NE(text.find(R"("event":"task_failed")"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("task":"session")"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("what":"boom")"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("fatal":false)"), std::string::npos) << text;
}

TEST(TaskExit, AFailedTaskThatMustNotDieStopsTheLoopLoudly) {
  CapturedLog captured;
  asio::io_context ioc;
  asio::co_spawn(ioc, throws_runtime_error(),
                 on_task_exit(captured.log, "watchdog", TaskRole::must_not_die));
  EXPECT_THROW(ioc.run(), TaskDied);
  const auto text = captured.text();
  EXPECT_NE(text.find(R"("task":"watchdog")"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("fatal":true)"), std::string::npos) << text;
}

TEST(TaskExit, ExceptionsThatAreNotStdExceptionsAreObservedToo) {
  CapturedLog captured;
  asio::io_context ioc;
  asio::co_spawn(ioc, throws_an_int(),
                 on_task_exit(captured.log, "refresher", TaskRole::must_not_die));
  EXPECT_THROW(ioc.run(), TaskDied);
  EXPECT_NE(captured.text().find("not a std::exception"), std::string::npos);
}

TEST(TaskExit, ANormalEndIsSilent) {
  CapturedLog captured;
  asio::io_context ioc;
  asio::co_spawn(ioc, ends_normally(),
                 on_task_exit(captured.log, "accept", TaskRole::must_not_die));
  EXPECT_NO_THROW(ioc.run());
  EXPECT_EQ(captured.text(), "");
}

}  // namespace
}  // namespace ficbroker
