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

namespace sp::frontend {

// The fds the frontend inherits (supervisor/roles.h fixes their numbers):
// the listening socket (a copy: the supervisor keeps its own, so a restarted
// frontend serves the same socket), its doorbell, the workers' shared
// submission doorbell, and the doorbell of each worker slot (slot i's is
// first_worker_bell + i, for every one of shm::kWorkerSlots).
struct Fds {
  int listen = -1;
  int bell = -1;
  int submit = -1;
  int first_worker_bell = -1;
  int metrics = -1;  // --metrics-listen's TCP socket (a copy), or -1
};

// Runs on the segment `shm_name`, whose header holds the configuration
// (shm::RoleConfig), until SIGTERM; returns the process exit code.
int run(const std::string& shm_name, const Fds& fds);

}  // namespace sp::frontend
