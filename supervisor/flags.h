// shell-poold's command line: the daemon's flags (and --config FILE, the same
// options as TOML), bound straight to a Config, and the internal role
// subcommands the supervisor starts its children with. Used by main() only.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "common/result.h"

#include "supervisor/config.h"

namespace sp::supervisor {

// The daemon's flags, writing into `cfg` (whose defaults they show).
void add_daemon_flags(CLI::App& app, Config& cfg);

// A live reload: the daemon's command line `args` (after argv[0]) parsed
// again, --config FILE read again. An error says what is wrong.
Result<Config> parse_daemon_flags(const std::vector<std::string>& args);

// A role subcommand's own flags: which segment, which worker, how to log.
// Everything else a role reads from the segment (shm::RoleConfig).
struct RoleFlags {
  std::string shm_name;
  uint32_t index = 0;  // worker only
  std::string log_level = "info";
  std::string log_format = "text";  // the supervisor passes it resolved (never auto)
  int metrics_fd = -1;              // frontend only: --metrics-listen's socket
};
CLI::App* add_role_command(CLI::App& app, const std::string& role, RoleFlags& flags);

}  // namespace sp::supervisor
