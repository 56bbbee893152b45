// The daemon's configuration, from shell-poold's flags (supervisor/flags.h).
// Plain data. What the roles need is `role`, which the supervisor writes
// once into the segment's header before it starts them (shm::RoleConfig:
// one place for each default); the rest is the supervisor's own.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "isolation/cgroups.h"
#include "shm/layout.h"

namespace sp::supervisor {

struct Config {
  std::string socket_path;
  shm::Capacities caps;         // job_slots is the queue capacity
  shm::RoleConfig role;         // for the roles (env_pass, allow_uids, spool_dir: see below)
  uint32_t max_concurrent = 0;  // 0: 64 per worker
  double drain_timeout_s = 10;  // SIGTERM: how long running jobs may finish
  double hang_timeout_s = 10;   // a role whose heartbeat is older is killed; 0: off
  uint32_t max_restarts = 5;    // boot failures per role within restart_window_s, then give up
  double restart_window_s = 30;
  uint64_t recycle_after = 0;  // restart a worker after about this many jobs; 0: never
  std::string log_level = "info";
  std::string log_format = "auto";                               // common/log.h
  isolation::CgroupMode cgroups = isolation::CgroupMode::kAuto;  // per-job cgroups
  std::string spool_dir;         // where the instance's spool directory is made; "": the socket's
  std::string metrics_listen;    // ADDRESS:PORT for GET /metrics; "": none
  std::string files_root;        // --files-root; "": the daemon's working directory
  std::string known_hosts;       // --known-hosts; "": the default (flags.cpp)
  std::string user_known_hosts;  // --user-known-hosts; "": ~/.ssh/known_hosts, "none": none
  // Lists the flags collect; the supervisor writes them into `role`, checking
  // their bounds (shm/role_config.h).
  std::vector<std::string> env_pass;
  std::vector<uint32_t> allow_uids;
  std::vector<std::string> hosts;  // --host specs (frontend/params/params.h, HostSpec)
  // The command line it came from (after argv[0]): a live reload parses it again.
  std::vector<std::string> args;

  uint32_t jobs_per_worker() const {
    uint32_t total = max_concurrent ? max_concurrent : 64 * caps.workers;
    return (total + caps.workers - 1) / caps.workers;
  }
};

// shell-poold's exit statuses (README, "Exit status").
inline constexpr int kExitStartFailed = 1;  // the daemon could not start (setup failed)
inline constexpr int kExitCrashLoop = 70;   // EX_SOFTWARE: a role kept dying before it was ready
inline constexpr int kExitConfig = 78;      // EX_CONFIG: a broken configuration, or what
                                            // systemd passed is unusable

// Runs the supervisor until it is told to stop; returns the process exit code.
int run(const Config& config);

}  // namespace sp::supervisor
