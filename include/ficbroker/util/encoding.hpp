// Byte-level encodings shared by the broker and the emulator: base64url (JWT segments),
// percent-encoding (query strings and form bodies).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ficbroker {

/// Base64url without padding, as JWTs use it.
std::string base64url_encode(std::string_view bytes);
/// Accepts base64url with or without padding; nullopt on any invalid character or length.
std::optional<std::string> base64url_decode(std::string_view text);

/// Percent-encodes everything but RFC 3986 unreserved characters (safe for query and form values).
std::string percent_encode(std::string_view text);
/// Decodes %XX escapes; with `plus_is_space` a '+' becomes ' ' (application/x-www-form-urlencoded).
/// nullopt on a malformed escape.
std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space);

using QueryParams = std::vector<std::pair<std::string, std::string>>;
/// Splits `a=1&b=2` (no leading '?') into decoded pairs, in order, duplicates kept.
/// Empty segments (`a=1&&b=2`) are skipped. nullopt on a malformed escape.
std::optional<QueryParams> parse_query(std::string_view query, bool plus_is_space = true);

/// Lower-cases ASCII letters.
std::string ascii_lower(std::string_view text);
bool iequals(std::string_view a, std::string_view b) noexcept;

}  // namespace ficbroker
