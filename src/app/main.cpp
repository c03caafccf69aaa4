// ficbroker: a local broker of cross-tenant Entra tokens. See README.md.
#include "ficbroker/app/daemon.hpp"

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>

namespace {

constexpr const char* kUsage =
    "usage:\n"
    "  ficbroker [--config FILE] [--listen HOST:PORT] [--ready-file FILE]   run the broker\n"
    "  ficbroker --check-config [--config FILE]                          validate and exit\n"
    "  ficbroker token --resource R [--tenant T] [--client-id C] [--config FILE]\n"
    "  ficbroker probe URL                                               exit 0 iff GET is 200\n"
    "  ficbroker --version\n"
    "The config defaults to $FICBROKER_CONFIG, else /etc/ficbroker/config.jsonc.\n";

}  // namespace

int main(int argc, char** argv) {
  try {
    ficbroker::DaemonOptions options;
    if (const char* env = std::getenv("FICBROKER_CONFIG"); env && *env) options.config_path = env;
    std::string command, resource, tenant, client_id, probe_url;
    bool check = false;
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg = argv[i];
      auto value = [&](const char* name) -> std::string {
        if (i + 1 >= argc) {
          std::fprintf(stderr, "ficbroker: %s needs a value\n%s", name, kUsage);
          std::exit(2);
        }
        return argv[++i];
      };
      if (arg == "--config") {
        options.config_path = value("--config");
      } else if (arg == "--ready-file") {
        options.ready_file = value("--ready-file");
      } else if (arg == "--listen") {
        options.listen_override = value("--listen");
      } else if (arg == "--check-config") {
        check = true;
      } else if (arg == "--resource") {
        resource = value("--resource");
      } else if (arg == "--tenant") {
        tenant = value("--tenant");
      } else if (arg == "--client-id") {
        client_id = value("--client-id");
      } else if (arg == "--version") {
        std::printf("ficbroker 0.1.0\n");
        return 0;
      } else if (arg == "--help" || arg == "-h") {
        std::fputs(kUsage, stdout);
        return 0;
      } else if ((arg == "token" || arg == "probe") && command.empty()) {
        command = std::string(arg);
        if (arg == "probe") probe_url = value("probe");
      } else {
        std::fprintf(stderr, "ficbroker: unknown argument '%s'\n%s", argv[i], kUsage);
        return 2;
      }
    }
    if (command == "probe") return ficbroker::run_probe(probe_url);
    if (check) return ficbroker::check_config(options.config_path);
    if (command == "token") {
      if (resource.empty()) {
        std::fprintf(stderr, "ficbroker token: --resource is required\n");
        return 2;
      }
      return ficbroker::run_token_command(options.config_path, resource, tenant, client_id);
    }
    return ficbroker::run_daemon(options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ficbroker: fatal: %s\n", e.what());
    return 1;
  }
}
