#include "ficbroker/app/daemon.hpp"

#include "ficbroker/config/config.hpp"
#include "ficbroker/core/broker.hpp"
#include "ficbroker/core/metrics.hpp"
#include "ficbroker/front_door/connection_limit.hpp"
#include "ficbroker/front_door/front_door.hpp"
#include "ficbroker/front_door/http_server.hpp"
#include "ficbroker/front_door/router.hpp"
#include "ficbroker/front_door/socket_activation.hpp"
#include "ficbroker/upstream/http_client.hpp"
#include "ficbroker/util/encoding.hpp"
#include "ficbroker/util/log.hpp"
#include "ficbroker/util/task.hpp"

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
    settings.metrics_listener = !cfg.metrics_host.empty();
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

// Written once listening, atomically: a reader sees the whole file or none.
void write_ready_file(const std::string& path, const std::string& listen,
                      const std::string& metrics_listen) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << "{\"listen\":\"" << listen << "\",";
    if (!metrics_listen.empty()) out << "\"metrics_listen\":\"" << metrics_listen << "\",";
    out << "\"pid\":" << ::getpid() << "}\n";
    out.flush();
    if (!out) throw std::runtime_error("cannot write the ready file '" + tmp + "'");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw std::runtime_error("cannot rename the ready file into '" + path + "'");
  }
}

// The daemon's log stream is JSON only: warnings and errors of the config are log lines too.
std::shared_ptr<const Config> load_or_log(const std::string& path, Logger& log) {
  ConfigLoad load = load_config_file(path);
  for (const auto& w : load.warnings) log.warn("config_warning", {{"path", path}, {"warning", w}});
  if (!load.config) {
    for (const auto& e : load.errors) log.error("config_invalid", {{"path", path}, {"error", e}});
    return nullptr;
  }
  return std::make_shared<const Config>(std::move(*load.config));
}

// `--listen host:port` replaces the config's address, under the same loopback rule.
std::shared_ptr<const Config> with_listen_override(std::shared_ptr<const Config> config,
                                                   const std::string& text, Logger& log) {
  if (text.empty()) return config;
  const auto address = parse_listen_address(text);
  if (!address || (!config->allow_remote && !is_loopback(address->host))) {
    log.error("config_invalid",
              {{"path", "--listen"},
               {"error", "'" + text + "' is not a loopback host:port (IPv6 as [addr]:port)"}});
    return nullptr;
  }
  auto copy = std::make_shared<Config>(*config);
  copy->listen_tcp = true;
  copy->listen_host = address->host;
  copy->listen_port = address->port;
  return copy;
}

ServerLimits server_limits(const Config& config, Logger& log) {
  ServerLimits limits;
  limits.header_timeout = config.server.header_timeout;
  limits.idle_timeout = config.server.idle_timeout;
  limits.write_timeout = config.server.write_timeout;
  const std::uint64_t descriptors = raise_descriptor_limit();
  limits.max_connections = connection_cap(config.server.max_connections, descriptors);
  if (limits.max_connections < config.server.max_connections) {
    log.warn("max_connections_lowered",
             {{"configured", static_cast<std::uint64_t>(config.server.max_connections)},
              {"effective", static_cast<std::uint64_t>(limits.max_connections)},
              {"rlimit_nofile", descriptors}});
  }
  return limits;
}

std::string host_port(const std::string& host, std::uint16_t port) {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
         std::to_string(port);
}

// Binds every configured listener, or serves the sockets systemd passed instead; returns what the
// ready file and the log call the address.
std::string open_listeners(HttpServer& server, const Config& config, Logger& log) {
  std::string listen;
  const auto inherited = inherited_listeners(process_env(), ::getpid());
  if (!inherited.empty()) {
    // The service manager owns the addresses; the config's listen and unix_socket.path are its
    // business now (deploy/systemd/ficbroker.socket).
    ::unsetenv("LISTEN_PID");
    ::unsetenv("LISTEN_FDS");
    ::unsetenv("LISTEN_FDNAMES");
    for (const int fd : inherited) {
      const std::string address = server.adopt_listener(fd, config.unix_socket.allowed_uids);
      log.info("socket_activated", {{"fd", fd}, {"listen", address}});
      if (listen.empty()) listen = address;
    }
    return listen;
  }
  if (config.listen_tcp) {
    listen =
        host_port(config.listen_host, server.listen_tcp(config.listen_host, config.listen_port));
  }
  if (!config.unix_socket.path.empty()) {
    server.listen_unix(config.unix_socket.path, config.unix_socket.allowed_uids);
    if (listen.empty()) listen = "unix:" + config.unix_socket.path;
  }
  return listen;
}

// SIGHUP: a new config is applied whole, or refused whole with the keys that need a restart.
void reload(App& app, const DaemonOptions& options) {
  const std::string& path = options.config_path;
  const Config& running = app.broker.config();
  auto fresh = load_or_log(path, app.log);
  if (!fresh) {
    app.log.error("config_reload_refused", {{"path", path}, {"reason", "invalid"}});
    return;
  }
  if (!options.listen_override.empty()) {
    // The command line's address stays what it was.
    auto copy = std::make_shared<Config>(*fresh);
    copy->listen_tcp = running.listen_tcp;
    copy->listen_host = running.listen_host;
    copy->listen_port = running.listen_port;
    fresh = copy;
  }
  if (const auto keys = keys_needing_restart(running, *fresh); !keys.empty()) {
    std::string joined;
    for (const auto& k : keys) joined += (joined.empty() ? "" : ",") + k;
    app.log.error("config_reload_refused",
                  {{"path", path}, {"reason", "needs a restart"}, {"keys", joined}});
    return;
  }
  app.broker.reload(fresh);
  // Logged before the new log level applies, so that raising it does not hide the reload itself.
  app.log.info("config_reloaded", {{"targets", static_cast<std::int64_t>(fresh->targets.size())}});
  app.apply_settings(*fresh);
}

// The metrics listener, when metrics_listen is set: operations routes only, small limits.
std::unique_ptr<HttpServer> open_metrics_listener(asio::io_context& ioc, App& app,
                                                  const Config& config, std::string& address) {
  if (config.metrics_host.empty()) return nullptr;
  ServerLimits limits;
  limits.max_connections = 64;
  auto server = std::make_unique<HttpServer>(
      ioc.get_executor(),
      [&app](RequestView view) { return app.front_door.serve_operations(view); }, limits, app.log,
      app.metrics);
  address =
      host_port(config.metrics_host, server->listen_tcp(config.metrics_host, config.metrics_port));
  return server;
}

int serve_until_stopped(asio::io_context& ioc, App& app, std::shared_ptr<const Config> config,
                        const DaemonOptions& options) {
  HttpServer server(
      ioc.get_executor(), [&app](RequestView view) { return app.front_door.serve(view); },
      server_limits(*config, app.log), app.log, app.metrics);
  const std::string listen = open_listeners(server, *config, app.log);
  std::string metrics_listen;
  const auto metrics_server = open_metrics_listener(ioc, app, *config, metrics_listen);
  asio::co_spawn(ioc, app.broker.cache().run_refresher(),
                 on_task_exit(app.log, "refresher", TaskRole::must_not_die));
  asio::co_spawn(ioc, app.broker.run_prewarm(),
                 on_task_exit(app.log, "prewarm", TaskRole::must_not_die));

  asio::signal_set signals(ioc, SIGINT, SIGTERM, SIGHUP);
  std::function<void(const error_code&, int)> on_signal = [&](const error_code& ec, int signo) {
    if (ec) return;
    if (signo == SIGHUP) {
      reload(app, options);
      signals.async_wait(on_signal);
      return;
    }
    app.log.info("shutting_down", {{"signal", signo}});
    server.stop();
    if (metrics_server) metrics_server->stop();
    app.broker.stop();
    asio::co_spawn(ioc, drain(server, ioc), on_task_exit(app.log, "drain", TaskRole::may_end));
  };
  signals.async_wait(on_signal);

  app.log.info("listening", {{"listen", listen},
                             {"metrics_listen", metrics_listen},
                             {"targets", static_cast<std::int64_t>(config->targets.size())},
                             {"sources", static_cast<std::int64_t>(config->sources.size())}});
  if (!options.ready_file.empty()) write_ready_file(options.ready_file, listen, metrics_listen);
  ioc.run();
  app.log.info("stopped");
  return 0;
}

}  // namespace

int check_config(const std::string& config_path) {
  // A terminal command: human text, not log lines.
  ConfigLoad load = load_config_file(config_path);
  for (const auto& w : load.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  if (!load.config) {
    std::fprintf(stderr, "%s: invalid configuration:\n", config_path.c_str());
    for (const auto& e : load.errors) std::fprintf(stderr, "  %s\n", e.c_str());
    return 1;
  }
  std::printf("%s: valid (%zu sources, %zu targets)\n", config_path.c_str(),
              load.config->sources.size(), load.config->targets.size());
  return 0;
}

int run_daemon(const DaemonOptions& options) {
  Logger startup_log;
  auto config = load_or_log(options.config_path, startup_log);
  if (config) config = with_listen_override(config, options.listen_override, startup_log);
  if (!config) return 2;
  try {
    asio::io_context ioc(1);
    App app(ioc, config);
    try {
      return serve_until_stopped(ioc, app, config, options);
    } catch (const TaskDied&) {
      // Already logged by the task's exit handler; the process must not go on half working.
      return 70;
    }
  } catch (const std::exception& e) {
    startup_log.error("fatal", {{"what", e.what()}});
    return 1;
  }
}

int run_token_command(const std::string& config_path, const std::string& resource,
                      const std::string& tenant, const std::string& client_id) {
  Logger startup_log(LogLevel::warn, stderr);
  auto config = load_or_log(config_path, startup_log);
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
