// ficbroker-emulator: emulates Azure IMDS, the App Service MSI endpoint and the Entra v2 token
// endpoint (with federated identity credential matching) on localhost, for the demo and tests.
#include "ficbroker/util/asio.hpp"

#include "server.hpp"
#include "service.hpp"
#include "tls_material.hpp"
#include "world.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <unistd.h>

namespace {

namespace emu = ficbroker::emulator;

constexpr std::string_view kUsage =
    "usage: ficbroker-emulator [--world FILE] [--http-listen HOST:PORT] [--https-listen "
    "HOST:PORT]\n"
    "                          [--ca-out FILE] [--ready-file FILE] [--token-lifetime SECONDS]\n"
    "                          [--mi-token-lifetime SECONDS] [--quiet]\n"
    "  --world FILE               world JSON (identities, apps + FICs, tenants); default: built "
    "in\n"
    "  --http-listen HOST:PORT    IMDS + App Service + control API (default 127.0.0.1:18080)\n"
    "  --https-listen HOST:PORT   Entra token endpoint + control API (default 127.0.0.1:18443)\n"
    "  --ca-out FILE              write the generated CA certificate (PEM) here\n"
    "  --ready-file FILE          once listening, atomically write {http,https,ca_file,pid} JSON\n"
    "  --token-lifetime SECONDS   lifetime of Entra tokens (default 3599)\n"
    "  --mi-token-lifetime SECONDS  lifetime of IMDS/App Service tokens (default 86399)\n"
    "  --quiet                    no per-request log lines\n"
    "  --print-default-world      print the built-in world JSON and exit\n";

struct Cli {
  std::optional<std::string> world_file;
  std::string http_listen = "127.0.0.1:18080";
  std::string https_listen = "127.0.0.1:18443";
  std::string ca_out;
  std::string ready_file;
  std::int64_t token_lifetime = 3599;
  std::int64_t mi_token_lifetime = 86399;
  bool quiet = false;
  bool print_world = false;
};

std::optional<std::int64_t> parse_seconds(const std::string& text) {
  if (text.empty() || text.size() > 10 ||
      text.find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  const std::int64_t v = std::stoll(text);
  if (v < 1) return std::nullopt;
  return v;
}

// Returns nullopt (after printing why) on bad usage.
std::optional<Cli> parse_cli(int argc, char** argv) {
  Cli cli;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::optional<std::string> inline_value;
    if (const std::size_t eq = arg.find('='); arg.starts_with("--") && eq != std::string::npos) {
      inline_value = arg.substr(eq + 1);
      arg.resize(eq);
    }
    auto value = [&]() -> std::optional<std::string> {
      if (inline_value) return inline_value;
      if (i + 1 >= argc) {
        std::cerr << "ficbroker-emulator: " << arg << " needs a value\n";
        return std::nullopt;
      }
      return std::string(argv[++i]);
    };
    auto seconds = [&](std::int64_t& out) {
      const auto v = value();
      if (!v) return false;
      const auto n = parse_seconds(*v);
      if (!n) {
        std::cerr << "ficbroker-emulator: " << arg << " must be a positive number of seconds\n";
        return false;
      }
      out = *n;
      return true;
    };
    auto text = [&](std::string& out) {
      const auto v = value();
      if (!v) return false;
      out = *v;
      return true;
    };

    bool ok = true;
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else if (arg == "--world") {
      std::string file;
      ok = text(file);
      cli.world_file = file;
    } else if (arg == "--http-listen") {
      ok = text(cli.http_listen);
    } else if (arg == "--https-listen") {
      ok = text(cli.https_listen);
    } else if (arg == "--ca-out") {
      ok = text(cli.ca_out);
    } else if (arg == "--ready-file") {
      ok = text(cli.ready_file);
    } else if (arg == "--token-lifetime") {
      ok = seconds(cli.token_lifetime);
    } else if (arg == "--mi-token-lifetime") {
      ok = seconds(cli.mi_token_lifetime);
    } else if (arg == "--quiet" && !inline_value) {
      cli.quiet = true;
    } else if (arg == "--print-default-world" && !inline_value) {
      cli.print_world = true;
    } else {
      std::cerr << "ficbroker-emulator: unknown argument '" << argv[i] << "'\n" << kUsage;
      ok = false;
    }
    if (!ok) return std::nullopt;
  }
  return cli;
}

// Writes via a temporary file in the same directory and rename(), so readers never see a
// partial file. Throws on failure.
void write_file_atomically(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << content;
    out.flush();
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw std::runtime_error("cannot rename " + tmp + " to " + path);
  }
}

std::string absolute_path(const std::string& path) {
  std::error_code ec;
  const auto abs = std::filesystem::absolute(path, ec);
  return ec ? path : abs.string();
}

int run(const Cli& cli) {
  // The world.
  std::string world_text(emu::default_world_json());
  if (cli.world_file) {
    std::ifstream in(*cli.world_file, std::ios::binary);
    if (!in) {
      std::cerr << "ficbroker-emulator: cannot read world file " << *cli.world_file << "\n";
      return 2;
    }
    std::ostringstream buf;
    buf << in.rdbuf();
    world_text = buf.str();
  }
  std::string world_error;
  std::optional<emu::World> world = emu::parse_world(world_text, world_error);
  if (!world) {
    std::cerr << "ficbroker-emulator: invalid world"
              << (cli.world_file ? " in " + *cli.world_file : std::string()) << ": " << world_error
              << "\n";
    return 2;
  }

  // Keys and certificates (startup only, before the io_context runs; done in parallel because
  // RSA key generation dominates start-up time).
  auto tls_future = std::async(std::launch::async, emu::generate_tls_material);
  auto oidc_future = std::async(std::launch::async, [] { return emu::RsaKey::generate(2048); });
  emu::RsaKey entra_key = emu::RsaKey::generate(2048);
  emu::RsaKey oidc_key = oidc_future.get();
  const emu::TlsMaterial tls = tls_future.get();

  // Declared before the io_context: coroutine frames destroyed with the io_context refer to it.
  emu::Service service(std::move(*world),
                       emu::ServiceOptions{cli.token_lifetime, cli.mi_token_lifetime},
                       std::move(entra_key), std::move(oidc_key));

  boost::asio::io_context ioc(1);
  emu::ServerOptions server_options;
  server_options.quiet = cli.quiet;
  emu::Server server(ioc, service, tls, server_options);
  try {
    server.bind(cli.http_listen, cli.https_listen);
  } catch (const std::exception& e) {
    std::cerr << "ficbroker-emulator: cannot listen: " << e.what() << "\n";
    return 1;
  }

  std::string ca_file;
  if (!cli.ca_out.empty()) {
    write_file_atomically(cli.ca_out, tls.ca_cert_pem);
    ca_file = absolute_path(cli.ca_out);
  }

  server.start();
  boost::asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&ioc](const boost::system::error_code& ec, int) {
    if (!ec) ioc.stop();
  });

  if (!cli.ready_file.empty()) {
    boost::json::object ready;
    ready["http"] = server.http_endpoint();
    ready["https"] = server.https_endpoint();
    ready["ca_file"] = ca_file;
    ready["pid"] = static_cast<std::int64_t>(::getpid());
    write_file_atomically(cli.ready_file, boost::json::serialize(ready) + "\n");
  }
  std::printf("ficbroker-emulator ready: http=%s https=%s ca_file=%s pid=%d\n",
              server.http_endpoint().c_str(), server.https_endpoint().c_str(),
              ca_file.empty() ? "-" : ca_file.c_str(), static_cast<int>(::getpid()));

  ioc.run();
  return 0;
}

}  // namespace

// Until the io_context's signal_set takes over, SIGINT/SIGTERM end the process at once with
// status 0 (key generation can take a second; a background job may even inherit SIGINT ignored).
extern "C" void exit_on_signal(int) { ::_exit(0); }

int main(int argc, char** argv) {
  // Line-buffered stdout so tests reading a pipe see each log line as it happens.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGINT, exit_on_signal);
  std::signal(SIGTERM, exit_on_signal);

  const std::optional<Cli> cli = parse_cli(argc, argv);
  if (!cli) return 2;
  if (cli->print_world) {
    std::cout << emu::default_world_json() << "\n";
    return 0;
  }
  try {
    return run(*cli);
  } catch (const std::exception& e) {
    std::cerr << "ficbroker-emulator: fatal: " << e.what() << "\n";
    return 1;
  }
}
