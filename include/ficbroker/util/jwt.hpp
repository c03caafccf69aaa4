// Reading (not verifying) JWTs: ficbroker only needs claims such as exp and nbf of tokens it was
// handed by a trusted upstream or a token file; Entra verifies signatures.
#pragma once

#include <boost/json/object.hpp>

#include <cstdint>
#include <optional>
#include <string_view>

namespace ficbroker {

/// True if `token` has three dot-separated base64url segments, the first two non-empty.
bool looks_like_jwt(std::string_view token) noexcept;

/// The decoded payload (claims) of a compact JWS, or nullopt if it is not one.
std::optional<boost::json::object> decode_jwt_claims(std::string_view token);

/// An integer (NumericDate) claim, or nullopt when absent or not a number.
std::optional<std::int64_t> numeric_claim(const boost::json::object& claims, std::string_view name);

}  // namespace ficbroker
