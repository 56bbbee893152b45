// Frontend: the process that speaks JSON-RPC 2.0 (one message per line) to
// clients on the Unix socket the supervisor listens on, turns requests into
// jobs in the shm ring and streams their output and results back.
//
// Runs in its own process (role "frontend"), single-threaded epoll loop. Owns
// client connections; writes in shm only the slots it allocates (spec,
// publish), output read cursors, control flags of its jobs, job records and
// sessions. The parts and who owns what: docs/architecture.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "shm/codec.h"

namespace sp::frontend {

// How jobs are kept apart (isolation/cgroups.h decides; the frontend reports it
// and refuses memory limits without cgroups).
enum class Isolation { kProcessGroup, kCgroupV1, kCgroupV2 };
const char* isolation_name(Isolation i);  // "process-group", "cgroup-v1", "cgroup-v2"

struct Options {
  std::string shm_name;
  // Inherited fds (docs/architecture.md): the listening socket (a copy; the
  // supervisor keeps its own, so a restarted frontend serves the same
  // socket), our doorbell, the workers' shared submission doorbell, and each
  // worker's doorbell.
  struct Fds {
    int listen = -1;
    int bell = -1;
    int submit = -1;
    std::vector<int> workers;
  } fds;
  uint64_t max_output_bytes = 16ull << 20;
  uint64_t output_budget = 256ull << 20;  // execute output held at once, over all jobs
  uint32_t max_connections = 1024;
  uint64_t max_line_bytes = 1ull << 20;
  double default_timeout_s = 0;
  uint32_t kill_grace_ms = 2000;
  uint32_t max_inflight = 256;        // unfinished jobs per connection before it is not read
  std::vector<std::string> env_pass;  // extra daemon env names jobs get
  std::vector<uint32_t> allow_uids;   // peers allowed besides our uid and root
  shm::Rlimits default_limits;        // for jobs that set none (0: none)
  shm::Rlimits max_limits;            // ceilings: a job asking more is refused (0: none)
  double max_timeout_s = 0;           // ceiling for "timeout" (0: none)
  Isolation isolation = Isolation::kProcessGroup;
  std::string isolation_note;              // why not in cgroups, when they are not
  std::string spool_dir;                   // detached jobs' output files
  double retain_s = 3600;                  // finished detached jobs are kept this long
  uint64_t job_spool_bytes = 16ull << 20;  // output kept per detached job (both streams)
};

// Runs until SIGTERM; returns the process exit code.
int run(const Options& options);

}  // namespace sp::frontend
