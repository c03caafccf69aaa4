#include "ficbroker/util/jwt.hpp"

#include "ficbroker/util/encoding.hpp"

#include <boost/json/parse.hpp>

namespace ficbroker {
namespace {

bool is_b64url(char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '=';
}

}  // namespace

bool looks_like_jwt(std::string_view token) noexcept {
  int dots = 0;
  std::size_t segment = 0;
  for (char c : token) {
    if (c == '.') {
      if (segment == 0 && dots < 2) return false;
      ++dots;
      segment = 0;
    } else if (!is_b64url(c)) {
      return false;
    } else {
      ++segment;
    }
  }
  return dots == 2;
}

std::optional<boost::json::object> decode_jwt_claims(std::string_view token) {
  if (!looks_like_jwt(token)) return std::nullopt;
  const auto first = token.find('.');
  const auto second = token.find('.', first + 1);
  const auto payload = base64url_decode(token.substr(first + 1, second - first - 1));
  if (!payload) return std::nullopt;
  boost::system::error_code ec;
  auto value = boost::json::parse(*payload, ec);
  if (ec || !value.is_object()) return std::nullopt;
  return std::move(value.get_object());
}

std::optional<std::int64_t> numeric_claim(const boost::json::object& claims,
                                          std::string_view name) {
  const auto* v = claims.if_contains(name);
  if (!v) return std::nullopt;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64() && v->get_uint64() < (1ULL << 62)) {
    return static_cast<std::int64_t>(v->get_uint64());
  }
  if (v->is_double() && v->get_double() > -9.0e18 && v->get_double() < 9.0e18) {
    return static_cast<std::int64_t>(v->get_double());
  }
  return std::nullopt;
}

}  // namespace ficbroker
