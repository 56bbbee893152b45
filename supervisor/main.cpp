// shell-poold: one binary for every role. Without a role it is the
// supervisor; the supervisor execs itself as `shell-poold frontend ...` and
// `shell-poold worker --index N ...`. main() only parses flags and wires.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <map>
#include <sstream>
#include <thread>

#include "common/log.h"
#include "common/paths.h"
#include "frontend/frontend.h"
#include "supervisor/config.h"
#include "worker/worker.h"

namespace {

// --limit / --max-limit values ("NAME=VALUE", repeatable) into `out`.
CLI::Validator limit_validator() {
  return CLI::Validator(
      [](std::string& s) {
        sp::shm::Rlimits probe;
        sp::Status st = sp::shm::parse_limit(s, probe);
        return st ? std::string() : st.error().context;
      },
      "NAME=VALUE");
}

void parse_limits(const std::vector<std::string>& items, sp::shm::Rlimits& out) {
  for (const std::string& item : items) (void)sp::shm::parse_limit(item, out);  // validated
}

std::vector<int> parse_fd_list(const std::string& s) {
  std::vector<int> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoi(item));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "shell-poold: a crash-isolated daemon that runs shell commands for clients on a Unix "
      "socket (JSON-RPC 2.0, one message per line).\n"
      "Runs in the foreground and logs to stderr; SIGTERM/SIGINT drains running jobs and stops.",
      "shell-poold"};
  app.set_version_flag("--version", "shell-poold 0.1.0");

  sp::supervisor::Config cfg;
  cfg.socket_path = sp::default_socket_path();
  unsigned cpus = std::thread::hardware_concurrency();
  cfg.caps.workers = cpus ? std::min(cpus, sp::shm::kMaxWorkers) : 2;
  app.add_option("--socket", cfg.socket_path, "Unix socket to listen on")->capture_default_str();
  app.add_option("--workers", cfg.caps.workers, "Worker processes (default: number of CPUs)")
      ->capture_default_str()
      ->check(CLI::Range(1u, sp::shm::kMaxWorkers));
  app.add_option("--max-concurrent", cfg.max_concurrent,
                 "Jobs running at once over all workers, rounded up to a multiple of --workers "
                 "(default: 64 per worker)")
      ->check(CLI::Range(1u, 1u << 20));
  app.add_option("--queue-size", cfg.caps.job_slots,
                 "Jobs queued or running at once; beyond it requests get a retryable "
                 "queue-full error")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1u << 20));
  app.add_option("--max-output", cfg.max_output_bytes,
                 "execute: bytes kept per stream (stdout, stderr); more is dropped and the "
                 "result says truncated")
      ->capture_default_str();
  app.add_option("--output-budget", cfg.output_budget,
                 "Output the frontend holds for clients (execute output plus unsent answers), "
                 "bytes; beyond it only the oldest execute job with output waiting drains (the "
                 "others' commands wait)")
      ->capture_default_str();
  app.add_option("--output-buffer", cfg.caps.output_bytes,
                 "Shared-memory output buffer per job, bytes (multiple of 8)")
      ->capture_default_str();
  app.add_option("--spec-bytes", cfg.caps.spec_bytes,
                 "Largest encoded job (command, args, env), bytes (multiple of 8)")
      ->capture_default_str();
  app.add_option("--sessions", cfg.caps.session_slots, "Sessions at once")->capture_default_str();
  app.add_option("--session-env-bytes", cfg.caps.session_env_bytes, "Environment bytes per session")
      ->capture_default_str();
  app.add_option("--default-timeout", cfg.default_timeout_s,
                 "Timeout in seconds for jobs that give none (0: none)")
      ->capture_default_str();
  app.add_option("--kill-grace-ms", cfg.kill_grace_ms,
                 "On timeout or cancel: SIGTERM, then SIGKILL after this many ms")
      ->capture_default_str();
  app.add_option("--drain-timeout", cfg.drain_timeout_s,
                 "On SIGTERM: seconds running jobs may finish before they are killed")
      ->capture_default_str();
  app.add_option("--max-connections", cfg.max_connections, "Client connections at once")
      ->capture_default_str();
  app.add_option("--max-line", cfg.max_line_bytes, "Longest request line, bytes")
      ->capture_default_str();
  app.add_option("--hang-timeout", cfg.hang_timeout_s,
                 "Seconds without a heartbeat after which a worker or the frontend is killed "
                 "and restarted (0: never)")
      ->capture_default_str();
  app.add_option("--max-restarts", cfg.max_restarts,
                 "A role that dies more often than this within --restart-window ends the daemon")
      ->capture_default_str();
  app.add_option("--restart-window", cfg.restart_window_s, "Seconds, see --max-restarts")
      ->capture_default_str();
  app.add_option("--log-level", cfg.log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  app.add_option("--env-pass", cfg.env_pass,
                 "Name of a daemon environment variable jobs also get (repeatable); jobs get "
                 "only PATH HOME USER LOGNAME SHELL LANG LC_ALL TZ TMPDIR otherwise");
  app.add_option("--recycle-after", cfg.recycle_after,
                 "Replace a worker after about this many jobs (+ up to 10 % jitter), once its "
                 "jobs are done (0: never)")
      ->capture_default_str();
  app.add_option("--allow-uid", cfg.allow_uids,
                 "A uid that may connect besides the daemon's own and root (repeatable)");
  app.add_option("--max-inflight", cfg.max_inflight,
                 "Unfinished jobs per connection; beyond it the connection's further requests "
                 "wait")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1u << 20));

  std::vector<std::string> default_limits, max_limits;
  std::string limit_names;
  for (const auto& [name, field] : sp::shm::kLimitNames)
    limit_names += (limit_names.empty() ? "" : ", ") + std::string(name);
  app.add_option("--limit", default_limits,
                 "Per-job limit for jobs that set none, NAME=VALUE (repeatable); NAME is one of " +
                     limit_names)
      ->check(limit_validator());
  app.add_option("--max-limit", max_limits,
                 "Per-job ceiling, NAME=VALUE (repeatable): a job asking more is refused, a job "
                 "asking nothing (with no --limit) gets the ceiling")
      ->check(limit_validator());
  app.add_option("--max-timeout", cfg.max_timeout_s,
                 "Ceiling for a job's timeout in seconds: longer is refused, none gets it (0: "
                 "none)")
      ->capture_default_str();
  const std::map<std::string, sp::isolation::CgroupMode> cgroup_modes{
      {"auto", sp::isolation::CgroupMode::kAuto},
      {"always", sp::isolation::CgroupMode::kAlways},
      {"off", sp::isolation::CgroupMode::kOff}};
  std::string cgroups = "auto";
  app.add_option("--cgroups", cgroups,
                 "Per-job cgroups (they make memory_bytes work, processes bind root, and kill "
                 "a job whole): auto gives one to jobs with a processes or memory_bytes limit "
                 "where the host allows, always to every job (and refuses to start where the "
                 "host does not allow), off to none")
      ->check(CLI::IsMember({"auto", "always", "off"}))
      ->capture_default_str();
  app.add_option("--retain-jobs", cfg.caps.job_records,
                 "Detached jobs kept at once, unfinished and finished; when full, the oldest "
                 "finished one is forgotten")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1u << 20));
  app.add_option("--retain-seconds", cfg.retain_s,
                 "How long a finished detached job and its output are kept")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e9));
  app.add_option("--job-output-bytes", cfg.job_spool_bytes,
                 "Output kept per detached job (stdout and stderr together); more is dropped "
                 "and marked truncated")
      ->capture_default_str();
  app.add_option("--spool-bytes", cfg.caps.spool_bytes,
                 "Disk all detached jobs' output may take together; beyond it output is dropped "
                 "and finished jobs are forgotten, oldest first, to make room")
      ->capture_default_str();
  app.add_option("--spool-dir", cfg.spool_dir,
                 "Where detached jobs' output files go: the daemon makes (and at exit removes) "
                 "its own directory shell-pool-<hash>.spool in it (default: the socket's "
                 "directory)");
  app.set_config("--config", "", "Read options from this TOML file (names as the long flags)");

  // Internal roles, started by the supervisor; not for direct use.
  sp::worker::Options wo;
  std::string log_level = "info";
  CLI::App* worker = app.add_subcommand("worker", "")->group("");
  worker->add_option("--index", wo.index)->required();
  worker->add_option("--shm", wo.shm_name)->required();
  worker->add_option("--kill-grace-ms", wo.kill_grace_ms);
  worker->add_option("--recycle-after", wo.recycle_after);
  worker->add_option("--submit-fd", wo.submit_fd)->required();
  worker->add_option("--bell-fd", wo.bell_fd)->required();
  worker->add_option("--frontend-fd", wo.frontend_fd)->required();
  worker->add_option("--cgroups", wo.cgroups);
  worker->add_option("--spool-dir", wo.spool_dir);
  worker->add_option("--log-level", log_level);

  sp::frontend::Options fo;
  std::string worker_fds;
  CLI::App* frontend = app.add_subcommand("frontend", "")->group("");
  frontend->add_option("--shm", fo.shm_name)->required();
  frontend->add_option("--listen-fd", fo.fds.listen)->required();
  frontend->add_option("--frontend-fd", fo.fds.bell)->required();
  frontend->add_option("--submit-fd", fo.fds.submit)->required();
  frontend->add_option("--worker-fds", worker_fds)->required();
  frontend->add_option("--max-output", fo.max_output_bytes);
  frontend->add_option("--output-budget", fo.output_budget);
  frontend->add_option("--max-connections", fo.max_connections);
  frontend->add_option("--max-line", fo.max_line_bytes);
  frontend->add_option("--default-timeout", fo.default_timeout_s);
  frontend->add_option("--kill-grace-ms", fo.kill_grace_ms);
  frontend->add_option("--max-inflight", fo.max_inflight);
  frontend->add_option("--env-pass", fo.env_pass);
  frontend->add_option("--allow-uid", fo.allow_uids);
  std::vector<std::string> fe_default_limits, fe_max_limits;
  frontend->add_option("--limit", fe_default_limits);
  frontend->add_option("--max-limit", fe_max_limits);
  frontend->add_option("--max-timeout", fo.max_timeout_s);
  frontend->add_option("--isolation", fo.isolation)
      ->transform(CLI::CheckedTransformer(std::map<std::string, sp::frontend::Isolation>{
          {"process-group", sp::frontend::Isolation::kProcessGroup},
          {"cgroup-v1", sp::frontend::Isolation::kCgroupV1},
          {"cgroup-v2", sp::frontend::Isolation::kCgroupV2}}));
  frontend->add_option("--isolation-note", fo.isolation_note);
  frontend->add_option("--spool-dir", fo.spool_dir);
  frontend->add_option("--retain-seconds", fo.retain_s);
  frontend->add_option("--job-output-bytes", fo.job_spool_bytes);
  frontend->add_option("--log-level", log_level);

  CLI11_PARSE(app, argc, argv);

  if (*worker) {
    sp::init_logging("worker " + std::to_string(wo.index), log_level);
    return sp::worker::run(wo);
  }
  if (*frontend) {
    sp::init_logging("frontend", log_level);
    fo.fds.workers = parse_fd_list(worker_fds);
    parse_limits(fe_default_limits, fo.default_limits);
    parse_limits(fe_max_limits, fo.max_limits);
    return sp::frontend::run(fo);
  }
  parse_limits(default_limits, cfg.default_limits);
  parse_limits(max_limits, cfg.max_limits);
  cfg.cgroups = cgroup_modes.at(cgroups);  // checked by IsMember
  sp::init_logging("supervisor", cfg.log_level);
  return sp::supervisor::run(cfg);
}
