// Test support: start a real binary as a child process and wait for its ready file.
#pragma once

#include <chrono>
#include <string>
#include <sys/types.h>
#include <vector>

namespace ficbroker::testing {

class ChildProcess {
 public:
  ChildProcess() = default;
  /// Starts `argv[0]` with the arguments; stdout/stderr go to `log_path`.
  ChildProcess(std::vector<std::string> argv, const std::string& log_path);
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  /// Sends `signo`; then waits up to `timeout` for exit. Returns the exit status, or -1 if it
  /// did not exit in time (it is then killed).
  int stop(int signo, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  bool running();
  void signal(int signo);

 private:
  pid_t pid_ = -1;
};

/// Waits for a file to exist and be non-empty; returns its content or throws after `timeout`.
std::string wait_for_file(const std::string& path,
                          std::chrono::milliseconds timeout = std::chrono::seconds(20));

/// A fresh temporary directory, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& content);
std::string read_file(const std::string& path);

}  // namespace ficbroker::testing
