// RoleProcess: one role the supervisor runs (the frontend or a worker) as a
// move-only value: its pid while it runs and how to signal it. start()
// fork+execs the daemon's own binary with the role's argv and its fds at
// fixed numbers (common/roles.h); an exec that fails comes back through a
// close-on-exec error pipe (as reproc does), so it is reported as what it
// is and never mistaken for a crash. The destructor kills and reaps a
// process still owned, so none outlives its handle.
//
// Used from the supervisor's single thread; the supervisor reaps its
// children with waitpid(-1) and tells the handle (reaped()).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/result.h"

namespace sp::supervisor {

class RoleProcess {
 public:
  struct Spec {
    std::string program = "/proc/self/exe";
    std::vector<std::string> args;                  // after argv[0] ("shell-poold")
    std::vector<int> fds;                           // become fds 3, 4, ... in the child
    std::string cgroup_procs;                       // a cgroup.procs to enter first; "": none
    const std::vector<std::string>* env = nullptr;  // "NAME=value"s; nullptr: ours
  };
  // Fails if fork fails or the exec fails (with the child's errno).
  static Result<RoleProcess> start(const Spec& spec);

  RoleProcess() = default;
  RoleProcess(RoleProcess&& other) noexcept : pid_(other.pid_) { other.pid_ = 0; }
  RoleProcess& operator=(RoleProcess&& other) noexcept;
  RoleProcess(const RoleProcess&) = delete;
  RoleProcess& operator=(const RoleProcess&) = delete;
  ~RoleProcess();

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  void signal(int sig) const;
  // waitpid reported its death: the pid is no longer ours.
  void reaped() { pid_ = 0; }

 private:
  explicit RoleProcess(pid_t pid) : pid_(pid) {}
  void kill_and_reap();
  pid_t pid_ = 0;
};

}  // namespace sp::supervisor
