// One way to observe how a spawned task ends. Every co_spawn in ficbroker takes its completion
// handler from here, so that no task can end silently and the handlers cannot drift apart.
//
// A task that may end (a connection, a fetch, a drain) has its failure logged. A task that must not
// die (the connection watchdog, the refresher, an accept loop) takes the whole process down when it
// fails: without the watchdog every idle and header timeout would silently stop, without the
// refresher tokens would silently expire. A loud exit lets the supervisor (systemd, kubelet)
// restart a daemon that works, instead of leaving one that half works.
#pragma once

#include "ficbroker/util/log.hpp"

#include <exception>
#include <stdexcept>
#include <string>

namespace ficbroker {

enum class TaskRole {
  may_end,       // a failure is logged and the process goes on
  must_not_die,  // a failure is logged and rethrown out of io_context::run(): the process exits
};

/// Thrown out of io_context::run() when a task that must not die failed. The daemon turns it into a
/// non-zero exit status.
class TaskDied : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The description of a failed task's exception, for a log line.
inline std::string describe_exception(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

/// The completion handler for `co_spawn(executor, task, on_task_exit(log, "name", role))`.
/// `log` must outlive the task.
inline auto on_task_exit(Logger& log, const char* name, TaskRole role) {
  return [&log, name, role](std::exception_ptr e) {
    if (!e) return;
    const std::string what = describe_exception(e);
    const bool fatal = role == TaskRole::must_not_die;
    log.error("task_failed", {{"task", name}, {"what", what}, {"fatal", fatal}});
    if (fatal) throw TaskDied(std::string(name) + " failed: " + what);
  };
}

}  // namespace ficbroker
