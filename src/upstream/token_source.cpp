#include "ficbroker/upstream/token_source.hpp"

#include "ficbroker/upstream/http_sender.hpp"
#include "ficbroker/upstream/token_response.hpp"
#include "ficbroker/util/encoding.hpp"
#include "ficbroker/util/jwt.hpp"

#include <fstream>

namespace ficbroker {
namespace {

class ManagedIdentitySource final : public TokenSource {
 public:
  ManagedIdentitySource(const SourceConfig& config, HttpSender& upstream, const Clock& clock)
      : config_(config), upstream_(upstream), clock_(clock) {}

  asio::awaitable<TokenResult> fetch(std::string resource) override {
    const std::string_view who = config_.type == SourceType::imds ? "IMDS" : "App Service";
    HttpRequest request = build_managed_identity_request(config_, resource);
    auto response = co_await upstream_.send(std::move(request));
    if (!response) co_return transport_error(response.error(), who);
    co_return parse_managed_identity_response(response->status, response->body,
                                              response->retry_after, clock_, who);
  }
  bool cacheable() const noexcept override { return true; }

 private:
  SourceConfig config_;
  HttpSender& upstream_;
  const Clock& clock_;
};

class FileSource final : public TokenSource {
 public:
  FileSource(const SourceConfig& config, const Clock& clock) : config_(config), clock_(clock) {}

  asio::awaitable<TokenResult> fetch(std::string) override {
    // A projected token is a few KiB on a tmpfs: reading it inline costs microseconds.
    co_return read_token();
  }
  bool cacheable() const noexcept override { return false; }

 private:
  TokenResult read_token() const {
    UpstreamError e = UpstreamError::transient({}, 5);  // each failure below describes itself
    std::ifstream in(config_.path, std::ios::binary);
    if (!in) {
      e.description =
          "token file '" + config_.path + "' of source '" + config_.name + "' cannot be read";
      return e;
    }
    std::string text(64 * 1024 + 1, '\0');
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<std::size_t>(in.gcount()));
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    const auto claims = decode_jwt_claims(text);
    if (text.size() > 64 * 1024 || !claims) {
      e.description = "token file '" + config_.path + "' does not hold a JWT";
      return e;
    }
    const auto exp = numeric_claim(*claims, "exp");
    const auto now_epoch = clock_.epoch_seconds();
    if (!exp || *exp <= now_epoch) {
      e.description = "the token in '" + config_.path + "' has expired (or has no exp claim)";
      return e;
    }
    Token t;
    t.access_token = std::move(text);
    t.issued_at = clock_.now();
    t.expires_on = *exp;
    t.ext_expires_on = *exp;
    t.not_before = numeric_claim(*claims, "nbf").value_or(now_epoch);
    t.expires_at = t.issued_at + std::chrono::seconds(*exp - now_epoch);
    return t;
  }

  SourceConfig config_;
  const Clock& clock_;
};

}  // namespace

HttpRequest build_managed_identity_request(const SourceConfig& config, std::string_view resource) {
  HttpRequest req;
  req.url = config.endpoint;
  std::string target;
  if (config.type == SourceType::imds) {
    target = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" +
             percent_encode(resource);
    // Exactly one selector: IMDS documents them as mutually exclusive.
    if (!config.client_id.empty()) {
      target += "&client_id=" + percent_encode(config.client_id);
    } else if (!config.object_id.empty()) {
      target += "&object_id=" + percent_encode(config.object_id);
    } else if (!config.resource_id.empty()) {
      target += "&msi_res_id=" + percent_encode(config.resource_id);
    }
    req.headers.emplace_back("Metadata", "true");
  } else {
    target = config.endpoint.path + "?api-version=2019-08-01&resource=" + percent_encode(resource);
    if (!config.client_id.empty()) {
      target += "&client_id=" + percent_encode(config.client_id);
    } else if (!config.object_id.empty()) {
      target += "&principal_id=" + percent_encode(config.object_id);
    } else if (!config.resource_id.empty()) {
      target += "&mi_res_id=" + percent_encode(config.resource_id);
    }
    req.headers.emplace_back("X-IDENTITY-HEADER", config.header);
  }
  req.target = std::move(target);
  return req;
}

std::unique_ptr<TokenSource> make_token_source(const SourceConfig& config, HttpSender& upstream,
                                               const Clock& clock) {
  switch (config.type) {
    case SourceType::imds:
    case SourceType::app_service:
      return std::make_unique<ManagedIdentitySource>(config, upstream, clock);
    case SourceType::workload_identity:
    case SourceType::file:
      return std::make_unique<FileSource>(config, clock);
  }
  return nullptr;
}

}  // namespace ficbroker
