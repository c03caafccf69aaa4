// Counters and histograms, rendered in the Prometheus text format on /metrics. Single-threaded:
// updated and read on the io_context thread only. Labels never carry a token.
#pragma once

#include "ficbroker/cache/token_cache.hpp"

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <tuple>

namespace ficbroker {

class Metrics {
 public:
  static constexpr std::array<double, 12> kBuckets{0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                   0.25,  0.5,   1.0,  2.5,   5.0,  10.0};
  struct Histogram {
    std::array<std::uint64_t, kBuckets.size()> buckets{};
    std::uint64_t count = 0;
    double sum = 0;
    void observe(double seconds);
  };

  /// `route` is a route's label (route_name): a string with static storage, kept as a view.
  void count_request(std::string_view route, unsigned status) { ++requests_[{route, status}]; }
  void observe_request(double seconds) { request_latency_.observe(seconds); }
  /// `upstream` is imds, app_service, file or entra; `tenant` empty for managed identity.
  void observe_upstream(std::string_view upstream, std::string_view tenant, double seconds);
  void count_upstream_failure(std::string_view upstream, std::string_view error_class);
  void count_connection_rejected() { ++connections_rejected_; }
  void set_connections(std::int64_t open) { connections_open_ = open; }

  /// The whole exposition. `ready` and `cache` describe the moment of the scrape.
  std::string render(const TokenCache& cache, bool ready) const;

 private:
  void render_requests(std::string& out) const;
  void render_upstreams(std::string& out) const;

  std::map<std::pair<std::string_view, unsigned>, std::uint64_t> requests_;
  Histogram request_latency_;
  std::map<std::pair<std::string, std::string>, Histogram> upstream_latency_;
  std::map<std::pair<std::string, std::string>, std::uint64_t> upstream_failures_;
  std::uint64_t connections_rejected_ = 0;
  std::int64_t connections_open_ = 0;
};

/// Splits a cache key into its labels: kind ("token", "assertion", "managed_identity"), and
/// up to three parts (tenant/app/scope or source/resource).
struct CacheKeyLabels {
  std::string_view kind;
  std::string_view a, b, c;
};
CacheKeyLabels split_cache_key(std::string_view key);

/// A label value as the exposition writes it, quotes included: escaped, and always valid UTF-8
/// without control bytes (exposed for tests).
std::string prometheus_label_value(std::string_view value);

}  // namespace ficbroker
