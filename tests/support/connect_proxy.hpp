// Test support: a minimal HTTP CONNECT proxy on 127.0.0.1 (threads and blocking sockets; test
// code only). Counts the tunnels it opened and remembers their targets.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ficbroker::testing {

class ConnectProxy {
 public:
  ConnectProxy();
  ~ConnectProxy();
  unsigned short port() const { return port_; }
  int tunnels() const { return tunnels_.load(); }
  std::vector<std::string> targets() const;

 private:
  void accept_loop();
  void serve(int client);

  int listener_ = -1;
  unsigned short port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> tunnels_{0};
  mutable std::mutex mutex_;
  std::vector<std::string> targets_;
  std::vector<std::thread> threads_;
  std::thread acceptor_;
};

}  // namespace ficbroker::testing
