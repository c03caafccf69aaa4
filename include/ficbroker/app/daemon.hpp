// The program's entry points, kept out of main.cpp so main stays a thin argument parser.
#pragma once

#include <string>

namespace ficbroker {

struct DaemonOptions {
  std::string config_path = "/etc/ficbroker/config.jsonc";
  std::string ready_file;       // written once listening: {"listen":"host:port"}
  std::string listen_override;  // host:port replacing the config's listen (tests, demo)
};

/// Runs the broker until SIGTERM/SIGINT (drain, exit 0). SIGHUP reloads the config.
int run_daemon(const DaemonOptions& options);
/// Validates the config, prints what is wrong; 0 when valid.
int check_config(const std::string& config_path);
/// One token, printed as the IMDS-shaped JSON; 0 on success.
int run_token_command(const std::string& config_path, const std::string& resource,
                      const std::string& tenant, const std::string& client_id);
/// GET `url` (plain http); 0 iff the answer is 200. For container health checks.
int run_probe(const std::string& url);

}  // namespace ficbroker
