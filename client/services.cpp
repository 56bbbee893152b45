#include "client/services.h"

#include "client/flags.h"

#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdio>
#include <iostream>

namespace sp::cli {

namespace {

// `service wait` when the service did not reach the state asked for.
constexpr int kNotReached = 1;
// Seconds a `logs -f` read waits for new output before it asks again.
constexpr int kFollowWait = 30;
// Bytes of output one service_logs read asks for at most.
constexpr uint64_t kLogChunk = 1 << 20;

// The command and how it runs: the options that are not about supervision.
void add_command_options(CLI::App* start, ServiceFlags& f) {
  start->add_option("name", f.name, "the service's name")->required();
  CLI::Option* program = start->add_option(
      "command", f.command, "program and its arguments, no shell (after --): -- PROG ARGS...");
  start->add_option("--sh", f.line, "a shell line run with /bin/sh -c, instead of -- PROG ARGS")
      ->excludes(program);
  start->add_option("--env", f.env, "NAME=value for the command (repeatable)");
  start->add_option("--cwd", f.cwd, "working directory of the command");
  start->add_option("--session", f.session, "session id whose env_vars apply");
  add_count(start, "--log-bytes", f.log_bytes, "bytes of output the daemon keeps for `logs`",
            "Options");
  start->add_flag("--wait", f.wait_ready,
                  "answer once the service is ready (passes its readiness probe)");
}

void add_restart_options(CLI::App* start, ServiceFlags& f) {
  const std::string group = "Restart (when the command ends)";
  start
      ->add_option("--restart", f.restart,
                   "never, on-failure (a nonzero exit or a signal) or always")
      ->check(CLI::IsMember({"never", "on-failure", "always"}))
      ->group(group);
  add_count(start, "--backoff-ms", f.backoff_ms,
            "ms before a restart (grows up to --backoff-max-ms)", group);
  add_count(start, "--backoff-max-ms", f.backoff_max_ms, "longest wait between restarts, ms",
            group);
  add_count(start, "--max-restarts", f.max_restarts,
            "restarts allowed within --window-ms before the service is failed", group);
  add_count(start, "--window-ms", f.window_ms, "the window --max-restarts counts in, ms", group);
}

void add_readiness_options(CLI::App* start, ServiceFlags& f) {
  const std::string group = "Readiness (one probe; the service is ready once it passes)";
  CLI::Option* probes[] = {
      start->add_option("--ready-tcp", f.ready_tcp, "PORT accepts a connection on 127.0.0.1")
          ->check(CLI::Range(1, 65535)),
      start->add_option("--ready-http", f.ready_http, "an HTTP GET of URL succeeds"),
      start->add_option("--ready-file", f.ready_file, "PATH exists"),
      start->add_option("--ready-cmd", f.ready_cmd, "the shell line exits 0"),
  };
  for (CLI::Option* probe : probes) {
    probe->group(group);
    for (CLI::Option* other : probes)
      if (other != probe) probe->excludes(other);
  }
  add_count(start, "--ready-delay-ms", f.ready_delay_ms, "ms after a start before the first probe",
            group);
  add_count(start, "--ready-period-ms", f.ready_period_ms, "ms between probes", group);
  add_count(start, "--ready-timeout-ms", f.ready_timeout_ms, "ms one probe may take", group);
  add_count(start, "--start-period-ms", f.start_period_ms,
            "ms a generation has to get ready; then it is stopped and counts as a failure", group);
}

void add_stop_options(CLI::App* start, ServiceFlags& f) {
  const std::string group = "Stop (service stop, service restart, daemon shutdown)";
  start
      ->add_option("--stop-signal", f.stop_signal,
                   "signal sent first (default: the daemon's, TERM)")
      ->group(group);
  add_count(start, "--stop-grace-ms", f.stop_grace_ms, "ms after it before SIGKILL", group);
}

void add_read_commands(CLI::App* service, ServiceFlags& f, ServiceCommands& c) {
  c.status = service->add_subcommand("status", "print a service's status as JSON");
  c.status->add_option("name", f.name, "the service's name")->required();
  c.list = service->add_subcommand("list", "print every service's status as JSON");
  c.wait = service->add_subcommand(
      "wait",
      "wait until a service reaches a state; print its status as JSON (exit 1: not reached)");
  c.wait->add_option("name", f.name, "the service's name")->required();
  c.wait->add_option("--until", f.until, "ready, stopped, exited or failed")
      ->required()
      ->check(CLI::IsMember({"ready", "stopped", "exited", "failed"}));
  c.wait->add_option("--timeout", f.timeout, "seconds to wait at most (default: the daemon's)")
      ->check(CLI::Range(0.0, 1e9));
  c.logs = service->add_subcommand("logs", "print a service's output kept so far, byte-exact");
  c.logs->add_option("name", f.name, "the service's name")->required();
  c.logs->add_flag("-f,--follow", f.follow, "keep printing new output until the service ends");
  c.logs->add_option("--tail", f.tail, "start with the last BYTES bytes only")
      ->transform(whole_number());
  c.logs->add_option("--stream", f.stream, "stdout, stderr or both (default)")
      ->check(CLI::IsMember({"stdout", "stderr", "both"}));
}

void add_manage_commands(CLI::App* service, ServiceFlags& f, ServiceCommands& c) {
  c.stop = service->add_subcommand(
      "stop", "stop a service (its stop signal, then SIGKILL after grace); print its status");
  c.stop->add_option("name", f.name, "the service's name")->required();
  c.restart = service->add_subcommand(
      "restart", "stop a service and start it again as a new generation; print its status");
  c.restart->add_option("name", f.name, "the service's name")->required();
  c.rm = service->add_subcommand("rm", "forget a service that does not run, and its log");
  c.rm->add_option("name", f.name, "the service's name")->required();
}

void put(json::object& o, const char* key, const std::optional<uint64_t>& value) {
  if (value) o[key] = *value;
}

json::object restart_params(const ServiceFlags& f) {
  json::object r;
  if (!f.restart.empty()) r["policy"] = f.restart;
  put(r, "backoff_ms", f.backoff_ms);
  put(r, "backoff_max_ms", f.backoff_max_ms);
  put(r, "max_restarts", f.max_restarts);
  put(r, "window_ms", f.window_ms);
  return r;
}

json::object readiness_params(const ServiceFlags& f) {
  json::object r;
  if (f.ready_tcp) r["tcp"] = json::object{{"port", *f.ready_tcp}, {"host", "127.0.0.1"}};
  if (!f.ready_http.empty()) r["http"] = json::object{{"url", f.ready_http}};
  if (!f.ready_file.empty()) r["file"] = json::object{{"path", f.ready_file}};
  if (!f.ready_cmd.empty()) r["command"] = json::object{{"command", f.ready_cmd}};
  const bool probe = !r.empty();
  put(r, "initial_delay_ms", f.ready_delay_ms);
  put(r, "period_ms", f.ready_period_ms);
  put(r, "timeout_ms", f.ready_timeout_ms);
  put(r, "start_period_ms", f.start_period_ms);
  if (!probe && !r.empty())
    die(kUsage,
        "the --ready-*-ms and --start-period-ms options need a probe: --ready-tcp, "
        "--ready-http, --ready-file or --ready-cmd");
  return r;
}

json::object start_params(const ServiceFlags& f) {
  json::object p{{"name", f.name}};
  if (!f.line.empty()) {
    p["command"] = f.line;
    p["shell"] = true;
  } else if (!f.command.empty()) {
    add_program(p, f.command);
  } else {
    die(kUsage,
        "service start needs a command: service start NAME -- PROG ARGS..., "
        "or service start NAME --sh 'shell line'");
  }
  if (!f.env.empty()) p["env"] = env_params(f.env);
  if (!f.cwd.empty()) p["working_dir"] = f.cwd;
  if (!f.session.empty()) p["session_id"] = f.session;
  if (json::object r = restart_params(f); !r.empty()) p["restart"] = std::move(r);
  if (json::object r = readiness_params(f); !r.empty()) p["readiness"] = std::move(r);
  json::object stop;
  if (!f.stop_signal.empty()) stop["signal"] = f.stop_signal;
  put(stop, "grace_ms", f.stop_grace_ms);
  if (!stop.empty()) p["stop"] = std::move(stop);
  put(p, "log_bytes", f.log_bytes);
  if (f.wait_ready) p["wait_ready"] = true;
  return p;
}

int print_answer(const json::object& r) {
  std::cout << json::serialize(r) << "\n";
  return 0;
}

int wait_service(Client& client, const ServiceFlags& f) {
  json::object p{{"name", f.name}, {"until", f.until}};
  if (f.timeout) p["timeout"] = *f.timeout;
  json::object r = client.call_resending("service_wait", p);
  print_answer(r);
  if (r.at("reached").as_bool()) return 0;
  std::fprintf(stderr, "shell-pool: service %s is %s, not %s\n", f.name.c_str(),
               std::string(r.at("state").as_string()).c_str(), f.until.c_str());
  return kNotReached;
}

// Writes the service's output to our stdout (both streams interleaved, as
// the daemon kept them, unless --stream picks one): without --follow until
// a read finds nothing new, with it until the service has ended and all
// its output was read.
int print_service_logs(Client& client, const ServiceFlags& f) {
  json::object p{{"name", f.name}, {"max_bytes", kLogChunk}};
  if (f.tail) p["tail_bytes"] = *f.tail;
  if (!f.stream.empty()) p["stream"] = f.stream;
  if (f.follow) p["wait"] = kFollowWait;
  for (;;) {
    json::object r = client.call_resending("service_logs", p);
    // The log is a ring: a reader slower than the service loses the oldest.
    if (const auto lost = r.at("lost_bytes").to_number<int64_t>(); lost > 0)
      std::fprintf(stderr,
                   "shell-pool: %lld bytes of the log were overwritten before they were read\n",
                   static_cast<long long>(lost));
    const std::string data = bytes_of(r.at("data"));
    write_all(1, data);
    if (r.at("eof").as_bool() || (!f.follow && data.empty())) return 0;
    // Later reads go on from where this one ended, not from a new tail.
    p.erase("tail_bytes");
    p["cursor"] = r.at("next_cursor");
  }
}

}  // namespace

ServiceCommands add_service_commands(CLI::App& app, ServiceFlags& f) {
  ServiceCommands c{};
  c.all = app.add_subcommand(
      "service",
      "long-running commands the daemon keeps up by name: start, stop, restart, status, list, "
      "logs, wait, rm");
  c.all->require_subcommand(1);
  c.start = c.all->add_subcommand(
      "start",
      "start a service (or find the one of that name) and print its state as JSON:\n"
      "  service start NAME [options] -- PROG ARGS...   or   service start NAME [options] --sh "
      "'shell line'");
  add_command_options(c.start, f);
  add_restart_options(c.start, f);
  add_readiness_options(c.start, f);
  add_stop_options(c.start, f);
  add_manage_commands(c.all, f, c);
  add_read_commands(c.all, f, c);
  return c;
}

int run_service_command(Client& client, const ServiceFlags& f, const ServiceCommands& c) {
  if (*c.start) return print_answer(client.call("service_start", start_params(f)));
  if (*c.stop) return print_answer(client.call("service_stop", {{"name", f.name}}));
  if (*c.restart) return print_answer(client.call("service_restart", {{"name", f.name}}));
  if (*c.rm) return print_answer(client.call("service_remove", {{"name", f.name}}));
  if (*c.status) return print_answer(client.call_resending("service_status", {{"name", f.name}}));
  if (*c.list) return print_answer(client.call_resending("service_list", {}));
  if (*c.wait) return wait_service(client, f);
  if (*c.logs) return print_service_logs(client, f);
  return 0;
}

}  // namespace sp::cli
