// Per-job cgroups. Where the kernel lets the daemon make cgroups, a job runs
// in a cgroup of its own: `processes` and `memory_bytes` limits then bind
// every user, root included, and the job is killed whole, processes that left
// its process group too. Which jobs get one is the mode: with kAuto those
// with a processes or memory_bytes limit (moving a process into a cgroup
// costs ~0.5 ms on cgroup v1, the kernel's migration lock, which jobs without
// such limits need not pay), with kAlways every job. Two kinds of host:
//   v2: the daemon's own cgroup is a delegated cgroup v2 subtree with the
//       memory and pids controllers (systemd's Delegate=yes);
//   v1: writable cgroup v1 `pids` and `memory` hierarchies (hybrid hosts).
// Elsewhere (or with --cgroups off) jobs are isolated by process group only,
// and `health` says so and why.
//
// The tree: <base>/shell-pool-<instance>/job-<slot>, one directory per job
// slot, made when a job starts in it and removed when it ends (or, if a
// process is still leaving it, reused by the slot's next job); at most one
// per job slot (--queue-size).
//
// The supervisor creates the tree (create()) before it starts any role and
// removes it when it stops; it kills a dead worker's job cgroups. A worker
// opens the same tree from its command line (decode()) and runs its jobs in
// it. Single-threaded use; nothing here may be called between vfork and exec
// except through the paths procs() hands out.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "shm/layout.h"

namespace sp::isolation {

enum class CgroupMode {
  kOff,     // never
  kAuto,    // where the host allows, for jobs with a processes or memory_bytes limit
  kAlways,  // every job; the daemon refuses to start where the host does not allow
};

class Cgroups {
 public:
  Cgroups() = default;  // none: process groups only

  // Probes this process's cgroups and makes the tree for `instance` (a stale
  // one of an earlier instance is killed and replaced). With kAuto a host
  // without usable cgroups gives an empty Cgroups whose why_not() says why;
  // with kAlways that is an error.
  static Result<Cgroups> create(std::string_view instance, CgroupMode mode);

  // The form passed to the roles on their command line, and back.
  std::string encode() const;
  static Cgroups decode(std::string_view text);

  bool enabled() const { return version_ != 0; }
  // Whether a job with these limits runs in a cgroup.
  bool wanted(uint64_t memory_bytes, uint64_t processes) const {
    return version_ && (every_job_ || memory_bytes || processes);
  }
  bool every_job() const { return version_ && every_job_; }
  // Which jobs get a cgroup, in words (for health).
  std::string scope() const;
  // How jobs are kept apart (for health).
  shm::Isolation isolation() const;
  const std::string& why_not() const { return why_not_; }

  // Makes (or reuses) `slot`'s cgroup with these limits (0: none) and
  // remembers its cgroup.procs paths for procs().
  Status prepare(uint32_t slot, uint64_t memory_bytes, uint64_t processes);
  // Null-terminated cgroup.procs paths of the last prepare(): the vfork child
  // writes "0" to each to move itself in before exec.
  const char* const* procs() const { return procs_ptrs_.data(); }
  // SIGKILLs everything in `slot`'s cgroup.
  void kill(uint32_t slot) const;
  // OOM kills in `slot`'s cgroup since its last prepare().
  bool oom_killed(uint32_t slot) const;
  // Removes `slot`'s cgroup if it is empty (best effort).
  void release(uint32_t slot) const;
  // Kills every job and removes the whole tree (best effort, bounded).
  void remove() const;

  // The daemon's own roles get memory cgroups too (role-<name>), so that an
  // OOM kill of one can be told from other SIGKILLs. The supervisor makes
  // one before it starts the role; the role's fork child enters it through
  // the path returned before exec. No cgroups, or role "": "", and 0 kills.
  std::string prepare_role(std::string_view role) const;
  // OOM kills in the role's cgroup so far.
  uint64_t role_oom_kills(std::string_view role) const;

  Cgroups(Cgroups&&) = default;
  Cgroups& operator=(Cgroups&&) = default;
  Cgroups(const Cgroups&) = delete;  // procs_ptrs_ points into procs_
  Cgroups& operator=(const Cgroups&) = delete;

 private:
  static Cgroups none(std::string why_not);  // process groups only, and why
  // Finds where this host lets the daemon make the tree `name` ("/<instance>"):
  // sets version_ and roots_, or says why nowhere.
  Status find_tree(const std::string& name);
  // Makes roots_ (v2: with the controllers enabled for the jobs' cgroups).
  Status make_tree() const;
  std::string job_dir(size_t i, uint32_t slot) const;
  // The memory controller's tree: v2 the one root, v1 the second.
  const std::string& memory_root() const { return roots_.back(); }
  uint64_t oom_count(uint32_t slot) const;
  uint64_t oom_count_in(const std::string& dir) const;

  int version_ = 0;
  bool every_job_ = false;          // kAlways
  std::vector<std::string> roots_;  // v2: the tree; v1: the pids tree, then the memory tree
  std::string why_not_;
  std::vector<std::string> procs_;  // of the last prepare()
  std::vector<const char*> procs_ptrs_{nullptr};
  std::vector<uint64_t> oom_base_;  // per slot: OOM kills counted at prepare()
};

}  // namespace sp::isolation
