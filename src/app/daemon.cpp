#include "ficbroker/app/daemon.hpp"

#include "ficbroker/config/config.hpp"
#include "ficbroker/core/broker.hpp"
#include "ficbroker/core/metrics.hpp"
#include "ficbroker/front_door/front_door.hpp"
#include "ficbroker/front_door/http_server.hpp"
#include "ficbroker/front_door/router.hpp"
#include "ficbroker/upstream/http_client.hpp"
#include "ficbroker/util/encoding.hpp"
#include "ficbroker/util/log.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <unistd.h>

namespace ficbroker {
namespace {

ProxySettings proxy_settings(Logger& log) {
  std::string error;
  ProxySettings proxy = proxy_from_env(process_env(), &error);
  if (!error.empty()) log.warn("proxy_ignored", {{"reason", error}});
  if (proxy.https_proxy) {
    log.info("proxy", {{"https_proxy", proxy.https_proxy->host_header()},
                       {"no_proxy_entries", static_cast<std::int64_t>(proxy.no_proxy.size())}});
  }
  return proxy;
}

/// Everything one running broker is made of. Declared after the io_context in every caller so
/// that it is destroyed first (pending coroutines reference it).
struct App {
  App(asio::io_context& ioc, std::shared_ptr<const Config> cfg)
      : log(parse_log_level(cfg->log_level)),
        tls(make_client_tls_context(cfg->ca_file)),
        client(ioc.get_executor(), *tls, ClientLimits{}, proxy_settings(log)),
        broker(ioc.get_executor(), cfg, client, clock, log, metrics) {
    apply_settings(*cfg);
  }

  void apply_settings(const Config& cfg) {
    settings.identity_header = cfg.identity_header;
    settings.transparent = cfg.transparent;
    settings.allowed_hosts = cfg.allowed_hosts;
    log.set_level(parse_log_level(cfg.log_level));
  }

  SystemClock clock;
  Logger log;
  Metrics metrics;
  std::unique_ptr<asio::ssl::context> tls;
  HttpClient client;
  Broker broker;
  RouterSettings settings;
  FrontDoor front_door{settings, broker, metrics, log};
};

// Lets in-flight requests finish (at most 10 s), then stops the loop.
asio::awaitable<void> drain(HttpServer& server, asio::io_context& ioc) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (server.open_connections() > 0 && std::chrono::steady_clock::now() < deadline) {
    timer.expires_after(std::chrono::milliseconds(20));
    co_await timer.async_wait(use_nothrow);
  }
  ioc.stop();
}

void write_ready_file(const std::string& path, const std::string& listen) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << "{\"listen\":\"" << listen << "\",\"pid\":" << ::getpid() << "}\n";
  }
  std::rename(tmp.c_str(), path.c_str());
}

std::shared_ptr<const Config> load_or_report(const std::string& path) {
  ConfigLoad load = load_config_file(path);
  for (const auto& w : load.warnings) std::fprintf(stderr, "ficbroker: warning: %s\n", w.c_str());
  if (!load.config) {
    std::fprintf(stderr, "ficbroker: invalid configuration in %s:\n", path.c_str());
    for (const auto& e : load.errors) std::fprintf(stderr, "  %s\n", e.c_str());
    return nullptr;
  }
  return std::make_shared<const Config>(std::move(*load.config));
}

}  // namespace

int check_config(const std::string& config_path) {
  auto config = load_or_report(config_path);
  if (!config) return 1;
  std::printf("%s: valid (%zu sources, %zu targets)\n", config_path.c_str(), config->sources.size(),
              config->targets.size());
  return 0;
}

int run_daemon(const DaemonOptions& options) {
  auto config = load_or_report(options.config_path);
  if (!config) return 2;
  if (!options.listen_override.empty()) {
    // Reuse the config parser's validation of the listen address.
    std::string overridden = "{\"listen\":\"" + options.listen_override +
                             "\",\"sources\":{\"x\":{\"type\":\"file\",\"path\":\"/\"}},"
                             "\"targets\":[{\"tenant_id\":\"t\",\"client_id\":"
                             "\"00000000-0000-0000-0000-000000000000\"}]}";
    if (config->allow_remote) overridden.insert(1, "\"allow_remote\":true,");
    ConfigLoad probe = parse_config(overridden);
    if (!probe.config) {
      for (const auto& e : probe.errors)
        std::fprintf(stderr, "ficbroker: --listen %s\n", e.c_str());
      return 2;
    }
    auto copy = std::make_shared<Config>(*config);
    copy->listen_host = probe.config->listen_host;
    copy->listen_port = probe.config->listen_port;
    config = copy;
  }

  asio::io_context ioc(1);
  App app(ioc, config);
  HttpServer server(
      ioc.get_executor(), [&app](RequestView view) { return app.front_door.serve(view); },
      ServerLimits{}, app.log, app.metrics);
  const auto port = server.listen_tcp(config->listen_host, config->listen_port);
  if (!config->unix_socket.path.empty()) {
    server.listen_unix(config->unix_socket.path, config->unix_socket.allowed_uids);
  }
  const std::string listen =
      (config->listen_host.find(':') != std::string::npos ? "[" + config->listen_host + "]"
                                                          : config->listen_host) +
      ":" + std::to_string(port);

  auto on_task_exit = [&app](const char* what) {
    return [&app, what](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        app.log.error("task_failed", {{"task", what}, {"what", ex.what()}});
      }
    };
  };
  asio::co_spawn(ioc, app.broker.cache().run_refresher(), on_task_exit("refresher"));
  asio::co_spawn(ioc, app.broker.run_prewarm(), on_task_exit("prewarm"));

  asio::signal_set signals(ioc, SIGINT, SIGTERM, SIGHUP);
  std::function<void(const error_code&, int)> on_signal = [&](const error_code& ec, int signo) {
    if (ec) return;
    if (signo == SIGHUP) {
      if (auto fresh = load_or_report(options.config_path)) {
        auto copy = std::make_shared<Config>(*fresh);
        copy->listen_host = config->listen_host;  // a new listen address needs a restart
        copy->listen_port = config->listen_port;
        app.broker.reload(copy);
        app.apply_settings(*copy);
        app.log.info("config_reloaded",
                     {{"targets", static_cast<std::int64_t>(copy->targets.size())}});
      } else {
        app.log.error("config_reload_refused", {{"path", options.config_path}});
      }
      signals.async_wait(on_signal);
      return;
    }
    app.log.info("shutting_down", {{"signal", signo}});
    server.stop();
    app.broker.stop();
    asio::co_spawn(ioc, drain(server, ioc), on_task_exit("drain"));
  };
  signals.async_wait(on_signal);

  app.log.info("listening", {{"listen", listen},
                             {"targets", static_cast<std::int64_t>(config->targets.size())},
                             {"sources", static_cast<std::int64_t>(config->sources.size())}});
  if (!options.ready_file.empty()) write_ready_file(options.ready_file, listen);
  ioc.run();
  app.log.info("stopped");
  return 0;
}

int run_token_command(const std::string& config_path, const std::string& resource,
                      const std::string& tenant, const std::string& client_id) {
  auto config = load_or_report(config_path);
  if (!config) return 2;
  asio::io_context ioc(1);
  App app(ioc, config);
  app.log.set_level(LogLevel::error);
  TokenQuery query;
  query.resource = resource;
  query.scope = resource_to_scope(resource);
  query.tenant = ascii_lower(tenant);
  if (!client_id.empty()) {
    query.selector = SelectorKind::client_id;
    query.selector_value = client_id;
    query.selector_name = "client_id";
  }
  int status = 0;
  // answer() consumes its query; the reply echoes a client_id selector from this copy.
  const TokenQuery asked = query;
  asio::co_spawn(
      ioc, app.broker.answer(std::move(query)), [&](std::exception_ptr e, BrokerAnswer answer) {
        if (e) {
          status = 1;
          return;
        }
        const Reply reply = answer_reply(answer, asked, Route::none, app.clock.epoch_seconds());
        std::fwrite(reply.body.data(), 1, reply.body.size(), reply.status == 200 ? stdout : stderr);
        std::fputc('\n', reply.status == 200 ? stdout : stderr);
        status = reply.status == 200 ? 0 : 1;
        app.broker.stop();
        ioc.stop();
      });
  ioc.run();
  return status;
}

}  // namespace ficbroker
