// What the transport hands the front door and gets back: a view of one parsed request and the
// HTTP answer to it. Nothing here knows routes or configuration, so the parser and the server
// depend on this header only.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace ficbroker {

/// The parts of an HTTP request routing looks at. Views into the request; absent headers are
/// nullopt.
struct RequestView {
  std::string_view method;
  std::string_view target;
  std::optional<std::string_view> host;
  std::optional<std::string_view> metadata;
  std::optional<std::string_view> identity_header;  // X-IDENTITY-HEADER
  std::optional<std::string_view> secret;           // secret (App Service 2017)
  bool forwarded = false;                           // X-Forwarded-For present
  std::string_view content_type;
  std::string_view body;
};

/// An HTTP answer.
struct Reply {
  unsigned status = 200;
  std::string body;
  int retry_after_seconds = 0;  // 0: no Retry-After header
  const char* content_type = "application/json; charset=utf-8";
};

}  // namespace ficbroker
