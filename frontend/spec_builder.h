// SpecBuilder: turns a job's params into the spec a worker runs (shm
// SpecInput): its argv (a shell line under /bin/sh -c, or a program and its
// args), its environment (the daemon's scrubbed base, then the session's,
// then the request's), and its limits and timeout (what it asks for, else
// the daemon's default, else the ceiling; more than a ceiling is refused).
// Pure: no shm, no I/O. Reuses its buffers from one build to the next, so a
// job costs no allocation once they have grown. Single-threaded.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/env_pairs.h"
#include "frontend/errors.h"
#include "frontend/params/params.h"
#include "shm/codec.h"
#include "shm/session_table.h"

namespace sp::frontend {

class SpecBuilder {
 public:
  SpecBuilder(const shm::RoleConfig& o, EnvPairs base_env)
      : o_(o), base_env_(std::move(base_env)) {}

  // The spec of `p`, whose session gives `session` (null: no session).
  // It points into `p`, `session` and this builder: valid until the next
  // build. The secrets are the job's and the session's.
  // A remote job (`remote`) gets no base environment: only the session's
  // and the request's variables go to the host.
  std::variant<shm::SpecInput, SubmitError> build(const rpc::ExecParams& p,
                                                  const shm::SessionEnv* session,
                                                  bool remote = false);

 private:
  const shm::RoleConfig& o_;
  EnvPairs base_env_;
  std::vector<std::string> env_strings_;
  std::vector<std::string_view> env_views_, argv_views_, secret_views_;
};

}  // namespace sp::frontend
