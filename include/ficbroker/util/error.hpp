// The project's error codes, for domain results (`result<T>`) that are not I/O errors.
#pragma once

#include <boost/system/error_code.hpp>

#include <type_traits>

namespace ficbroker {

enum class errc {
  ok = 0,
  /// An upstream answered with something that is not a usable HTTP response (framing).
  bad_upstream_response,
  /// An upstream did not answer in time.
  upstream_timeout,
  /// A response body or header was larger than the limit.
  too_large,
};

const boost::system::error_category& ficbroker_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), ficbroker_category()};
}

}  // namespace ficbroker

template <>
struct boost::system::is_error_code_enum<ficbroker::errc> : std::true_type {};
