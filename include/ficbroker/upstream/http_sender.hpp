// The one seam between ficbroker and its upstreams (IMDS, App Service, Entra): a request out, a
// response or a transport failure back. HttpClient is the real one; unit tests script answers.
#pragma once

#include "ficbroker/util/asio.hpp"
#include "ficbroker/util/url.hpp"

#include <string>
#include <utility>
#include <vector>

namespace ficbroker {

struct HttpRequest {
  std::string method = "GET";
  Url url;             // scheme, host, port; url.path is ignored when target is set
  std::string target;  // path and query, e.g. /metadata/identity/oauth2/token?api-version=...
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

struct HttpResponse {
  unsigned status = 0;
  std::string body;
  std::string retry_after;  // the Retry-After header, if any
  std::string content_type;
};

class HttpSender {
 public:
  virtual ~HttpSender() = default;

  /// Sends one request and reads the whole response. Any status is a success at this level;
  /// errors are transport failures: timeouts (errc::upstream_timeout), resets, TLS failures,
  /// oversized responses (errc::too_large).
  virtual asio::awaitable<result<HttpResponse>> send(HttpRequest request) = 0;
};

}  // namespace ficbroker
