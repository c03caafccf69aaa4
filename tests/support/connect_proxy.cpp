#include "connect_proxy.hpp"

#include <arpa/inet.h>
#include <cstring>
#include <netdb.h>
#include <poll.h>
#include <stdexcept>
#include <sys/socket.h>
#include <unistd.h>

namespace ficbroker::testing {

ConnectProxy::ConnectProxy() {
  listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener_, 64) != 0) {
    throw std::runtime_error("proxy: bind/listen failed");
  }
  socklen_t len = sizeof addr;
  ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

ConnectProxy::~ConnectProxy() {
  stopping_ = true;
  ::shutdown(listener_, SHUT_RDWR);
  ::close(listener_);
  acceptor_.join();
  for (auto& t : threads_) t.join();
}

std::vector<std::string> ConnectProxy::targets() const {
  std::lock_guard lock(mutex_);
  return targets_;
}

void ConnectProxy::accept_loop() {
  while (!stopping_) {
    pollfd p{listener_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const int client = ::accept(listener_, nullptr, nullptr);
    if (client < 0) continue;
    std::lock_guard lock(mutex_);
    threads_.emplace_back([this, client] { serve(client); });
  }
}

void ConnectProxy::serve(int client) {
  std::string head;
  char c;
  while (head.size() < 8192 && head.find("\r\n\r\n") == std::string::npos) {
    if (::recv(client, &c, 1, 0) != 1) {
      ::close(client);
      return;
    }
    head.push_back(c);
  }
  // CONNECT host:port HTTP/1.1
  const auto sp1 = head.find(' ');
  const auto sp2 = head.find(' ', sp1 + 1);
  const std::string target = head.substr(sp1 + 1, sp2 - sp1 - 1);
  const auto colon = target.rfind(':');
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int upstream = ::socket(AF_INET, SOCK_STREAM, 0);
  if (head.rfind("CONNECT ", 0) != 0 || colon == std::string::npos ||
      // Names under .test (RFC 2606) exist only here: the proxy resolves them to loopback, so a
      // broker can only reach them through the tunnel.
      ::getaddrinfo(target.substr(0, colon).ends_with(".test") ? "127.0.0.1"
                                                               : target.substr(0, colon).c_str(),
                    target.substr(colon + 1).c_str(), &hints, &res) != 0 ||
      ::connect(upstream, res->ai_addr, res->ai_addrlen) != 0) {
    const char* bad = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
    ::send(client, bad, std::strlen(bad), MSG_NOSIGNAL);
    if (res) ::freeaddrinfo(res);
    ::close(upstream);
    ::close(client);
    return;
  }
  ::freeaddrinfo(res);
  {
    std::lock_guard lock(mutex_);
    targets_.push_back(target);
  }
  ++tunnels_;
  const char* ok = "HTTP/1.1 200 Connection established\r\n\r\n";
  ::send(client, ok, std::strlen(ok), MSG_NOSIGNAL);
  pollfd fds[2] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}};
  char buf[16384];
  while (!stopping_) {
    if (::poll(fds, 2, 100) < 0) break;
    bool done = false;
    for (int i = 0; i < 2 && !done; ++i) {
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        const auto n = ::recv(fds[i].fd, buf, sizeof buf, 0);
        if (n <= 0 || ::send(fds[1 - i].fd, buf, static_cast<size_t>(n), MSG_NOSIGNAL) != n) {
          done = true;
        }
      }
    }
    if (done) break;
  }
  ::close(upstream);
  ::close(client);
}

}  // namespace ficbroker::testing
