#include "ficbroker/util/url.hpp"

#include "ficbroker/util/encoding.hpp"

#include <boost/asio/ip/address.hpp>

#include <cctype>
#include <charconv>

namespace ficbroker {

std::string Url::host_header() const {
  std::string out = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  const bool default_port = (is_https() && port == 443) || (!is_https() && port == 80);
  if (!default_port) out += ":" + std::to_string(port);
  return out;
}

std::optional<Url> parse_url(std::string_view text) {
  Url url;
  const auto sep = text.find("://");
  if (sep == std::string_view::npos) return std::nullopt;
  url.scheme = ascii_lower(text.substr(0, sep));
  if (url.scheme != "http" && url.scheme != "https") return std::nullopt;
  std::string_view rest = text.substr(sep + 3);
  if (rest.find_first_of("?#@\\ ") != std::string_view::npos) return std::nullopt;
  // The host and path end up in a request line, a Host header, a CONNECT line and SNI: no
  // control characters, no non-ASCII bytes.
  for (char c : rest) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7F) return std::nullopt;
  }
  const auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  url.path = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  std::string_view port_text;
  const bool bracketed = !authority.empty() && authority.front() == '[';
  if (bracketed) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    url.host = std::string(authority.substr(1, close - 1));
    const auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return std::nullopt;
      port_text = after.substr(1);
    }
  } else {
    const auto colon = authority.rfind(':');
    url.host = std::string(authority.substr(0, colon));
    if (url.host.find(':') != std::string::npos) return std::nullopt;  // IPv6 needs brackets
    if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
  }
  if (url.host.empty()) return std::nullopt;
  for (char c : url.host) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' ||
                    (bracketed && c == ':');
    if (!ok) return std::nullopt;
  }
  url.host = ascii_lower(url.host);
  if (port_text.empty()) {
    url.port = url.is_https() ? 443 : 80;
  } else {
    unsigned value = 0;
    const auto [ptr, ec] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
    if (ec != std::errc{} || ptr != port_text.data() + port_text.size() || value == 0 ||
        value > 65535) {
      return std::nullopt;
    }
    url.port = static_cast<std::uint16_t>(value);
  }
  return url;
}

namespace {

std::optional<boost::asio::ip::address> as_address(std::string_view host) {
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(std::string(host), ec);
  if (ec) return std::nullopt;
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, address.to_v6());
  }
  return address;
}

}  // namespace

bool is_loopback(std::string_view host) {
  // A NUL would end the C string the address parser sees: "127.0.0.1\0.evil" is not loopback.
  if (host.find('\0') != std::string_view::npos) return false;
  if (iequals(host, "localhost")) return true;
  const auto address = as_address(host);
  return address && address->is_loopback();
}

bool is_loopback_or_link_local(std::string_view host) {
  if (host.find('\0') != std::string_view::npos) return false;
  if (is_loopback(host)) return true;
  const auto address = as_address(host);
  if (!address) return false;
  if (address->is_v4()) return (address->to_v4().to_uint() >> 16) == 0xA9FE;  // 169.254/16
  return address->to_v6().is_link_local();
}

}  // namespace ficbroker
