// Spawning one job's process: vfork + execve, in a new session (so its pid is
// its process group id), with stdin from /dev/null and stdout/stderr into
// fresh pipes. Called from a worker's single thread; the worker must keep all
// signals it handles blocked (it uses signalfd), install no handlers and
// ignore nothing, so the child starts from default dispositions.
#pragma once

#include <sys/types.h>

#include <string>

#include "common/result.h"
#include "common/unique_fd.h"
#include "shm/codec.h"

namespace sp::worker {

struct Child {
  pid_t pid = -1;  // also the process group id
  UniqueFd pidfd;  // readable when the child exits
  UniqueFd out;    // read end of its stdout, non-blocking
  UniqueFd err;    // read end of its stderr, non-blocking
};

// Finds `name` in the spec's PATH (or a default PATH) unless it has a slash.
// ENOENT if it is nowhere; EACCES if found but not executable.
Result<std::string> resolve_program(const shm::DecodedSpec& spec);

// Starts the command, in the cgroups whose cgroup.procs paths `cgroup_procs`
// lists (null-terminated; null: none). On failure nothing is left running
// and the Error says what failed (chdir, exec, pipe...) with the child's errno.
Result<Child> spawn(const shm::DecodedSpec& spec, const std::string& program, int devnull,
                    const char* const* cgroup_procs);

}  // namespace sp::worker
