// The daemon's configuration, from shell-poold's flags. Plain data, copied
// into each role's argv by the supervisor.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "shm/codec.h"
#include "shm/layout.h"
#include "isolation/cgroups.h"

namespace sp::supervisor {

struct Config {
  std::string socket_path;
  shm::Capacities caps;                     // job_slots is the queue capacity
  uint32_t max_concurrent = 0;              // 0: 64 per worker
  uint64_t max_output_bytes = 16ull << 20;  // execute: per-stream cap, then truncated
  uint64_t output_budget = 256ull << 20;    // execute output the frontend holds, all jobs
  uint32_t kill_grace_ms = 2000;            // TERM -> KILL on timeout and cancel
  double default_timeout_s = 0;             // 0: none
  double drain_timeout_s = 10;              // SIGTERM: how long running jobs may finish
  uint32_t max_connections = 1024;
  uint64_t max_line_bytes = 1ull << 20;  // request line limit
  double hang_timeout_s = 10;            // a role whose heartbeat is older is killed; 0: off
  uint32_t max_restarts = 5;             // per role within restart_window_s, then give up
  double restart_window_s = 30;
  std::string log_level = "info";
  std::vector<std::string> env_pass;  // daemon env names passed to jobs beyond the base set
  std::vector<uint32_t> allow_uids;   // peers allowed besides the daemon's uid and root
  uint32_t max_inflight = 256;        // unfinished jobs per connection before it is not read
  uint64_t recycle_after = 0;         // restart a worker after about this many jobs; 0: never
  isolation::CgroupMode cgroups = isolation::CgroupMode::kAuto;  // per-job cgroups
  shm::Rlimits default_limits;                             // per-job limits for jobs that set none
  shm::Rlimits max_limits;   // per-job ceilings; also the default where no default is set
  double max_timeout_s = 0;  // ceiling for a job's timeout; 0: none
  std::string spool_dir;     // where the spool directory is made; "": the socket's directory
  double retain_s = 3600;    // finished detached jobs are kept this long
  uint64_t job_spool_bytes = 16ull << 20;  // output kept per detached job (both streams)

  uint32_t jobs_per_worker() const {
    uint32_t total = max_concurrent ? max_concurrent : 64 * caps.workers;
    return (total + caps.workers - 1) / caps.workers;
  }
};

// Runs the supervisor until it is told to stop; returns the process exit code.
int run(const Config& config);

}  // namespace sp::supervisor
