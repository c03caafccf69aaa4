// Turning upstream answers into tokens or classified errors. Pure functions: no I/O, so they are
// unit-tested and fuzzed directly. Nothing here copies a token into an error description.
#pragma once

#include "ficbroker/util/asio.hpp"
#include "ficbroker/util/clock.hpp"
#include "ficbroker/util/token.hpp"

#include <string_view>

namespace ficbroker {

/// An Entra v2 token endpoint answer (`{"token_type","expires_in","access_token",...}` on 200,
/// `{"error","error_description","error_codes",...}` otherwise).
TokenResult parse_entra_response(unsigned status, std::string_view body,
                                 std::string_view retry_after, const Clock& clock);

/// An IMDS or App Service managed-identity answer. Accepts expires_in and/or expires_on, as
/// JSON numbers or numeric strings. `who` names the upstream in error texts (e.g. "IMDS").
TokenResult parse_managed_identity_response(unsigned status, std::string_view body,
                                            std::string_view retry_after, const Clock& clock,
                                            std::string_view who);

/// A transport failure (timeout, reset, TLS, oversized) as an error for the caller.
UpstreamError transport_error(const error_code& ec, std::string_view who);

/// Parses a Retry-After header given in seconds; 0 when absent or not a small number.
int parse_retry_after(std::string_view header);

}  // namespace ficbroker
