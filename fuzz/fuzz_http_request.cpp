// fuzz_http_request: the front door's HTTP/1.1 request parser (parse_request), then the router on
// what it accepts. The input is the raw bytes a client sent.
//
// Invariants:
// * a complete request lies inside the input (views included), its body is exactly the bytes
//   after the head, and parsing only the request's own bytes gives the same request: bytes after
//   it (the next pipelined request) never change it, and any shorter prefix is "incomplete";
// * an independent scan of the head agrees: no Transfer-Encoding, at most one of each security
//   header (Host, Metadata, X-IDENTITY-HEADER, secret, Content-Length, Content-Type, Connection),
//   no bare CR/LF, no obsolete folding, X-Forwarded-For/Forwarded always reported;
// * "incomplete" never happens once the server's buffer (max header + max body) would be full,
//   or the server would spin reading into an empty buffer;
// * an error has a reason and maps to 400/413/431/501/505; the error answer is well-formed JSON;
// * tighter limits never accept what the default limits refuse;
// * what the router makes of an accepted request keeps the security gates (see check_error_reply
//   and the token checks below).
#include "ficbroker/front_door/http_parser.hpp"
#include "ficbroker/front_door/router.hpp"
#include "ficbroker/util/encoding.hpp"

#include "fuzz_common.hpp"

#include <cstddef>
#include <cstdint>
#include <string>

namespace ficbroker::fuzz {
namespace {

constexpr std::string_view kSecret = "fuzz-identity-header-0123456789";

bool inside(std::string_view part, std::string_view whole) {
  if (part.empty()) return true;
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

bool same_view(const RequestView& a, const RequestView& b) {
  auto opt_eq = [](const std::optional<std::string_view>& x,
                   const std::optional<std::string_view>& y) {
    return x.has_value() == y.has_value() && (!x || *x == *y);
  };
  return a.method == b.method && a.target == b.target && opt_eq(a.host, b.host) &&
         opt_eq(a.metadata, b.metadata) && opt_eq(a.identity_header, b.identity_header) &&
         opt_eq(a.secret, b.secret) && a.forwarded == b.forwarded &&
         a.content_type == b.content_type && a.body == b.body;
}

bool same_result(const ParseResult& a, const ParseResult& b) {
  return a.status == b.status && a.request.keep_alive == b.request.keep_alive &&
         a.request.head == b.request.head && a.request.total_bytes == b.request.total_bytes &&
         same_view(a.request.view, b.request.view);
}

std::string_view trim_ows(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// Re-reads the head of an accepted request with a deliberately simple scanner.
void check_head(std::string_view data, const ParseResult& r) {
  const auto end = data.find("\r\n\r\n");
  FUZZ_CHECK("head-end", end != std::string_view::npos, "complete without CRLFCRLF");
  if (end == std::string_view::npos) return;
  std::string_view head = data.substr(0, end + 2);
  const RequestView& v = r.request.view;
  const std::string ctx = "head=" + printable(head);
  FUZZ_CHECK("body-after-head",
             v.body.size() == r.request.total_bytes - (end + 4) &&
                 (v.body.empty() || v.body.data() == data.data() + end + 4),
             ctx);

  const auto request_line_end = head.find("\r\n");
  head.remove_prefix(request_line_end + 2);
  int host = 0, metadata = 0, identity = 0, secret = 0, length = 0, type = 0, connection = 0;
  bool forwarded = false;
  std::optional<std::string_view> host_value;
  while (!head.empty()) {
    const auto eol = head.find("\r\n");
    const std::string_view line = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    FUZZ_CHECK("head-no-bare-cr-lf", line.find_first_of("\r\n") == std::string_view::npos, ctx);
    FUZZ_CHECK("head-no-folding", !line.empty() && line.front() != ' ' && line.front() != '\t',
               ctx);
    const auto colon = line.find(':');
    FUZZ_CHECK("head-colon", colon != std::string_view::npos && colon > 0, ctx);
    if (colon == std::string_view::npos) continue;
    const std::string name = ascii_lower(line.substr(0, colon));
    FUZZ_CHECK("head-no-space-in-name", name.find_first_of(" \t") == std::string::npos, ctx);
    FUZZ_CHECK("head-no-transfer-encoding", name != "transfer-encoding", ctx);
    if (name == "host") {
      ++host;
      host_value = trim_ows(line.substr(colon + 1));
    }
    metadata += name == "metadata";
    identity += name == "x-identity-header";
    secret += name == "secret";
    length += name == "content-length";
    type += name == "content-type";
    connection += name == "connection";
    forwarded = forwarded || name == "x-forwarded-for" || name == "forwarded";
  }
  FUZZ_CHECK("head-security-headers-once",
             host <= 1 && metadata <= 1 && identity <= 1 && secret <= 1 && length <= 1 &&
                 type <= 1 && connection <= 1,
             ctx);
  FUZZ_CHECK("head-forwarded-reported", forwarded == v.forwarded, ctx);
  FUZZ_CHECK("head-host",
             v.host.has_value() == host_value.has_value() && (!v.host || *v.host == *host_value),
             ctx);
  if (v.host) FUZZ_CHECK("head-host-no-nul", v.host->find('\0') == std::string_view::npos, ctx);
}

void check_routed(const RequestView& v) {
  RouterSettings settings;
  settings.identity_header = std::string(kSecret);
  settings.allowed_hosts = {"ficbroker.svc.cluster.local"};
  const RouteDecision d = route_request(v, settings);
  if (d.reply) {
    check_error_reply(*d.reply, d.route, "route_request");
    return;
  }
  const std::string ctx = "target=" + printable(v.target);
  switch (d.route) {
    case Route::imds_token:
    case Route::broker_token:
    case Route::msi_form_post:
      FUZZ_CHECK("routed-gates",
                 v.host && !v.forwarded && v.metadata && iequals(*v.metadata, "true"), ctx);
      break;
    case Route::app_service_2019:
      FUZZ_CHECK("routed-gates", v.host && !v.forwarded && v.identity_header == kSecret, ctx);
      break;
    case Route::app_service_2017:
      FUZZ_CHECK("routed-gates", v.host && !v.forwarded && v.secret == kSecret, ctx);
      break;
    default:
      FUZZ_CHECK("routed-gates", v.host.has_value(), ctx);
      break;
  }
}

void check(std::string_view data, const ParseLimits& limits, const ParseResult& r) {
  const std::string ctx = "input=" + printable(data);
  switch (r.status) {
    case ParseStatus::complete: {
      const RequestView& v = r.request.view;
      const std::size_t total = r.request.total_bytes;
      FUZZ_CHECK("complete-size", total > 0 && total <= data.size(), ctx);
      if (total == 0 || total > data.size()) return;
      const std::string_view own = data.substr(0, total);
      FUZZ_CHECK("complete-views-inside",
                 inside(v.method, own) && inside(v.target, own) &&
                     (!v.host || inside(*v.host, own)) &&
                     (!v.metadata || inside(*v.metadata, own)) &&
                     (!v.identity_header || inside(*v.identity_header, own)) &&
                     (!v.secret || inside(*v.secret, own)) && inside(v.content_type, own) &&
                     inside(v.body, own),
                 ctx);
      FUZZ_CHECK("complete-method", !v.method.empty(), ctx);
      FUZZ_CHECK("complete-target", !v.target.empty(), ctx);
      for (char c : v.target) {
        const auto u = static_cast<unsigned char>(c);
        FUZZ_CHECK("complete-target-chars", u > 0x20 && u < 0x7F, ctx);
      }
      FUZZ_CHECK("complete-head-flag", r.request.head == (v.method == "HEAD"), ctx);
      FUZZ_CHECK("complete-limits",
                 v.body.size() <= limits.max_body_bytes &&
                     total - v.body.size() <= limits.max_header_bytes,
                 ctx);
      check_head(data, r);
      // The request does not depend on what follows it, and a shorter prefix is incomplete.
      const ParseResult alone = parse_request(own, limits);
      FUZZ_CHECK("complete-prefix-stable", same_result(alone, r), ctx);
      const ParseResult shorter = parse_request(data.substr(0, total - 1), limits);
      FUZZ_CHECK("complete-shorter-incomplete", shorter.status == ParseStatus::incomplete,
                 ctx + " status=" + std::to_string(static_cast<int>(shorter.status)) + " " +
                     std::string(shorter.reason));
      break;
    }
    case ParseStatus::incomplete:
      FUZZ_CHECK("incomplete-fits-buffer",
                 data.size() < limits.max_header_bytes + limits.max_body_bytes, ctx);
      break;
    default: {
      FUZZ_CHECK("error-reason", !r.reason.empty(), ctx);
      const unsigned status = http_status_for(r.status);
      FUZZ_CHECK("error-status",
                 status == 400 || status == 413 || status == 431 || status == 501 || status == 505,
                 ctx);
      check_error_reply(error_reply(status, "invalid_request", r.reason, Route::none), Route::none,
                        "parse error");
      break;
    }
  }
}

}  // namespace
}  // namespace ficbroker::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ficbroker;
  using namespace ficbroker::fuzz;
  // libFuzzer's buffer holds exactly `size` bytes, so ASan sees any read past the end.
  const std::string_view in(reinterpret_cast<const char*>(data), size);

  const ParseLimits normal{};
  const ParseResult r = parse_request(in, normal);
  check(in, normal, r);
  if (r.status == ParseStatus::complete) check_routed(r.request.view);

  ParseLimits tight;
  tight.max_header_bytes = 160;
  tight.max_body_bytes = 32;
  tight.max_headers = 4;
  const ParseResult t = parse_request(in, tight);
  check(in, tight, t);
  if (t.status == ParseStatus::complete) {
    FUZZ_CHECK("tight-implies-normal",
               r.status == ParseStatus::complete && r.request.total_bytes == t.request.total_bytes,
               "input=" + printable(in));
  }
  return 0;
}
