#include "ficbroker/front_door/http_parser.hpp"

#include "ficbroker/util/encoding.hpp"

#include <charconv>

namespace ficbroker {
namespace {

bool is_tchar(char c) noexcept {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

std::string_view trim_ows(std::string_view v) noexcept {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

bool has_token(std::string_view list, std::string_view token) noexcept {
  while (!list.empty()) {
    const auto comma = list.find(',');
    if (iequals(trim_ows(list.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

ParseResult fail(ParseStatus status, std::string_view reason) {
  ParseResult r;
  r.status = status;
  r.reason = reason;
  return r;
}

// Sets a header that must appear at most once; a second occurrence is an error.
bool set_once(std::optional<std::string_view>& slot, std::string_view value) noexcept {
  if (slot) return false;
  slot = value;
  return true;
}

}  // namespace

unsigned http_status_for(ParseStatus status) noexcept {
  switch (status) {
    case ParseStatus::header_too_large:
      return 431;
    case ParseStatus::body_too_large:
      return 413;
    case ParseStatus::not_implemented:
      return 501;
    case ParseStatus::bad_version:
      return 505;
    default:
      return 400;
  }
}

namespace {

// The framing headers: read while parsing, used once the head is complete.
struct Framing {
  std::optional<std::string_view> content_length;
  std::optional<std::string_view> connection;
  std::optional<std::string_view> content_type;
  bool http10 = false;
};

// Request line: method SP request-target SP HTTP-version. nullopt: accepted.
std::optional<ParseResult> parse_request_line(std::string_view line, RequestView& view,
                                              Framing& framing) {
  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == 0 || sp2 == std::string_view::npos ||
      line.find(' ', sp2 + 1) != std::string_view::npos) {
    return fail(ParseStatus::bad_request, "malformed request line");
  }
  view.method = line.substr(0, sp1);
  for (char c : view.method) {
    if (!is_tchar(c)) return fail(ParseStatus::bad_request, "malformed method");
  }
  view.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (view.target.empty()) return fail(ParseStatus::bad_request, "empty request target");
  for (char c : view.target) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7F) return fail(ParseStatus::bad_request, "malformed request target");
  }
  const std::string_view version = line.substr(sp2 + 1);
  if (version == "HTTP/1.1" || version == "HTTP/1.0") {
    framing.http10 = version == "HTTP/1.0";
    return std::nullopt;
  }
  if (version.starts_with("HTTP/")) {
    return fail(ParseStatus::bad_version, "only HTTP/1.0 and HTTP/1.1 are supported");
  }
  return fail(ParseStatus::bad_request, "malformed HTTP version");
}

// Files a header the front door reads; the others are checked for syntax and ignored.
std::optional<ParseResult> file_header(std::string_view name, std::string_view value,
                                       RequestView& view, Framing& framing) {
  bool once = true;
  if (iequals(name, "host")) {
    once = set_once(view.host, value);
  } else if (iequals(name, "metadata")) {
    once = set_once(view.metadata, value);
  } else if (iequals(name, "x-identity-header")) {
    once = set_once(view.identity_header, value);
  } else if (iequals(name, "secret")) {
    once = set_once(view.secret, value);
  } else if (iequals(name, "content-length")) {
    once = set_once(framing.content_length, value);
  } else if (iequals(name, "content-type")) {
    once = set_once(framing.content_type, value);
  } else if (iequals(name, "connection")) {
    once = set_once(framing.connection, value);
  } else if (iequals(name, "transfer-encoding")) {
    return fail(ParseStatus::not_implemented, "Transfer-Encoding is not supported");
  } else if (iequals(name, "x-forwarded-for") || iequals(name, "forwarded")) {
    view.forwarded = true;
  }
  if (!once) {
    return fail(ParseStatus::bad_request, "a header that must appear once appears more than once");
  }
  return std::nullopt;
}

std::optional<ParseResult> parse_header_field(std::string_view field, RequestView& view,
                                              Framing& framing) {
  if (field.find('\n') != std::string_view::npos || field.find('\r') != std::string_view::npos) {
    return fail(ParseStatus::bad_request, "line endings must be CRLF");
  }
  if (field.front() == ' ' || field.front() == '\t') {
    return fail(ParseStatus::bad_request, "obsolete line folding is not accepted");
  }
  const auto colon = field.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    return fail(ParseStatus::bad_request, "malformed header field");
  }
  const std::string_view name = field.substr(0, colon);
  for (char c : name) {
    if (!is_tchar(c)) return fail(ParseStatus::bad_request, "malformed header name");
  }
  const std::string_view value = trim_ows(field.substr(colon + 1));
  if (value.find('\0') != std::string_view::npos) {
    return fail(ParseStatus::bad_request, "NUL in a header value");
  }
  return file_header(name, value, view, framing);
}

// Before CRLFCRLF: wait for more, unless the head is already too large or cannot end.
ParseResult incomplete_head(std::string_view data, const ParseLimits& limits) {
  if (data.size() >= limits.max_header_bytes) {
    return fail(ParseStatus::header_too_large, "request headers too large");
  }
  // A bare LF line ending will never produce CRLFCRLF: refuse it early instead of waiting.
  const auto lf = data.find('\n');
  if (lf != std::string_view::npos && (lf == 0 || data[lf - 1] != '\r')) {
    return fail(ParseStatus::bad_request, "line endings must be CRLF");
  }
  return {};
}

}  // namespace

ParseResult parse_request(std::string_view data, const ParseLimits& limits) {
  const auto head_end = data.find("\r\n\r\n");
  if (head_end == std::string_view::npos) return incomplete_head(data, limits);
  const std::size_t head_size = head_end + 4;
  if (head_size > limits.max_header_bytes) {
    return fail(ParseStatus::header_too_large, "request headers too large");
  }
  std::string_view head = data.substr(0, head_end + 2);  // keep the last header's CRLF

  ParseResult result;
  RequestView& view = result.request.view;
  Framing framing;
  const auto line_end = head.find("\r\n");
  if (auto failed = parse_request_line(head.substr(0, line_end), view, framing)) return *failed;
  head.remove_prefix(line_end + 2);
  for (std::size_t count = 1; !head.empty(); ++count) {
    if (count > limits.max_headers) {
      return fail(ParseStatus::header_too_large, "too many header fields");
    }
    const auto end = head.find("\r\n");
    if (auto failed = parse_header_field(head.substr(0, end), view, framing)) return *failed;
    head.remove_prefix(end + 2);
  }
  if (!framing.http10 && !view.host) return fail(ParseStatus::bad_request, "Host header required");

  std::size_t body_size = 0;
  if (framing.content_length) {
    const auto cl = *framing.content_length;
    const auto [ptr, ec] = std::from_chars(cl.data(), cl.data() + cl.size(), body_size);
    if (cl.empty() || ec != std::errc{} || ptr != cl.data() + cl.size()) {
      return fail(ParseStatus::bad_request, "malformed Content-Length");
    }
    if (body_size > limits.max_body_bytes) {
      return fail(ParseStatus::body_too_large, "request body too large");
    }
  }
  if (data.size() < head_size + body_size) return {};

  view.content_type = framing.content_type.value_or(std::string_view{});
  view.body = data.substr(head_size, body_size);
  const bool http10 = framing.http10;
  result.request.keep_alive = framing.connection
                                  ? !has_token(*framing.connection, "close") &&
                                        (!http10 || has_token(*framing.connection, "keep-alive"))
                                  : !http10;
  result.request.http10 = http10;
  result.request.head = view.method == "HEAD";
  result.request.total_bytes = head_size + body_size;
  result.status = ParseStatus::complete;
  return result;
}

}  // namespace ficbroker
