// The remote worker: runs jobs on remote hosts over SSH (libssh2), started
// by the supervisor as `shell-poold worker --ssh` in the last worker slot
// (shm::kRemoteWorker). Its parts: the loop (loop.h), a host's pool of
// connections (pool.h), one connection (connection.h), one job's channel
// (remote_job.h), host-key checking (host_keys.h).
#pragma once

#include "worker/worker.h"

namespace sp::remote {

// Runs until SIGTERM/SIGINT/SIGHUP; its running jobs are killed on their hosts and
// end cancelled. The process exit code.
int run(const worker::Options& options);

}  // namespace sp::remote
