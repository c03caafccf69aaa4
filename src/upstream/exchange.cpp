#include "ficbroker/upstream/exchange.hpp"

#include "ficbroker/upstream/token_response.hpp"
#include "ficbroker/util/encoding.hpp"

namespace ficbroker {

HttpRequest build_exchange_request(const TargetConfig& target, std::string_view scope,
                                   std::string_view assertion) {
  HttpRequest req;
  req.method = "POST";
  req.url = target.authority_host;
  req.target = "/" + percent_encode(target.tenant_id) + "/oauth2/v2.0/token";
  req.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
  req.headers.emplace_back("Accept", "application/json");
  std::string body;
  body.reserve(assertion.size() + scope.size() + 256);
  body += "grant_type=client_credentials&client_id=";
  body += percent_encode(target.client_id);
  body += "&scope=";
  body += percent_encode(scope);
  body += "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer";
  body += "&client_assertion=";
  body += percent_encode(assertion);
  req.body = std::move(body);
  return req;
}

asio::awaitable<TokenResult> exchange_assertion(HttpSender& upstream, const TargetConfig& target,
                                                std::string scope, std::string assertion,
                                                const Clock& clock) {
  HttpRequest request = build_exchange_request(target, scope, assertion);
  auto response = co_await upstream.send(std::move(request));
  if (!response) co_return transport_error(response.error(), "Entra");
  if (response->status >= 300 && response->status < 400) {
    co_return UpstreamError::transient("Entra answered with a redirect (HTTP " +
                                           std::to_string(response->status) +
                                           "); redirects are never followed",
                                       5);
  }
  co_return parse_entra_response(response->status, response->body, response->retry_after, clock);
}

}  // namespace ficbroker
