// What an accept loop does after accept() fails (EMFILE, ENFILE, ENOBUFS…): pause, longer each
// time, and log at a bounded rate. Without it a failing accept() spins the one I/O thread and
// writes a log line per attempt. Pure: the caller passes the time.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace ficbroker {

class AcceptBackoff {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kFirstDelay{10};
  static constexpr std::chrono::milliseconds kMaxDelay{1000};
  static constexpr std::chrono::seconds kLogInterval{10};

  struct Step {
    std::chrono::milliseconds delay;
    bool log = false;                            // write a log line for this failure
    std::int64_t suppressed_since_last_log = 0;  // failures not logged since the last line
  };

  Step failed(Clock::time_point now) {
    delay_ = delay_.count() == 0 ? kFirstDelay : std::min(delay_ * 2, kMaxDelay);
    Step step{delay_};
    if (!logged_once_ || now - last_log_ >= kLogInterval) {
      step.log = true;
      step.suppressed_since_last_log = suppressed_;
      suppressed_ = 0;
      last_log_ = now;
      logged_once_ = true;
    } else {
      ++suppressed_;
    }
    return step;
  }

  /// A connection was accepted: the next failure starts from the shortest pause again.
  void succeeded() { delay_ = std::chrono::milliseconds{0}; }

 private:
  std::chrono::milliseconds delay_{0};
  Clock::time_point last_log_{};
  bool logged_once_ = false;
  std::int64_t suppressed_ = 0;
};

}  // namespace ficbroker
