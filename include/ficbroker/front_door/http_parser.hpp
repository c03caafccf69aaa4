// A strict, zero-copy HTTP/1.1 request parser for the front door. Pure: bytes in, a verdict out.
// Strict on purpose: bare LF, obsolete line folding, Transfer-Encoding, conflicting lengths and
// duplicated security headers are refused rather than interpreted (request smuggling and
// header-confusion tricks need a parser that guesses).
#pragma once

#include "ficbroker/front_door/request.hpp"

#include <cstddef>
#include <string_view>

namespace ficbroker {

struct ParseLimits {
  std::size_t max_header_bytes = 8 * 1024;  // request line + headers + blank line
  std::size_t max_body_bytes = 16 * 1024;
  std::size_t max_headers = 64;
};

enum class ParseStatus {
  complete,          // a whole request (head and body) is in the buffer
  incomplete,        // need more bytes
  bad_request,       // 400
  header_too_large,  // 431
  body_too_large,    // 413
  not_implemented,   // 501 (Transfer-Encoding)
  bad_version,       // 505
};

struct ParsedRequest {
  RequestView view;  // method, target, the headers routing needs, body
  bool keep_alive = true;
  bool http10 = false;          // answer in HTTP/1.0, saying keep-alive explicitly
  bool head = false;            // HEAD: answer without a body
  std::size_t total_bytes = 0;  // head + body: where the next pipelined request starts
};

struct ParseResult {
  ParseStatus status = ParseStatus::incomplete;
  ParsedRequest request;
  std::string_view reason;  // for errors: what was wrong (safe to show the client)
};

/// Parses the request at the start of `data`. The views in the result point into `data`.
ParseResult parse_request(std::string_view data, const ParseLimits& limits);

/// The status code an error status maps to.
unsigned http_status_for(ParseStatus status) noexcept;

}  // namespace ficbroker
