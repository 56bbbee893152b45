// Worker: one prespawned process that claims jobs from the submission ring
// and runs up to caps.jobs_per_worker of them at once in a single-threaded epoll
// loop, moving each child's output into its job's shm output ring, or for a
// detached job into its spool file.
//
// Runs in its own process (role "worker N"); owns its children, their pipes
// and their spool files. Writes in shm only: claims, states of the jobs it
// claimed, their output rings, spool counters and result records, its
// WorkerSlot heartbeat.
//
// Its parts: the event loop (loop.h), one job's state machine (job.h), where
// a job's output goes (sinks.h), the child process (spawn.h).
#pragma once

#include <cstdint>
#include <string>

namespace sp::worker {

struct Options {
  uint32_t index = 0;  // 0-based (shm::owner_stamp gives its jobs' owner)
  std::string shm_name;
  uint64_t recycle_after = 0;  // exit (roles::kExitRecycled) after this many jobs; 0: never
  int submit_fd = -1;          // eventfd: jobs were queued
  int bell_fd = -1;            // eventfd: this worker's doorbell (cancel, output space)
  int frontend_fd = -1;        // eventfd: the frontend's doorbell
  std::string cgroups;         // Cgroups::encode() of the daemon's job cgroups; "": none
};
// The rest (the default kill grace, the spool directory) a worker reads from
// the segment's shm::RoleConfig.

// Runs until SIGTERM/SIGINT (or recycling); then kills its jobs' process groups, records
// them cancelled and returns the process exit code.
int run(const Options& options);

}  // namespace sp::worker
