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

/// Length of the valid UTF-8 sequence starting at text[i], or 0 if it is not one (overlong forms,
/// surrogates and code points past U+10FFFF included).
std::size_t utf8_sequence_length(std::string_view text, std::size_t i);

/// Appends `text` as a JSON string literal (quotes included). Invalid UTF-8 becomes U+FFFD, so
/// caller-supplied bytes never make the output invalid JSON.
void append_json_string(std::string& out, std::string_view text);

}  // namespace ficbroker
