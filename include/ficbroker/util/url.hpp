// Minimal absolute-URL handling for upstream endpoints (config values, not request targets).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ficbroker {

struct Url {
  std::string scheme;  // "http" or "https", lower case
  std::string host;    // without brackets for IPv6 literals
  std::uint16_t port = 0;
  std::string path;  // starts with '/', no query; "/" when absent

  bool is_https() const noexcept { return scheme == "https"; }
  /// host[:port] as it belongs in a Host header (brackets for IPv6, port omitted when default).
  std::string host_header() const;

  friend bool operator==(const Url&, const Url&) = default;
};

/// Parses `scheme://host[:port][/path]`. Only http and https; no userinfo, query or fragment.
std::optional<Url> parse_url(std::string_view text);

/// True for `localhost`, 127.0.0.0/8, ::1, 169.254.0.0/16 and fe80::/10 — the hosts for which
/// plain http is acceptable (IMDS and sidecars are plain HTTP by design).
bool is_loopback_or_link_local(std::string_view host);
/// True for `localhost`, 127.0.0.0/8 and ::1 (also IPv4-mapped).
bool is_loopback(std::string_view host);

}  // namespace ficbroker
