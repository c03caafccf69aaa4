// Common Asio/Beast aliases. Boost 1.81 has no default completion token, so every async call
// names one: `use_awaitable` where failure is a bug, `use_nothrow` where failure is expected.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#if !defined(BOOST_ASIO_HAS_CO_AWAIT)
#error "C++20 coroutines are required"
#endif

namespace boost::beast {}

namespace ficbroker {

namespace asio = boost::asio;
namespace beast = boost::beast;
using error_code = boost::system::error_code;
template <class T>
using result = boost::system::result<T>;

/// `auto [ec, n] = co_await op(..., use_nothrow);`
inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

}  // namespace ficbroker
