// When a cached token is refreshed, when it may be served, and how failed refreshes back off.
// Pure: every decision takes "now" and a jitter sample, so tests need neither sleep nor luck.
#pragma once

#include "ficbroker/util/clock.hpp"
#include "ficbroker/util/token.hpp"

#include <chrono>

namespace ficbroker {

struct RefreshPolicy {
  /// Never hand out a token with less than this left (MSAL discards tokens with < 5 min).
  std::chrono::seconds min_validity{300};
  /// Share of the refresh point that is randomised, so keys issued together spread out.
  double jitter_fraction = 0.1;
  std::chrono::seconds max_backoff{60};

  bool servable(const Token& token, SteadyTime now) const {
    return token.expires_at - now > min_validity;
  }

  /// When to refresh a token issued at `issued` that expires at `expires`. Lifetimes over two
  /// hours refresh at half-life (what every MSAL does); shorter ones at three quarters of the
  /// servable window (lifetime minus the floor), so that a failing refresh still has a quarter of
  /// the window to retry before callers would see the floor. `jitter` in [0, 1) moves the point
  /// earlier by up to `jitter_fraction` of the window.
  SteadyTime refresh_at(SteadyTime issued, SteadyTime expires, double jitter) const {
    const auto lifetime = expires - issued;
    const auto servable_window =
        lifetime - std::chrono::duration_cast<SteadyTime::duration>(min_validity);
    if (servable_window <= SteadyTime::duration::zero()) return issued;
    SteadyTime::duration base;
    if (lifetime > std::chrono::hours(2)) {
      base = lifetime / 2;
    } else {
      base = servable_window * 3 / 4;
    }
    const auto spread = std::chrono::duration_cast<SteadyTime::duration>(
        servable_window * (jitter_fraction * jitter));
    return issued + base - spread;
  }

  /// Delay before retry number `failures` (1-based): 1 s, 2 s, 4 s … capped at max_backoff,
  /// never sooner than an upstream Retry-After, and with up to 50 % jitter added.
  std::chrono::milliseconds retry_delay(int failures, int retry_after_seconds,
                                        double jitter) const {
    const int exponent = failures < 1 ? 0 : (failures > 16 ? 15 : failures - 1);
    auto delay = std::chrono::milliseconds(1000) * (1 << exponent);
    if (delay > max_backoff) delay = max_backoff;
    delay += std::chrono::milliseconds(
        static_cast<long>(static_cast<double>(delay.count()) * 0.5 * jitter));
    const auto floor = std::chrono::milliseconds(std::chrono::seconds(retry_after_seconds));
    return delay < floor ? floor : delay;
  }
};

}  // namespace ficbroker
