// Runs a coroutine test body on an io_context: co_spawns it with a handler that keeps its result
// or exception and stops the context, runs the context with a wall-clock hang guard, and rethrows
// in the test thread. Each test gets its own io_context.
#pragma once

#include "ficbroker/util/asio.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>

#include <chrono>
#include <exception>
#include <optional>
#include <stdexcept>
#include <utility>

namespace ficbroker::testing {

inline constexpr std::chrono::seconds kHangGuard{10};

namespace detail {

// Runs `ioc` until the spawned body reports completion; rethrows its exception.
inline void run_until_done(asio::io_context& ioc, const bool& done, const std::exception_ptr& error,
                           std::chrono::steady_clock::duration guard) {
  ioc.restart();
  ioc.run_for(guard);
  if (!done) throw std::runtime_error("test coroutine did not finish (hang guard)");
  if (error) std::rethrow_exception(error);
}

}  // namespace detail

inline void run_coro(asio::io_context& ioc, asio::awaitable<void> body,
                     std::chrono::steady_clock::duration guard = kHangGuard) {
  std::exception_ptr error;
  bool done = false;
  asio::co_spawn(ioc, std::move(body), [&](std::exception_ptr e) {
    error = e;
    done = true;
    ioc.stop();
  });
  detail::run_until_done(ioc, done, error, guard);
}

template <class T>
T run_coro(asio::io_context& ioc, asio::awaitable<T> body,
           std::chrono::steady_clock::duration guard = kHangGuard) {
  std::exception_ptr error;
  bool done = false;
  std::optional<T> result;
  asio::co_spawn(ioc, std::move(body), [&](std::exception_ptr e, T value) {
    error = e;
    if (!e) result.emplace(std::move(value));
    done = true;
    ioc.stop();
  });
  detail::run_until_done(ioc, done, error, guard);
  return std::move(*result);
}

/// Lets every other ready handler run once before continuing.
inline asio::awaitable<void> yield_once() {
  co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
}

/// Yields until `done()` holds or `max_rounds` rounds have passed; returns `done()`.
template <class Pred>
asio::awaitable<bool> yield_until(Pred done, int max_rounds = 10000) {
  for (int i = 0; i < max_rounds && !done(); ++i) co_await yield_once();
  co_return done();
}

}  // namespace ficbroker::testing
