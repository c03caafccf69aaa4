#include "ficbroker/core/metrics.hpp"

#include "ficbroker/util/encoding.hpp"

#include <cstdio>

namespace ficbroker {
namespace {

// A label value in the text exposition format: the three escapes it knows (\\, \", \n), and
// U+FFFD for invalid UTF-8 and other control bytes, which Prometheus refuses: one bad label would
// make it reject the whole scrape. Label values come from config and callers' resources.
void append_label_value(std::string& out, std::string_view value) {
  constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  out.push_back('"');
  for (std::size_t i = 0; i < value.size(); ++i) {
    const char c = value[i];
    const auto u = static_cast<unsigned char>(c);
    if (c == '\\' || c == '"') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out.append("\\n");
    } else if (u >= 0x80) {
      const std::size_t n = utf8_sequence_length(value, i);
      out.append(n ? value.substr(i, n) : kReplacement);
      if (n) i += n - 1;
    } else if (u < 0x20 || u == 0x7F) {
      out.append(kReplacement);
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
}

void append_number(std::string& out, double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  out.append(buf);
}

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

void counter(std::string& out, std::string_view name, std::string_view help, std::uint64_t v) {
  header(out, name, "counter", help);
  out.append(name).append(" ").append(std::to_string(v)).append("\n");
}

void histogram(std::string& out, std::string_view name, std::string_view labels,
               const Metrics::Histogram& h) {
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < Metrics::kBuckets.size(); ++i) {
    cumulative += h.buckets[i];
    out.append(name).append("_bucket{").append(labels);
    if (!labels.empty()) out.push_back(',');
    out.append("le=\"");
    append_number(out, Metrics::kBuckets[i]);
    out.append("\"} ").append(std::to_string(cumulative)).append("\n");
  }
  out.append(name).append("_bucket{").append(labels);
  if (!labels.empty()) out.push_back(',');
  out.append("le=\"+Inf\"} ").append(std::to_string(h.count)).append("\n");
  out.append(name).append("_sum");
  if (!labels.empty()) out.append("{").append(labels).append("}");
  out.push_back(' ');
  append_number(out, h.sum);
  out.append("\n");
  out.append(name).append("_count");
  if (!labels.empty()) out.append("{").append(labels).append("}");
  out.append(" ").append(std::to_string(h.count)).append("\n");
}

}  // namespace

void Metrics::Histogram::observe(double seconds) {
  ++count;
  sum += seconds;
  for (std::size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) {
      ++buckets[i];
      break;
    }
  }
}

void Metrics::observe_upstream(std::string_view upstream, std::string_view tenant, double seconds) {
  upstream_latency_[{std::string(upstream), std::string(tenant)}].observe(seconds);
}

void Metrics::count_upstream_failure(std::string_view upstream, std::string_view error_class) {
  ++upstream_failures_[{std::string(upstream), std::string(error_class)}];
}

CacheKeyLabels split_cache_key(std::string_view key) {
  CacheKeyLabels labels;
  std::string_view parts[4];
  std::size_t n = 0;
  while (n < 4) {
    const auto sep = key.find('\x1f');
    parts[n++] = key.substr(0, sep);
    if (sep == std::string_view::npos) break;
    key = key.substr(sep + 1);
  }
  labels.kind = parts[0] == "t" ? "token" : parts[0] == "a" ? "assertion" : "managed_identity";
  labels.a = n > 1 ? parts[1] : std::string_view{};
  labels.b = n > 2 ? parts[2] : std::string_view{};
  labels.c = n > 3 ? parts[3] : std::string_view{};
  return labels;
}

void Metrics::render_requests(std::string& out) const {
  header(out, "ficbroker_requests_total", "counter",
         "HTTP requests answered, by route and status.");
  for (const auto& [key, count] : requests_) {
    out.append("ficbroker_requests_total{route=");
    append_label_value(out, key.first);
    out.append(",status=\"").append(std::to_string(key.second)).append("\"} ");
    out.append(std::to_string(count)).append("\n");
  }
  header(out, "ficbroker_request_duration_seconds", "histogram",
         "Time from a parsed request to its answer.");
  histogram(out, "ficbroker_request_duration_seconds", "", request_latency_);
}

namespace {

void render_cache_stats(std::string& out, const TokenCache& cache) {
  const auto& s = cache.stats();
  counter(out, "ficbroker_cache_hits_total", "Requests answered from the cache.", s.hits);
  counter(out, "ficbroker_cache_misses_total", "Requests that started an upstream fetch.",
          s.misses);
  counter(out, "ficbroker_cache_coalesced_total",
          "Requests that waited on a fetch another request started.", s.coalesced);
  counter(out, "ficbroker_cache_stale_serves_total",
          "Requests answered with a valid token whose refresh is failing.", s.stale_serves);
  counter(out, "ficbroker_cache_refreshes_total", "Background refreshes started.", s.refreshes);
  counter(out, "ficbroker_cache_refresh_failures_total", "Background refreshes that failed.",
          s.refresh_failures);
  counter(out, "ficbroker_cache_evictions_total", "Entries dropped (idle or over the bound).",
          s.evictions);
  counter(out, "ficbroker_cache_negative_hits_total",
          "Requests answered with a remembered permanent failure.", s.negative_hits);
  counter(out, "ficbroker_cache_fetches_refused_total",
          "Fetches refused (503) because the in-flight bound and its queue were full.",
          s.fetches_refused);
  header(out, "ficbroker_cache_entries", "gauge", "Entries in the token cache.");
  out.append("ficbroker_cache_entries ").append(std::to_string(cache.size())).append("\n");
}

void render_token_expiry(std::string& out, const TokenCache& cache) {
  header(out, "ficbroker_token_expiry_seconds", "gauge", "Seconds until a cached token expires.");
  cache.for_each_entry([&](const std::string& key, std::chrono::seconds left) {
    const auto l = split_cache_key(key);
    out.append("ficbroker_token_expiry_seconds{kind=");
    append_label_value(out, l.kind);
    if (l.kind == "token") {
      out.append(",tenant=");
      append_label_value(out, l.a);
      out.append(",app=");
      append_label_value(out, l.b);
      out.append(",resource=");
      std::string_view resource = l.c;
      if (resource.ends_with("/.default")) resource.remove_suffix(9);
      append_label_value(out, resource);
    } else {
      out.append(",source=");
      append_label_value(out, l.a);
      out.append(",resource=");
      append_label_value(out, l.b);
    }
    out.append("} ").append(std::to_string(left.count())).append("\n");
  });
}

}  // namespace

void Metrics::render_upstreams(std::string& out) const {
  header(out, "ficbroker_upstream_duration_seconds", "histogram",
         "Upstream call latency by upstream and tenant.");
  for (const auto& [key, h] : upstream_latency_) {
    std::string labels = "upstream=";
    append_label_value(labels, key.first);
    labels.append(",tenant=");
    append_label_value(labels, key.second);
    histogram(out, "ficbroker_upstream_duration_seconds", labels, h);
  }
  header(out, "ficbroker_upstream_failures_total", "counter",
         "Failed upstream calls by upstream and error class.");
  for (const auto& [key, count] : upstream_failures_) {
    out.append("ficbroker_upstream_failures_total{upstream=");
    append_label_value(out, key.first);
    out.append(",class=");
    append_label_value(out, key.second);
    out.append("} ").append(std::to_string(count)).append("\n");
  }
}

std::string Metrics::render(const TokenCache& cache, bool ready) const {
  std::string out;
  out.reserve(4096);
  header(out, "ficbroker_build_info", "gauge", "Build information.");
  out.append("ficbroker_build_info{version=\"0.1.0\"} 1\n");
  header(out, "ficbroker_ready", "gauge", "1 when every prewarm token is cached.");
  out.append("ficbroker_ready ").append(ready ? "1" : "0").append("\n");
  render_requests(out);
  render_cache_stats(out, cache);
  render_token_expiry(out, cache);
  render_upstreams(out);
  counter(out, "ficbroker_connections_rejected_total",
          "Connections refused because the broker was at its connection limit.",
          connections_rejected_);
  header(out, "ficbroker_connections_open", "gauge", "Open client connections.");
  out.append("ficbroker_connections_open ").append(std::to_string(connections_open_)).append("\n");
  return out;
}

std::string prometheus_label_value(std::string_view value) {
  std::string out;
  append_label_value(out, value);
  return out;
}

}  // namespace ficbroker
