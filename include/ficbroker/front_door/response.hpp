// JSON bodies ficbroker answers with. Built by hand into one reserved string: this is the hot
// path of a cache hit, and every value is a string the wire format fixes.
#pragma once

#include "ficbroker/util/encoding.hpp"
#include "ficbroker/util/token.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace ficbroker {

/// The success body: access_token, client_id, expires_in (seconds left at `now_epoch`),
/// expires_on, ext_expires_in, not_before, resource (as the caller sent it), token_type — every
/// value a string. One shape for every route: expires_on is epoch seconds even on the 2017-09-01
/// App Service route (whose original used a date string), because every client parses epoch
/// seconds and @azure/identity misreads the date string as "expires now".
std::string format_token_body(const Token& token, std::string_view resource,
                              std::string_view client_id, std::int64_t now_epoch);

/// `{"error":…,"error_description":…}`; with `app_service_keys` also `statusCode` and `message`,
/// which App Service clients read.
std::string format_error_body(unsigned status, std::string_view error, std::string_view description,
                              bool app_service_keys);

}  // namespace ficbroker
