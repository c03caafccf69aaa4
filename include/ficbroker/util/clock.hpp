// Time as the broker sees it. Decisions take a Clock so tests can move time by hand.
#pragma once

#include <chrono>
#include <cstdint>

namespace ficbroker {

using SteadyTime = std::chrono::steady_clock::time_point;
using Seconds = std::chrono::seconds;

/// Two views of "now": a steady one for deadlines and scheduling, and Unix epoch seconds for the
/// wire (expires_on). Upstream expiries are converted to steady time once, at receipt.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual SteadyTime now() const = 0;
  virtual std::int64_t epoch_seconds() const = 0;
};

class SystemClock final : public Clock {
 public:
  SteadyTime now() const override { return std::chrono::steady_clock::now(); }
  std::int64_t epoch_seconds() const override {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

/// A clock that only moves when told to.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(std::int64_t epoch = 1'800'000'000) : epoch_(epoch) {}
  SteadyTime now() const override { return SteadyTime{} + std::chrono::hours(1000) + offset_; }
  std::int64_t epoch_seconds() const override {
    return epoch_ + std::chrono::duration_cast<std::chrono::seconds>(offset_).count();
  }
  void advance(std::chrono::steady_clock::duration d) { offset_ += d; }

 private:
  std::int64_t epoch_;
  std::chrono::steady_clock::duration offset_{};
};

}  // namespace ficbroker
