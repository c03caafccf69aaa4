#include "ficbroker/upstream/token_source.hpp"

#include "ficbroker/upstream/http_sender.hpp"
#include "ficbroker/upstream/token_response.hpp"
#include "ficbroker/util/encoding.hpp"
#include "ficbroker/util/jwt.hpp"

#include <boost/system/result.hpp>

#include <cctype>
#include <cerrno>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ficbroker {
namespace {

// What tells the two managed-identity endpoints apart, beside the request (built below).
struct ManagedIdentityFlavour {
  std::string_view label;  // metrics and logs
  std::string_view who;    // error texts
  bool under_imds_budget;  // IMDS limits requests per VM; App Service has no such budget
};

constexpr ManagedIdentityFlavour kImds{"imds", "IMDS", true};
constexpr ManagedIdentityFlavour kAppService{"app_service", "App Service", false};

class ManagedIdentitySource final : public TokenSource {
 public:
  ManagedIdentitySource(const SourceConfig& config, HttpSender& upstream, const Clock& clock,
                        ManagedIdentityFlavour flavour)
      : config_(config), upstream_(upstream), clock_(clock), flavour_(flavour) {}

  asio::awaitable<TokenResult> fetch(std::string resource) override {
    HttpRequest request = build_managed_identity_request(config_, resource);
    auto response = co_await upstream_.send(std::move(request));
    if (!response) co_return transport_error(response.error(), flavour_.who);
    TokenResult result = parse_managed_identity_response(
        response->status, response->body, response->retry_after, clock_, flavour_.who);
    if (result) learned_ = identity_ids_of_token(result->access_token);
    co_return result;
  }
  bool cacheable() const noexcept override { return true; }
  std::string_view label() const noexcept override { return flavour_.label; }
  bool mints_managed_identity_tokens() const noexcept override { return true; }
  bool under_imds_budget() const noexcept override { return flavour_.under_imds_budget; }

  IdentityIds identity_ids() const override { return complete_identity_ids(config_, learned_); }

 private:
  SourceConfig config_;
  HttpSender& upstream_;
  const Clock& clock_;
  ManagedIdentityFlavour flavour_;
  IdentityIds learned_;
};

constexpr std::size_t kTokenFileLimit = 64 * 1024;

// A file descriptor closed when it goes out of scope.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) noexcept : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const noexcept { return fd_; }

 private:
  int fd_;
};

enum class FileReadError { cannot_open, not_regular, too_large, read_failed };

// Reads a token file without ever blocking: O_NONBLOCK makes opening a FIFO return at once, and
// anything that is not a regular file after open (FIFO, directory, device) is refused before a
// read. Symlinks are followed: Kubernetes projects tokens through them.
boost::system::result<std::string, FileReadError> read_regular_file(const std::string& path) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
  if (fd.get() < 0) return FileReadError::cannot_open;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return FileReadError::read_failed;
  if (!S_ISREG(st.st_mode)) return FileReadError::not_regular;
  if (st.st_size > static_cast<off_t>(kTokenFileLimit)) return FileReadError::too_large;
  // One byte more than the limit tells a file that grew since fstat from one that fits.
  std::string data(kTokenFileLimit + 1, '\0');
  std::size_t size = 0;
  while (size < data.size()) {
    const ssize_t n = ::read(fd.get(), data.data() + size, data.size() - size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return FileReadError::read_failed;
    if (n == 0) break;
    size += static_cast<std::size_t>(n);
  }
  if (size > kTokenFileLimit) return FileReadError::too_large;
  data.resize(size);
  return data;
}

std::string describe(FileReadError e) {
  switch (e) {
    case FileReadError::cannot_open:
    case FileReadError::read_failed:
      break;
    case FileReadError::not_regular:
      return "is not a regular file";
    case FileReadError::too_large:
      return "is larger than 64 KiB";
  }
  return "cannot be read";
}

class FileSource final : public TokenSource {
 public:
  FileSource(const SourceConfig& config, const Clock& clock) : config_(config), clock_(clock) {}

  asio::awaitable<TokenResult> fetch(std::string) override {
    // A projected token is a few KiB on a tmpfs, read without blocking: inline costs microseconds.
    co_return read_token();
  }
  bool cacheable() const noexcept override { return false; }
  std::string_view label() const noexcept override { return "file"; }
  bool mints_managed_identity_tokens() const noexcept override { return false; }
  bool under_imds_budget() const noexcept override { return false; }
  IdentityIds identity_ids() const override { return {}; }

 private:
  TokenResult read_token() const {
    UpstreamError e = UpstreamError::transient({}, 5);  // each failure below describes itself
    auto file = read_regular_file(config_.path);
    if (!file) {
      e.description = "token file '" + config_.path + "' of source '" + config_.name + "' " +
                      describe(file.error());
      return e;
    }
    std::string text = std::move(*file);
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    const auto claims = decode_jwt_claims(text);
    if (!claims) {
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

IdentityIds identity_ids_of_token(std::string_view token) {
  IdentityIds ids;
  const auto claims = decode_jwt_claims(token);
  if (!claims) return ids;
  const auto string_claim = [&](std::string_view name) {
    const auto* v = claims->if_contains(name);
    return v && v->is_string() ? std::string(v->get_string()) : std::string{};
  };
  // v1 tokens name the client appid; v2 tokens (the exchange audience's) may name it azp only.
  ids.client_id = string_claim("appid");
  if (ids.client_id.empty()) ids.client_id = string_claim("azp");
  ids.object_id = string_claim("oid");
  return ids;
}

IdentityIds complete_identity_ids(const SourceConfig& config, const IdentityIds& learned) {
  IdentityIds ids{config.client_id, config.object_id, config.resource_id};
  // What is configured wins: a learned id only fills a gap.
  if (ids.client_id.empty()) ids.client_id = learned.client_id;
  if (ids.object_id.empty()) ids.object_id = learned.object_id;
  if (ids.resource_id.empty()) ids.resource_id = learned.resource_id;
  return ids;
}

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
      return std::make_unique<ManagedIdentitySource>(config, upstream, clock, kImds);
    case SourceType::app_service:
      return std::make_unique<ManagedIdentitySource>(config, upstream, clock, kAppService);
    case SourceType::workload_identity:
    case SourceType::file:
      return std::make_unique<FileSource>(config, clock);
  }
  return nullptr;
}

}  // namespace ficbroker
