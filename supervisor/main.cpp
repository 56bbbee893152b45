// shell-poold: one binary for every role. Without a role it is the
// supervisor; the supervisor execs itself as `shell-poold frontend ...` and
// `shell-poold worker --index N ...`; a file method's job runs it as
// `shell-poold files OP ...`, a service's readiness probe as
// `shell-poold probe KIND ...`. main() only parses flags and wires.
#include <CLI/CLI.hpp>

#include "common/log.h"
#include "common/roles.h"
#include "files/helper.h"
#include "frontend/frontend.h"
#include "remote/remote.h"
#include "services/probe.h"
#include "supervisor/config.h"
#include "supervisor/flags.h"
#include "worker/worker.h"

namespace {

// The frontend's fds at their fixed numbers.
constexpr sp::frontend::Fds kFrontendFds{sp::roles::kListen, sp::roles::kFrontendBell,
                                         sp::roles::kFrontendSubmit, sp::roles::kFirstWorkerBell};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "shell-poold: a crash-isolated daemon that runs shell commands for clients on a Unix "
      "socket (JSON-RPC 2.0, one message per line, or MessagePack-RPC).\n"
      "Runs in the foreground and logs to stderr; SIGTERM/SIGINT drains running jobs and stops; "
      "SIGHUP reloads the configuration (the flags and --config FILE) without a restart.",
      "shell-poold"};
  app.set_version_flag("--version", "shell-poold 0.1.0");
  sp::supervisor::Config cfg;
  sp::supervisor::add_daemon_flags(app, cfg);

  sp::supervisor::RoleFlags role;
  CLI::App* frontend = sp::supervisor::add_role_command(app, "frontend", role);

  sp::worker::Options wo;
  CLI::App* worker = app.add_subcommand("worker", "")->group("");
  worker->add_option("--index", wo.index)->required();
  worker->add_option("--shm", wo.shm_name)->required();
  worker->add_option("--recycle-after", wo.recycle_after);
  worker->add_option("--submit-fd", wo.submit_fd)->required();
  worker->add_option("--bell-fd", wo.bell_fd)->required();
  worker->add_option("--frontend-fd", wo.frontend_fd)->required();
  worker->add_option("--cgroups", wo.cgroups);
  bool ssh = false;
  worker->add_flag("--ssh", ssh);  // the remote worker (remote/remote.h)
  worker->add_option("--log-level", role.log_level);
  worker->add_option("--log-format", role.log_format);

  sp::files::HelperArgs file_args;
  CLI::App* files = sp::files::add_helper_command(app, file_args);
  sp::services::ProbeArgs probe_args;
  CLI::App* probe = sp::services::add_probe_command(app, probe_args);

  CLI11_PARSE(app, argc, argv);
  if (*files) return sp::files::run_helper(file_args);
  if (*probe) return sp::services::run_probe(probe_args);
  cfg.args.assign(argv + 1, argv + argc);
  const sp::LogFormat role_format =
      sp::parse_log_format(role.log_format).value_or(sp::LogFormat::kText);

  if (*worker && ssh) {
    sp::init_logging("remote worker", role.log_level, role_format);
    return sp::remote::run(wo);
  }
  if (*worker) {
    sp::init_logging("worker " + std::to_string(wo.index), role.log_level, role_format);
    return sp::worker::run(wo);
  }
  if (*frontend) {
    sp::init_logging("frontend", role.log_level, role_format);
    sp::frontend::Fds fds = kFrontendFds;
    fds.metrics = role.metrics_fd;
    return sp::frontend::run(role.shm_name, fds);
  }
  sp::init_logging("supervisor", cfg.log_level,
                   sp::parse_log_format(cfg.log_format).value_or(sp::LogFormat::kAuto));
  return sp::supervisor::run(cfg);
}
