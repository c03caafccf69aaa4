// The project's error codes, for domain results (`result<T>`) that are not I/O errors.
#pragma once

#include <boost/system/error_code.hpp>

#include <type_traits>

namespace ficbroker {

enum class errc {
  ok = 0,
  /// A JSON document could not be parsed, or had the wrong shape.
  bad_json,
  /// An upstream answered with something that is not a usable token response.
  bad_upstream_response,
  /// An upstream answered with an HTTP error status (details travel in UpstreamError).
  upstream_status,
  /// An upstream did not answer in time.
  upstream_timeout,
  /// The upstream URL is not allowed (plain http to a routable host, bad scheme...).
  url_not_allowed,
  /// A response body or header was larger than the limit.
  too_large,
  /// A file-based source could not be read.
  source_unreadable,
  /// The request was shed because the broker is at a limit.
  overloaded,
};

const boost::system::error_category& ficbroker_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), ficbroker_category()};
}

}  // namespace ficbroker

template <>
struct boost::system::is_error_code_enum<ficbroker::errc> : std::true_type {};
