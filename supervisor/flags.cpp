#include "supervisor/flags.h"

#include <map>
#include <thread>

#include "common/paths.h"
#include "shm/codec.h"

namespace sp::supervisor {

namespace {

// --limit / --max-limit values ("NAME=VALUE", repeatable).
CLI::Validator limit_validator() {
  return CLI::Validator(
      [](std::string& s) {
        shm::Rlimits probe;
        Status st = shm::parse_limit(s, probe);
        return st ? std::string() : st.error().context;
      },
      "NAME=VALUE");
}

// The pool: socket, processes, capacities and the frontend's bounds.
void add_pool_flags(CLI::App& app, Config& cfg) {
  cfg.socket_path = default_socket_path();
  unsigned cpus = std::thread::hardware_concurrency();
  cfg.caps.workers = cpus ? std::min(cpus, shm::kMaxWorkers) : 2;
  app.add_option("--socket", cfg.socket_path, "Unix socket to listen on")->capture_default_str();
  app.add_option("--workers", cfg.caps.workers, "Worker processes (default: number of CPUs)")
      ->capture_default_str()
      ->check(CLI::Range(1u, shm::kMaxWorkers));
  app.add_option("--max-concurrent", cfg.max_concurrent,
                 "Jobs running at once over all workers, rounded up to a multiple of --workers "
                 "(default: 64 per worker)")
      ->check(CLI::Range(1u, 1u << 20));
  app.add_option("--queue-size", cfg.caps.job_slots,
                 "Jobs queued or running at once; beyond it requests get a retryable "
                 "queue-full error")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1u << 20));
  app.add_option("--max-output", cfg.role.max_output_bytes,
                 "execute: bytes kept per stream (stdout, stderr); more is dropped and the "
                 "result says truncated")
      ->capture_default_str();
  app.add_option("--output-budget", cfg.role.output_budget,
                 "Output the frontend holds for clients (execute output plus unsent answers), "
                 "bytes; beyond it only the oldest execute job with output waiting drains (the "
                 "others' commands wait)")
      ->capture_default_str();
  app.add_option("--output-buffer", cfg.caps.output_bytes,
                 "Shared-memory output ring, bytes (multiple of 8; 4 KiB..256 MiB)")
      ->capture_default_str();
  app.add_option("--output-rings", cfg.caps.output_rings,
                 "Output rings for jobs that run at once (at most --queue-size are made); a "
                 "job takes one with its first output and keeps it until its result is "
                 "read; while none is free, new output waits in the command's pipe")
      ->capture_default_str();
  app.add_option("--input-buffer", cfg.caps.input_bytes,
                 "Shared-memory stdin buffer per job, bytes (1 KiB..16 MiB); stdin beyond it "
                 "waits in the frontend (64 MiB over all jobs) until the command reads")
      ->capture_default_str();
  app.add_option("--spec-bytes", cfg.caps.spec_bytes,
                 "Largest encoded job (command, args, env), bytes (multiple of 8)")
      ->capture_default_str();
  app.add_option("--sessions", cfg.caps.session_slots, "Sessions at once")->capture_default_str();
  app.add_option("--session-env-bytes", cfg.caps.session_env_bytes, "Environment bytes per session")
      ->capture_default_str();
  app.add_option("--services", cfg.caps.service_slots, "Supervised services at once (1..4096)")
      ->capture_default_str();
  app.add_option("--services-per-session", cfg.caps.services_per_session,
                 "Supervised services one session may hold")
      ->capture_default_str();
  app.add_option("--service-spec-bytes", cfg.caps.service_spec_bytes,
                 "Largest service spec (its service_start params as JSON), bytes")
      ->capture_default_str();
}

// Timeouts, connections, restarts, logging and who may connect.
void add_process_flags(CLI::App& app, Config& cfg) {
  app.add_option("--default-timeout", cfg.role.default_timeout_s,
                 "Timeout in seconds for jobs that give none (0: none)")
      ->capture_default_str();
  app.add_option("--kill-grace-ms", cfg.role.kill_grace_ms,
                 "On timeout or cancel: SIGTERM, then SIGKILL after this many ms")
      ->capture_default_str();
  app.add_option("--drain-timeout", cfg.drain_timeout_s,
                 "On SIGTERM: seconds running jobs may finish before they are killed")
      ->capture_default_str();
  app.add_option("--max-connections", cfg.role.max_connections, "Client connections at once")
      ->capture_default_str();
  app.add_option("--max-line", cfg.role.max_line_bytes, "Longest request line, bytes")
      ->capture_default_str();
  app.add_option("--hang-timeout", cfg.hang_timeout_s,
                 "Seconds without a heartbeat after which a worker or the frontend is killed "
                 "and restarted (0: never)")
      ->capture_default_str();
  app.add_option("--max-restarts", cfg.max_restarts,
                 "A role that fails before it is ready by its own doing (an exit, a crash, a "
                 "hang: a boot failure) more often than this within --restart-window ends the "
                 "daemon with exit status 70; a role that dies after it was ready, or is killed "
                 "from outside while it starts, is restarted however often (backoff 50 ms to 3 s)")
      ->capture_default_str();
  app.add_option("--restart-window", cfg.restart_window_s, "Seconds, see --max-restarts")
      ->capture_default_str();
  app.add_option("--log-level", cfg.log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  app.add_option("--log-format", cfg.log_format,
                 "text (timestamped), journal (<N> priority prefixes, no timestamps), json (one "
                 "object a line), or auto: journal when stderr is systemd's journal, else text")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "text", "journal", "json"}));
  app.add_option("--env-pass", cfg.env_pass,
                 "Name of a daemon environment variable jobs also get (repeatable); jobs get "
                 "only PATH HOME USER LOGNAME SHELL LANG LC_ALL TZ TMPDIR otherwise");
  app.add_option("--recycle-after", cfg.recycle_after,
                 "Replace a worker after about this many jobs (+ up to 10 % jitter), once its "
                 "jobs are done (0: never)")
      ->capture_default_str();
  app.add_option("--allow-uid", cfg.allow_uids,
                 "A uid that may connect besides the daemon's own and root (repeatable)");
  app.add_option("--metrics-listen", cfg.metrics_listen,
                 "Serve Prometheus metrics over HTTP (GET /metrics) on ADDRESS:PORT, e.g. "
                 "127.0.0.1:9100 or [::1]:9100 (port 0: any free port, see health); anyone who "
                 "can reach it may read them (counts only, never commands or output). Off by "
                 "default; the metrics method answers on the socket either way");
  app.add_option("--max-inflight", cfg.role.max_inflight,
                 "Unfinished jobs per connection; beyond it the connection's further requests "
                 "wait")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1u << 20));
}

// Per-job limits, their ceilings, and cgroups.
void add_limit_flags(CLI::App& app, Config& cfg) {
  std::string limit_names;
  for (const auto& [name, field] : shm::kLimitNames)
    limit_names += (limit_names.empty() ? "" : ", ") + std::string(name);
  auto limits_into = [](shm::Rlimits& out) {
    return [&out](const std::vector<std::string>& items) {
      for (const std::string& item : items) (void)shm::parse_limit(item, out);  // validated
    };
  };
  app.add_option_function<std::vector<std::string>>("--limit", limits_into(cfg.role.default_limits),
                                                    "Per-job limit for jobs that set none, "
                                                    "NAME=VALUE (repeatable); NAME is one of " +
                                                        limit_names)
      ->check(limit_validator());
  app.add_option_function<std::vector<std::string>>(
         "--max-limit", limits_into(cfg.role.max_limits),
         "Per-job ceiling, NAME=VALUE (repeatable): a job asking more is refused, a job "
         "asking nothing (with no --limit) gets the ceiling")
      ->check(limit_validator());
  app.add_option("--max-timeout", cfg.role.max_timeout_s,
                 "Ceiling for a job's timeout in seconds: longer is refused, none gets it (0: "
                 "none)")
      ->capture_default_str();
  app.add_option("--cgroups", cfg.cgroups,
                 "Per-job cgroups (they make memory_bytes work, processes bind root, and kill "
                 "a job whole): auto gives one to jobs with a processes or memory_bytes limit "
                 "where the host allows, always to every job (and refuses to start where the "
                 "host does not allow), off to none")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, isolation::CgroupMode>{{"auto", isolation::CgroupMode::kAuto},
                                                       {"always", isolation::CgroupMode::kAlways},
                                                       {"off", isolation::CgroupMode::kOff}}))
      ->default_str("auto");
}

// The workspace file API.
void add_file_flags(CLI::App& app, Config& cfg) {
  app.add_option("--files-root", cfg.files_root,
                 "The directory the file methods (file_read, file_write, ...) work in: every "
                 "path is resolved beneath it, and none leads out (default: the daemon's working "
                 "directory, where jobs without a working_dir run)");
}

// Remote hosts (the remote worker).
void add_remote_flags(CLI::App& app, Config& cfg) {
  app.add_option("--hosts", cfg.caps.host_slots, "Remote hosts known at once (host_add)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 4096u));
  app.add_option("--remote-jobs", cfg.caps.remote_jobs,
                 "Jobs running on remote hosts at once, all hosts together")
      ->capture_default_str()
      ->check(CLI::Range(1u, 65536u));
  app.add_option("--known-hosts", cfg.known_hosts,
                 "The daemon's own known_hosts file: host keys it trusts, and where accept-new "
                 "records new ones (default: $STATE_DIRECTORY/known_hosts under systemd, else "
                 "~/.ssh/shell-pool_known_hosts)");
  app.add_option("--host", cfg.hosts,
                 "A remote host, as host_add would add it: \"NAME [USER@]ADDRESS[:PORT] "
                 "[key_file=PATH [passphrase_file=PATH] | agent [agent_socket=PATH] | "
                 "password_file=PATH] [host_key=strict|accept-new|pinned|insecure] "
                 "[fingerprint=SHA256:...] [connect_timeout_ms=N] [keepalive_ms=N] "
                 "[idle_timeout_ms=N] [max_connections=N]\"; repeatable; a reload applies "
                 "changes. Secrets come from files, never from the flag");
  app.add_option("--user-known-hosts", cfg.user_known_hosts,
                 "A known_hosts file consulted too, never written (default: ~/.ssh/known_hosts "
                 "of the daemon's user; \"none\": none)");
}

// Detached jobs: retention and the spool.
void add_detached_flags(CLI::App& app, Config& cfg) {
  app.add_option("--retain-jobs", cfg.caps.job_records,
                 "Detached jobs kept at once, unfinished and finished; when full, the oldest "
                 "finished one is forgotten")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1u << 20));
  app.add_option("--retain-seconds", cfg.role.retain_s,
                 "How long a finished detached job and its output are kept")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e9));
  app.add_option("--job-output-bytes", cfg.role.job_spool_bytes,
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
  app.allow_config_extras(CLI::config_extras_mode::error);  // a misspelt option is an error
}

}  // namespace

void add_daemon_flags(CLI::App& app, Config& cfg) {
  add_pool_flags(app, cfg);
  add_process_flags(app, cfg);
  add_limit_flags(app, cfg);
  add_file_flags(app, cfg);
  add_remote_flags(app, cfg);
  add_detached_flags(app, cfg);
}

Result<Config> parse_daemon_flags(const std::vector<std::string>& args) {
  CLI::App app;
  Config cfg;
  add_daemon_flags(app, cfg);
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them last first
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return Error{0, e.what()};
  }
  cfg.args = args;
  return cfg;
}

CLI::App* add_role_command(CLI::App& app, const std::string& role, RoleFlags& flags) {
  CLI::App* cmd = app.add_subcommand(role, "")->group("");  // internal: started by the supervisor
  cmd->add_option("--shm", flags.shm_name)->required();
  if (role == "worker") cmd->add_option("--index", flags.index)->required();
  if (role == "frontend") cmd->add_option("--metrics-fd", flags.metrics_fd);
  cmd->add_option("--log-level", flags.log_level);
  cmd->add_option("--log-format", flags.log_format);
  return cmd;
}

}  // namespace sp::supervisor
