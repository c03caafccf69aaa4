// A real Broker over a scripted upstream (answers queued per host and path) and a ManualClock:
// the exchange path, the retry rules as the broker carries them out, stopping, error texts and
// single flight. No sockets; a retry's wait moves the clock instead of sleeping.
//
// Inside coroutines, co_await operands never hold non-trivial temporaries (GCC 12 may destroy
// them twice): queries and replies are named.
#include "ficbroker/core/broker.hpp"

#include "ficbroker/front_door/front_door.hpp"
#include "ficbroker/util/encoding.hpp"
#include "ficbroker/util/error.hpp"

#include "run_coro.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json.hpp>

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace ficbroker {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::run_coro;
using testing::yield_until;

constexpr const char* kTenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
constexpr const char* kApp = "11111111-2222-3333-4444-555555555555";
constexpr const char* kUami = "dddddddd-0000-0000-0000-000000000004";
constexpr const char* kImds = "169.254.169.254/metadata/identity/oauth2/token";
const std::string kEntra =
    std::string("login.microsoftonline.com/") + kTenant + "/oauth2/v2.0/token";

std::string make_jwt(std::string_view payload_json) {
  return base64url_encode(R"({"alg":"RS256","typ":"JWT"})") + "." + base64url_encode(payload_json) +
         "." + base64url_encode("sig");
}

// Answers each request with the next answer queued for its host and path, after one suspension
// (as real I/O would). Keeps every request it was sent.
class ScriptedUpstream final : public HttpSender {
 public:
  using Answer = std::variant<HttpResponse, error_code>;

  explicit ScriptedUpstream(const Clock& clock) : clock_(clock) {}

  void answer(const std::string& where, Answer a) { queues_[where].push_back(std::move(a)); }
  void answer(const std::string& where, unsigned status, std::string body,
              std::string retry_after = "") {
    HttpResponse r;
    r.status = status;
    r.body = std::move(body);
    r.retry_after = std::move(retry_after);
    r.content_type = "application/json";
    answer(where, Answer(std::move(r)));
  }
  // A JWT named `name` (its sub claim), valid for an hour from now.
  std::string jwt(std::string_view name) const {
    return make_jwt(R"({"sub":")" + std::string(name) + R"(","exp":)" +
                    std::to_string(clock_.epoch_seconds() + 3600) + "}");
  }
  void imds_token(const std::string& name) {
    answer(
        kImds, 200,
        R"({"access_token":")" + jwt(name) +
            R"(","expires_in":"3600","resource":"api://AzureADTokenExchange","token_type":"Bearer"})");
  }
  void entra_token(const std::string& name) {
    answer(kEntra, 200,
           R"({"token_type":"Bearer","expires_in":3600,"ext_expires_in":3600,"access_token":")" +
               jwt(name) + R"("})");
  }
  void entra_error(unsigned status, int aadsts, const std::string& error,
                   const std::string& retry_after = "") {
    answer(kEntra, status,
           R"({"error":")" + error + R"(","error_description":"AADSTS)" + std::to_string(aadsts) +
               R"(: scripted.\r\nTrace ID: 0","error_codes":[)" + std::to_string(aadsts) + "]}",
           retry_after);
  }

  asio::awaitable<result<HttpResponse>> send(HttpRequest request) override {
    const std::string where = request.url.host + request.target.substr(0, request.target.find('?'));
    sent_.push_back(request);
    co_await testing::yield_once();
    auto& queue = queues_[where];
    if (queue.empty()) {
      ADD_FAILURE() << "no answer scripted for " << where;
      co_return error_code(errc::upstream_timeout);
    }
    Answer a = std::move(queue.front());
    queue.pop_front();
    if (auto* ec = std::get_if<error_code>(&a)) co_return *ec;
    co_return std::get<HttpResponse>(std::move(a));
  }

  int calls(const std::string& where) const {
    int n = 0;
    for (const auto& r : sent_) {
      n += r.url.host + r.target.substr(0, r.target.find('?')) == where ? 1 : 0;
    }
    return n;
  }
  const std::vector<HttpRequest>& sent() const { return sent_; }

 private:
  const Clock& clock_;
  std::map<std::string, std::deque<Answer>> queues_;
  std::vector<HttpRequest> sent_;
};

// A retry's wait moves the clock by the delay and returns at once; with hold(), waits pend until
// wake_all() (as the real one would for the whole delay). Records every delay asked for.
class ScriptedSleeper final : public Sleeper {
 public:
  ScriptedSleeper(asio::any_io_executor executor, ManualClock& clock)
      : executor_(std::move(executor)), clock_(clock) {}

  asio::awaitable<bool> sleep_for(milliseconds delay) override {
    delays_.push_back(delay);
    if (!hold_) {
      clock_.advance(delay);
      co_await testing::yield_once();
      co_return true;
    }
    asio::steady_timer held(executor_, SteadyTime::max());
    held_.push_back(&held);
    co_await held.async_wait(use_nothrow);
    std::erase(held_, &held);
    co_return false;
  }
  void wake_all() override {
    for (auto* t : held_) t->cancel();
  }

  void hold() { hold_ = true; }
  std::size_t holding() const { return held_.size(); }
  const std::vector<milliseconds>& delays() const { return delays_; }

 private:
  asio::any_io_executor executor_;
  ManualClock& clock_;
  bool hold_ = false;
  std::vector<asio::steady_timer*> held_;
  std::vector<milliseconds> delays_;
};

std::shared_ptr<const Config> one_target_config() {
  auto config = std::make_shared<Config>();
  SourceConfig mi;
  mi.name = "mi";
  mi.type = SourceType::imds;
  mi.endpoint = *parse_url("http://169.254.169.254");
  mi.client_id = kUami;
  config->sources.emplace(mi.name, mi);
  TargetConfig t;
  t.tenant_id = kTenant;
  t.client_id = kApp;
  t.source = "mi";
  t.is_default = true;
  t.authority_host = *parse_url("https://login.microsoftonline.com");
  t.exchange_audience = "api://AzureADTokenExchange";
  config->targets.push_back(t);
  return config;
}

// What a caller got: the status, and the body's fields.
struct Answered {
  unsigned status = 0;
  int retry_after = 0;
  std::string access_token;
  std::string error;
  std::string description;
};

Answered answered_from(const Reply& reply) {
  Answered a;
  a.status = reply.status;
  a.retry_after = reply.retry_after_seconds;
  boost::system::error_code ec;
  const auto body = boost::json::parse(reply.body, ec);
  if (ec || !body.is_object()) return a;
  const auto field = [&](const char* key) {
    const auto* v = body.as_object().if_contains(key);
    return v && v->is_string() ? std::string(v->get_string()) : std::string{};
  };
  a.access_token = field("access_token");
  a.error = field("error");
  a.description = field("error_description");
  return a;
}

std::string sub_of(const std::string& jwt) {
  const auto dot = jwt.find('.');
  const auto decoded = base64url_decode(jwt.substr(dot + 1, jwt.find('.', dot + 1) - dot - 1));
  if (!decoded) return "(not a JWT)";
  boost::system::error_code ec;
  const auto claims = boost::json::parse(*decoded, ec);
  if (ec || !claims.is_object() || !claims.as_object().contains("sub")) return "(no sub)";
  return std::string(claims.as_object().at("sub").as_string());
}

// The form field `name` of an Entra exchange request.
std::string form_field(const HttpRequest& request, std::string_view name) {
  const auto fields = parse_query(request.body);
  if (!fields) return {};
  for (const auto& [k, v] : *fields) {
    if (k == name) return v;
  }
  return {};
}

class BrokerFetchTest : public ::testing::Test {
 protected:
  BrokerFetchTest() {
    auto sleeper = std::make_unique<ScriptedSleeper>(ioc_.get_executor(), clock_);
    sleeper_ = sleeper.get();
    broker_ = std::make_unique<Broker>(ioc_.get_executor(), one_target_config(), upstream_, clock_,
                                       log_, metrics_, std::move(sleeper));
  }

  // The one place that calls the Broker's answering API.
  asio::awaitable<Answered> ask(Route route, TokenQuery query) {
    const TokenQuery asked = query;
    BrokerAnswer answer = co_await broker_->answer(std::move(query));
    co_return answered_from(answer_reply(answer, asked, route, clock_.epoch_seconds()));
  }
  // A token for the default target, as GET /token?resource=https://vault.azure.net asks.
  asio::awaitable<Answered> ask_exchanged() {
    TokenQuery query;
    query.resource = "https://vault.azure.net";
    query.scope = resource_to_scope(query.resource);
    Answered a = co_await ask(Route::broker_token, std::move(query));
    co_return a;
  }
  // A plain managed-identity token of the source's own identity (IMDS route, client_id=).
  asio::awaitable<Answered> ask_plain() {
    TokenQuery query;
    query.resource = "https://vault.azure.net";
    query.scope = resource_to_scope(query.resource);
    query.selector = SelectorKind::client_id;
    query.selector_value = kUami;
    query.selector_name = "client_id";
    Answered a = co_await ask(Route::imds_token, std::move(query));
    co_return a;
  }
  Answered exchanged() { return run_coro(ioc_, ask_exchanged()); }
  // Starts ask_exchanged() as a task of its own, now; its answer lands in `out`.
  void start_exchanged(std::optional<Answered>& out) {
    asio::co_spawn(ioc_, ask_exchanged(), [&out](std::exception_ptr e, Answered a) {
      EXPECT_FALSE(e) << "the caller's task threw";
      out = std::move(a);
    });
  }
  Answered plain() { return run_coro(ioc_, ask_plain()); }

  asio::io_context ioc_;
  ManualClock clock_;
  ScriptedUpstream upstream_{clock_};
  Logger log_{LogLevel::error};
  Metrics metrics_;
  ScriptedSleeper* sleeper_ = nullptr;
  std::unique_ptr<Broker> broker_;
};

const std::string kSourcePrefix = "source 'mi' could not get a token: ";
const std::string kExchangePrefix =
    std::string("token exchange in tenant '") + kTenant + "' for app '" + kApp + "' failed: ";

TEST_F(BrokerFetchTest, ExchangesTheSourcesAssertionForTheTargetsToken) {
  upstream_.imds_token("assertion-1");
  upstream_.entra_token("vault-1");
  const Answered a = exchanged();
  ASSERT_EQ(a.status, 200u) << a.error << ": " << a.description;
  EXPECT_EQ(sub_of(a.access_token), "vault-1");
  ASSERT_EQ(upstream_.sent().size(), 2u);
  EXPECT_NE(upstream_.sent()[0].target.find("resource=api%3A%2F%2FAzureADTokenExchange"),
            std::string::npos)
      << upstream_.sent()[0].target;
  const HttpRequest& exchange = upstream_.sent()[1];
  EXPECT_EQ(sub_of(form_field(exchange, "client_assertion")), "assertion-1");
  EXPECT_EQ(form_field(exchange, "client_id"), kApp);
  EXPECT_EQ(form_field(exchange, "scope"), "https://vault.azure.net/.default");
  EXPECT_TRUE(sleeper_->delays().empty());
  // Cached now: a second caller costs no upstream call.
  EXPECT_EQ(sub_of(exchanged().access_token), "vault-1");
  EXPECT_EQ(upstream_.sent().size(), 2u);
}

TEST_F(BrokerFetchTest, RejectedAssertionIsReplacedOnceThenThePermanentErrorReachesTheCaller) {
  upstream_.imds_token("assertion-1");
  upstream_.imds_token("assertion-2");
  upstream_.entra_error(400, 700024, "invalid_client");
  upstream_.entra_error(400, 700024, "invalid_client");
  const Answered a = exchanged();
  EXPECT_EQ(a.status, 400u);
  EXPECT_EQ(a.error, "invalid_client");
  EXPECT_EQ(a.description, kExchangePrefix + "AADSTS700024: scripted.");
  EXPECT_EQ(upstream_.calls(kImds), 2) << "exactly one fresh assertion";
  ASSERT_EQ(upstream_.calls(kEntra), 2);
  EXPECT_EQ(sub_of(form_field(upstream_.sent()[3], "client_assertion")), "assertion-2")
      << "the second exchange must use the fresh assertion, not the cached one";
  EXPECT_TRUE(sleeper_->delays().empty()) << "a fresh assertion is fetched without waiting";
}

TEST_F(BrokerFetchTest, RejectedAssertionThatAFreshOneFixesGivesTheToken) {
  upstream_.imds_token("assertion-1");
  upstream_.imds_token("assertion-2");
  upstream_.entra_error(400, 700024, "invalid_client");
  upstream_.entra_token("vault-1");
  const Answered a = exchanged();
  ASSERT_EQ(a.status, 200u) << a.description;
  EXPECT_EQ(sub_of(a.access_token), "vault-1");
  EXPECT_EQ(upstream_.calls(kImds), 2);
  EXPECT_EQ(upstream_.calls(kEntra), 2);
}

TEST_F(BrokerFetchTest, ImdsGoneIsRetriedEveryTenSecondsUntilTheSeventySecondBudget) {
  for (int i = 0; i < 8; ++i) upstream_.answer(kImds, 410, R"({"error":"unknown"})");
  const SteadyTime start = clock_.now();
  const Answered a = plain();
  EXPECT_EQ(a.status, 503u);
  EXPECT_EQ(a.description, kSourcePrefix + "IMDS answered HTTP 410");
  EXPECT_EQ(upstream_.calls(kImds), 8) << "calls at 0, 10, ... 70 s";
  EXPECT_EQ(sleeper_->delays(), std::vector<milliseconds>(7, seconds(10)));
  EXPECT_EQ(clock_.now() - start, seconds(70));
}

TEST_F(BrokerFetchTest, ImdsGoneTwiceThenATokenIsServed) {
  upstream_.answer(kImds, 410, "");
  upstream_.answer(kImds, 410, "");
  upstream_.imds_token("plain-1");
  const Answered a = plain();
  ASSERT_EQ(a.status, 200u) << a.description;
  EXPECT_EQ(sub_of(a.access_token), "plain-1");
  EXPECT_EQ(upstream_.calls(kImds), 3);
  EXPECT_EQ(upstream_.calls(kEntra), 0) << "a plain managed-identity token needs no exchange";
  EXPECT_EQ(sleeper_->delays(), (std::vector<milliseconds>{seconds(10), seconds(10)}));
}

TEST_F(BrokerFetchTest, TransportErrorsAreRetriedWithBackOff) {
  upstream_.answer(kImds, error_code(errc::upstream_timeout));
  upstream_.answer(kImds, error_code(asio::error::connection_reset));
  upstream_.imds_token("assertion-1");
  upstream_.answer(kEntra, error_code(errc::upstream_timeout));
  upstream_.entra_token("vault-1");
  const Answered a = exchanged();
  ASSERT_EQ(a.status, 200u) << a.description;
  EXPECT_EQ(upstream_.calls(kImds), 3);
  EXPECT_EQ(upstream_.calls(kEntra), 2);
  EXPECT_EQ(sleeper_->delays(), (std::vector<milliseconds>{seconds(1), seconds(2), seconds(1)}));
}

TEST_F(BrokerFetchTest, ShortRetryAfterIsWaitedOutBeforeTheRetry) {
  upstream_.imds_token("assertion-1");
  upstream_.entra_error(429, 0, "too_many_requests", "3");
  upstream_.entra_token("vault-1");
  const Answered a = exchanged();
  ASSERT_EQ(a.status, 200u) << a.description;
  EXPECT_EQ(upstream_.calls(kEntra), 2);
  EXPECT_EQ(sleeper_->delays(), std::vector<milliseconds>{seconds(3)});
}

TEST_F(BrokerFetchTest, RetryAfterOverTheCapGoesBackToTheCaller) {
  upstream_.imds_token("assertion-1");
  upstream_.entra_error(429, 0, "too_many_requests", "30");
  const Answered a = exchanged();
  EXPECT_EQ(a.status, 429u);
  EXPECT_EQ(a.retry_after, 30);
  EXPECT_EQ(upstream_.calls(kEntra), 1);
  EXPECT_TRUE(sleeper_->delays().empty()) << "a 30 s Retry-After is not waited out";
}

TEST_F(BrokerFetchTest, FederatedCredentialPropagationIsWaitedOut) {
  upstream_.imds_token("assertion-1");
  upstream_.entra_error(400, 70021, "invalid_client");
  upstream_.entra_token("vault-1");
  const Answered a = exchanged();
  ASSERT_EQ(a.status, 200u) << a.description;
  EXPECT_EQ(upstream_.calls(kEntra), 2);
  EXPECT_EQ(upstream_.calls(kImds), 1) << "the assertion was fine: it is reused";
  EXPECT_EQ(sleeper_->delays(), std::vector<milliseconds>{seconds(2)});
}

TEST_F(BrokerFetchTest, RedirectsAreNeverTakenForATokenNorPassedOn) {
  // Entra: a 3xx is transient (retried after its 5 s Retry-After), at the same token endpoint.
  upstream_.imds_token("assertion-1");
  upstream_.answer(kEntra, 302, "");
  upstream_.entra_token("vault-1");
  const Answered a = exchanged();
  ASSERT_EQ(a.status, 200u) << a.description;
  EXPECT_EQ(upstream_.calls(kEntra), 2);
  EXPECT_EQ(upstream_.sent().size(), 3u) << "nothing but IMDS and the token endpoint is asked";
  EXPECT_EQ(sleeper_->delays(), std::vector<milliseconds>{seconds(5)});
  // IMDS: a 3xx is a permanent error, never a 3xx to the caller.
  upstream_.answer(kImds, 307, "");
  const Answered mi = plain();
  EXPECT_EQ(mi.status, 400u) << mi.description;
  EXPECT_EQ(upstream_.calls(kImds), 2);
}

TEST_F(BrokerFetchTest, StopDuringARetryWaitEndsTheFetchWithTheLastError) {
  sleeper_->hold();
  upstream_.imds_token("assertion-1");
  upstream_.answer(kEntra, 503, R"({"error":"temporarily_unavailable"})");
  std::optional<Answered> answered;
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    start_exchanged(answered);
    const bool waiting = co_await yield_until([&] { return sleeper_->holding() == 1; });
    EXPECT_TRUE(waiting) << "the fetch never reached its retry wait";
    EXPECT_FALSE(answered.has_value());
    broker_->stop();
    const bool done = co_await yield_until([&] { return answered.has_value(); });
    EXPECT_TRUE(done) << "stop() left the fetch waiting";
  }());
  ASSERT_TRUE(answered.has_value());
  const Answered& a = *answered;
  EXPECT_EQ(a.status, 503u);
  EXPECT_EQ(a.description.rfind(kExchangePrefix, 0), 0u) << a.description;
  EXPECT_EQ(upstream_.calls(kEntra), 1) << "no upstream call after stop()";
  EXPECT_EQ(sleeper_->holding(), 0u);
}

TEST_F(BrokerFetchTest, StoppedBrokerDoesNotRetry) {
  broker_->stop();
  upstream_.answer(kImds, 500, "");
  const Answered a = plain();
  EXPECT_EQ(a.status, 503u);
  EXPECT_EQ(a.description, kSourcePrefix + "IMDS answered HTTP 500");
  EXPECT_EQ(upstream_.calls(kImds), 1);
  EXPECT_TRUE(sleeper_->delays().empty());
}

TEST_F(BrokerFetchTest, SourceFailuresArePrefixedWithTheSourceAndPassedOnUnchangedByTheExchange) {
  upstream_.answer(kImds, 400,
                   R"({"error":"invalid_request","error_description":"Identity not found"})");
  const Answered a = exchanged();
  EXPECT_EQ(a.status, 400u);
  EXPECT_EQ(a.error, "invalid_request");
  EXPECT_EQ(a.description, kSourcePrefix + "IMDS: Identity not found");
  EXPECT_EQ(upstream_.calls(kEntra), 0);
}

TEST_F(BrokerFetchTest, ExchangeFailuresArePrefixedWithTenantAndApp) {
  upstream_.imds_token("assertion-1");
  upstream_.entra_error(400, 700213, "invalid_client");
  const Answered a = exchanged();
  EXPECT_EQ(a.status, 400u);
  EXPECT_EQ(a.description, kExchangePrefix + "AADSTS700213: scripted.");
  EXPECT_EQ(upstream_.calls(kEntra), 1) << "a permanent error is not retried";
}

TEST_F(BrokerFetchTest, ConcurrentCallersShareOneImdsAndOneEntraCall) {
  upstream_.imds_token("assertion-1");
  upstream_.entra_token("vault-1");
  constexpr int kCallers = 8;
  std::vector<std::optional<Answered>> answers(kCallers);
  run_coro(ioc_, [&]() -> asio::awaitable<void> {
    for (auto& out : answers) start_exchanged(out);
    co_await yield_until([&] {
      for (const auto& a : answers) {
        if (!a) return false;
      }
      return true;
    });
  }());
  for (const auto& a : answers) {
    ASSERT_TRUE(a.has_value()) << "a caller got no answer";
    EXPECT_EQ(a->status, 200u) << a->description;
    EXPECT_EQ(sub_of(a->access_token), "vault-1");
  }
  EXPECT_EQ(upstream_.calls(kImds), 1);
  EXPECT_EQ(upstream_.calls(kEntra), 1);
}

}  // namespace
}  // namespace ficbroker
