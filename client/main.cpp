// shell-pool: the command-line client of shell-poold. Streams a command's
// output as it comes (byte-exact: MessagePack-RPC carries it as bytes) and exits with the
// command's exit code, here or on remote hosts; submits detached jobs and
// finds them again; manages sessions, supervised services and remote hosts.
// Only wires flags to requests.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "client/client.h"
#include "client/files.h"
#include "client/hosts.h"
#include "client/interactive.h"
#include "client/services.h"
#include "common/paths.h"

using namespace sp::cli;

namespace {

int run_job(Client& client, json::object params) {
  client.send("execute_stream", std::move(params));
  for (;;) {
    json::object r = client.next();
    std::string type = json::value_to<std::string>(r.at("type"));
    if (type == "stdout" || type == "stderr") {
      write_all(type == "stdout" ? 1 : 2, bytes_of(r.at("data")));
      continue;
    }
    return exit_code_of(r);
  }
}

// Writes a job's output from `cursor` on (stdout and stderr each to ours);
// with `follow`, waits for more until the job ends. Returns the final state.
std::string print_logs(Client& client, const std::string& id, const std::string& stream,
                       bool follow) {
  uint64_t cursor = 0;
  for (;;) {
    json::object params{
        {"job_id", id}, {"stream", stream}, {"cursor", cursor}, {"max_bytes", 1 << 20}};
    if (follow) params["wait"] = 30;
    json::object r = client.call_resending("job_output", params);
    if (stream == "both") {
      for (const json::value& chunk : r.at("chunks").as_array()) {
        const json::object& c = chunk.as_object();
        write_all(c.at("stream") == "stderr" ? 2 : 1, bytes_of(c.at("data")));
      }
    } else {
      write_all(stream == "stderr" ? 2 : 1, bytes_of(r.at("data")));
    }
    cursor = uint64_t(r.at("next_cursor").to_number<int64_t>());
    if (r.at("eof").as_bool() || (!follow && r.at("data").as_string().empty()))
      return std::string(r.at("state").as_string());
  }
}

void print_jobs(const json::array& jobs) {
  std::printf("%-24s %-10s %5s %-10s %s\n", "JOB_ID", "STATE", "EXIT", "DURATION", "COMMAND");
  for (const json::value& v : jobs) {
    const json::object& j = v.as_object();
    std::string exit = j.at("exit_code").is_null() ? "-" : json::serialize(j.at("exit_code"));
    if (j.at("signal").is_string()) exit = std::string(j.at("signal").as_string()).substr(3);
    std::string duration = std::to_string(j.at("duration_ms").to_number<int64_t>()) + "ms";
    std::printf("%-24s %-10s %5s %-10s %s\n", std::string(j.at("job_id").as_string()).c_str(),
                std::string(j.at("state").as_string()).c_str(), exit.c_str(), duration.c_str(),
                std::string(j.at("command").as_string()).c_str());
  }
}

// Every flag's value; the options of all subcommands are bound to these.
struct Flags {
  std::string socket = sp::default_socket_path();
  // exec, run and submit.
  double timeout = 0;
  std::string cwd, session;
  std::vector<std::string> env, command;
  std::string line;
  bool tty = false, no_stdin = false;
  std::string shell;
  // Detached jobs.
  std::string id, job_id, stream = "both", state, signal;
  double wait_timeout = -1;
  bool follow = false, as_json = false;
  uint64_t grace_ms = 0;
  // Files.
  std::vector<std::string> cp_paths;
  std::string remote_dir = ".";
  bool recursive = false;
  // Sessions.
  std::string name;
  std::vector<std::string> session_env;
  // service ... (services.h).
  ServiceFlags service;
  // run, exec and submit on remote hosts; host ... (hosts.h).
  TargetFlags target;
  HostFlags host;
};

// The subcommands; after parsing, the one given is true.
struct Commands {
  CLI::App *exec, *run, *submit, *status, *wait, *logs, *cancel, *sig, *jobs, *forget;
  CLI::App *create, *list, *destroy;  // session ...
  CLI::App *reload, *health, *metrics, *shell;
  CLI::App *cp, *ls;
  ServiceCommands service;  // service ...
  HostCommands host;        // host ...
};

constexpr const char* kAbout =
    "shell-pool: run commands through shell-poold.\n"
    "Exit status of run, exec and wait: the command's own; 128+N if killed by signal N;\n"
    "124 timed out; 125 cancelled or lost; 127 could not start; 69 no daemon;\n"
    "75 wait --timeout ran out first. service wait: 0 reached, 1 not.\n"
    "run and exec --hosts: 0 all succeeded, else the worst exit code of the hosts that ran it,\n"
    "255 if only connections failed. host check: 0 ok, 1 not.\n"
    "reload: 0 applied, 1 refused (the old configuration stays).\n"
    "run and exec pass their stdin to the command when it is not a terminal (-n: never);\n"
    "-t runs it on a terminal (a PTY), in raw mode when stdin is one, like `docker exec -it`.";

void add_job_options(CLI::App* sub, Flags& f) {
  sub->add_option("--timeout", f.timeout, "seconds (fractions ok); 0: none");
  sub->add_option("--cwd", f.cwd, "working directory of the command");
  sub->add_option("--session", f.session, "session id whose env_vars apply");
  sub->add_option("--env", f.env, "NAME=value for the command (repeatable)");
}

void add_stdin_options(CLI::App* sub, Flags& f) {
  sub->add_flag("-t,--tty", f.tty,
                "run it on a terminal (PTY) of our size; keys go to it as typed");
  sub->add_flag("-n,--no-stdin", f.no_stdin, "do not pass our stdin (it is /dev/null)");
}

void add_run_commands(CLI::App& app, Flags& f, Commands& c) {
  c.exec =
      app.add_subcommand("exec", "run a program with arguments, no shell: exec -- CMD ARGS...");
  add_job_options(c.exec, f);
  add_stdin_options(c.exec, f);
  add_target_options(c.exec, f.target);
  c.exec->add_option("command", f.command, "program and its arguments (after --)")->required();
  c.exec->positionals_at_end();  // exec --timeout 1 -- ls -l: everything after -- is the command
  c.run = app.add_subcommand("run", "run a shell line with /bin/sh -c: run 'CMD | ...'");
  add_job_options(c.run, f);
  add_stdin_options(c.run, f);
  add_target_options(c.run, f.target);
  c.run->add_option("line", f.line, "shell command line")->required();
  c.shell = app.add_subcommand(
      "shell", "an interactive shell through the daemon, in this terminal (exit: its exit code)");
  add_job_options(c.shell, f);
  c.shell->add_option("--shell", f.shell, "the shell (default: the daemon's $SHELL, bash, sh)");
}

void add_submit_command(CLI::App& app, Flags& f, Commands& c) {
  c.submit = app.add_subcommand(
      "submit",
      "start a detached job and print its job id: submit 'shell line', or submit -- PROG ARGS...");
  add_job_options(c.submit, f);
  add_target_options(c.submit, f.target);
  c.submit->add_option(
      "--id", f.job_id,
      "your own job id (letters, digits, . _ : -): submitting it again is a no-op");
  c.submit->add_option("command", f.command, "one word: a shell line; several: a program and args")
      ->required();
  c.submit->positionals_at_end();
}

// The subcommands that read a detached job's state and output.
void add_job_read_commands(CLI::App& app, Flags& f, Commands& c) {
  c.status = app.add_subcommand("status", "print a job's status as JSON");
  c.status->add_option("job_id", f.id)->required();
  c.wait =
      app.add_subcommand("wait", "wait for a job, print its output and exit with its exit status");
  c.wait->add_option("job_id", f.id)->required();
  c.wait->add_option("--timeout", f.wait_timeout, "seconds to wait at most (then exit 75)");
  c.logs = app.add_subcommand("logs", "print a job's output so far");
  c.logs->add_option("job_id", f.id)->required();
  c.logs->add_flag("-f,--follow", f.follow, "keep printing until the job ends");
  c.logs->add_option("--stream", f.stream, "stdout, stderr or both")
      ->check(CLI::IsMember({"stdout", "stderr", "both"}))
      ->capture_default_str();
}

// The subcommands that stop, list and drop detached jobs.
void add_job_manage_commands(CLI::App& app, Flags& f, Commands& c) {
  c.cancel = app.add_subcommand("cancel", "stop a job: a signal, then SIGKILL after grace");
  c.cancel->add_option("job_id", f.id)->required();
  c.cancel->add_option("--signal", f.signal, "signal to send first (default TERM)");
  c.cancel->add_option("--grace-ms", f.grace_ms, "ms before SIGKILL (default: the daemon's)");
  c.sig = app.add_subcommand("signal", "send a signal to a running job");
  c.sig->add_option("job_id", f.id)->required();
  c.sig->add_option("signal", f.signal, "INT, TERM, HUP, USR1, ... or a number")->required();
  c.jobs = app.add_subcommand("jobs", "list detached jobs");
  c.jobs->add_option("--state", f.state, "only jobs in this state (running, exited, ...)");
  c.jobs->add_option("--session", f.session, "only jobs of this session");
  c.jobs->add_flag("--json", f.as_json, "print the list as JSON");
  c.forget = app.add_subcommand("forget", "drop a finished job and its output");
  c.forget->add_option("job_id", f.id)->required();
}

void add_session_commands(CLI::App& app, Flags& f, Commands& c) {
  CLI::App* sess = app.add_subcommand("session", "create, list or destroy sessions");
  sess->require_subcommand(1);
  c.create = sess->add_subcommand("create", "create a session; prints its id");
  c.create->add_option("--name", f.name, "a name for people");
  c.create->add_option("--env", f.session_env, "NAME=value (repeatable)");
  c.list = sess->add_subcommand("list", "list sessions as JSON");
  c.destroy = sess->add_subcommand("destroy", "destroy a session");
  c.destroy->add_option("session_id", f.id)->required();
}

// Binds every flag to `f`; the order here is the order in --help.
Commands add_flags(CLI::App& app, Flags& f) {
  app.require_subcommand(1);
  app.add_option("--socket", f.socket, "daemon socket")->capture_default_str();
  Commands c{};
  add_run_commands(app, f, c);
  add_submit_command(app, f, c);
  add_job_read_commands(app, f, c);
  add_job_manage_commands(app, f, c);
  add_session_commands(app, f, c);
  c.service = add_service_commands(app, f.service);
  c.host = add_host_commands(app, f.host);
  c.cp = app.add_subcommand("cp",
                            "copy a file to or from the daemon's files root: cp LOCAL :REMOTE, "
                            "cp :REMOTE LOCAL (- is stdin or stdout)");
  c.cp->add_option("paths", f.cp_paths, "FROM TO")->required()->expected(2);
  c.ls = app.add_subcommand("ls", "list a directory beneath the daemon's files root");
  c.ls->add_option("path", f.remote_dir, "relative to the files root (: optional)")
      ->capture_default_str();
  c.ls->add_flag("-R,--recursive", f.recursive, "list the whole tree");
  c.ls->add_flag("--json", f.as_json, "print the entries as JSON");
  c.reload = app.add_subcommand(
      "reload", "reload the daemon's configuration; returns when the reload is done");
  c.health = app.add_subcommand("health", "print the daemon's pool state and counters as JSON");
  c.metrics =
      app.add_subcommand("metrics", "print the daemon's metrics (Prometheus text format 0.0.4)");
  return c;
}

// The params the job options (--timeout, --cwd, --session, --env) ask for.
json::object job_params(const Flags& f) {
  json::object p;
  if (f.timeout > 0) p["timeout"] = f.timeout;
  if (!f.cwd.empty()) p["working_dir"] = f.cwd;
  if (!f.session.empty()) p["session_id"] = f.session;
  if (!f.env.empty()) p["env"] = env_params(f.env);
  return p;
}

// A PTY of our terminal's size and $TERM (or the daemon's defaults).
json::object pty_params() {
  json::object pty;
  if (auto size = terminal_size()) {
    pty["rows"] = size->first;
    pty["cols"] = size->second;
  }
  if (const char* term = std::getenv("TERM"); term && *term) pty["term"] = term;
  return pty;
}

// With our stdin, or on a terminal: a detached job we attach to; else
// execute_stream. On several hosts: their lines, prefixed, and a summary.
int run_or_attach(Client& client, const Flags& f, json::object p) {
  if (add_target_params(p, f.target)) {
    // One terminal and one stdin cannot be shared among hosts.
    if (f.tty) die(kUsage, "-t does not go with --hosts");
    return run_fan_out(client, std::move(p));
  }
  const bool pass_stdin = !f.no_stdin && !::isatty(0);
  if (!f.tty && !pass_stdin) return run_job(client, std::move(p));
  p["stdin_open"] = true;
  if (f.tty) p["pty"] = pty_params();
  const std::string id =
      json::value_to<std::string>(client.call("job_submit", std::move(p)).at("job_id"));
  return attach(client, id, {f.tty, false});
}

int exec_program(Client& client, const Flags& f) {
  if (f.command.empty()) die(kUsage, "exec needs a command: shell-pool exec -- CMD ARGS...");
  json::object p = job_params(f);
  add_program(p, f.command);
  return run_or_attach(client, f, std::move(p));
}

int run_line(Client& client, const Flags& f) {
  json::object p = job_params(f);
  p["command"] = f.line;
  p["shell"] = true;
  return run_or_attach(client, f, std::move(p));
}

int open_shell(Client& client, const Flags& f) {
  json::object p = job_params(f);
  p.erase("timeout");
  json::object pty = pty_params();
  for (const auto& kv : pty) p[kv.key()] = kv.value();
  if (!f.shell.empty()) p["shell"] = f.shell;
  const std::string id =
      json::value_to<std::string>(client.call("shell_open", std::move(p)).at("job_id"));
  return attach(client, id, {true, true});
}

int submit_job(Client& client, const Flags& f) {
  json::object p = job_params(f);
  if (f.command.size() == 1) {
    p["command"] = f.command.front();
    p["shell"] = true;
  } else {
    add_program(p, f.command);
  }
  if (!f.job_id.empty()) p["job_id"] = f.job_id;
  const bool fan_out = add_target_params(p, f.target);
  json::object r = client.call("job_submit", std::move(p));
  // Several hosts: the plan's id and each host's job id.
  if (fan_out)
    std::cout << json::serialize(r) << "\n";
  else
    std::cout << json::value_to<std::string>(r.at("job_id")) << "\n";
  return 0;
}

int show_status(Client& client, const Flags& f) {
  std::cout << json::serialize(client.call("job_status", {{"job_id", f.id}})) << "\n";
  return 0;
}

// A plan's result: each step's output, and a line for each step that failed.
int print_plan(const json::object& r, const json::value& results) {
  auto print_step = [](const json::object& step) {
    write_all(1, bytes_of(step.at("stdout")));
    write_all(2, bytes_of(step.at("stderr")));
    std::string ended(step.at("state").as_string());
    if (ended != "exited" || step.at("exit_code") != 0)
      std::fprintf(stderr, "shell-pool: step %s: %s\n",
                   std::string(step.at("name").as_string()).c_str(), ended.c_str());
  };
  if (results.is_array())
    for (const json::value& step : results.as_array()) print_step(step.as_object());
  if (results.is_object())
    for (const auto& step : results.as_object()) print_step(step.value().as_object());
  return exit_code_of(r);
}

// A finished job's result: its output, and whether some was dropped.
int print_result(const json::object& r, const std::string& id) {
  write_all(1, bytes_of(r.at("stdout")));
  write_all(2, bytes_of(r.at("stderr")));
  if (r.at("truncated").as_bool())
    std::fprintf(stderr,
                 "shell-pool: output truncated; `shell-pool logs %s` has all that "
                 "was kept\n",
                 id.c_str());
  return exit_code_of(r);
}

int wait_job(Client& client, const Flags& f) {
  json::object p{{"job_id", f.id}};
  if (f.wait_timeout >= 0) p["timeout"] = f.wait_timeout;
  json::object r = client.call_resending("job_wait", p);
  if (r.at("finished_at_ms").is_null()) {  // the wait ran out first
    std::fprintf(stderr, "shell-pool: job %s is still %s\n", f.id.c_str(),
                 std::string(r.at("state").as_string()).c_str());
    return kStillRunning;
  }
  if (const json::value* results = r.if_contains("results")) return print_plan(r, *results);
  return print_result(r, f.id);
}

int show_logs(Client& client, const Flags& f) {
  print_logs(client, f.id, f.stream, f.follow);
  return 0;
}

int cancel_job(Client& client, const Flags& f, bool grace_given) {
  json::object p{{"job_id", f.id}};
  if (!f.signal.empty()) p["signal"] = f.signal;
  if (grace_given) p["grace_ms"] = f.grace_ms;
  json::object r = client.call("job_cancel", std::move(p));
  std::string now = json::value_to<std::string>(r.at("state"));
  // Still stopping (its grace runs): say so rather than "running".
  std::cout << (r.at("cancelled") == true && now == "running" ? "cancelling" : now) << "\n";
  return 0;
}

int signal_job(Client& client, const Flags& f) {
  client.call("job_signal", {{"job_id", f.id}, {"signal", f.signal}});
  return 0;
}

int list_jobs(Client& client, const Flags& f) {
  json::object p;
  if (!f.state.empty()) p["state"] = f.state;
  if (!f.session.empty()) p["session_id"] = f.session;
  json::object r = client.call("job_list", std::move(p));
  if (f.as_json) {
    std::cout << json::serialize(r.at("jobs")) << "\n";
  } else {
    print_jobs(r.at("jobs").as_array());
  }
  return 0;
}

int forget_job(Client& client, const Flags& f) {
  client.call("job_forget", {{"job_id", f.id}});
  return 0;
}

int create_session(Client& client, const Flags& f) {
  json::object p{{"name", f.name}};
  p["env_vars"] = env_params(f.session_env);
  std::cout << json::value_to<std::string>(
                   client.call("session_create", std::move(p)).at("session_id"))
            << "\n";
  return 0;
}

int list_sessions(Client& client) {
  std::cout << json::serialize(client.call("session_list", {}).at("sessions")) << "\n";
  return 0;
}

int destroy_session(Client& client, const Flags& f) {
  client.call("session_destroy", {{"session_id", f.id}});
  return 0;
}

int reload_daemon(Client& client) {
  std::cout << json::value_to<std::string>(client.call("reload", {}).at("message")) << "\n";
  return 0;
}

int show_health(Client& client) {
  std::cout << json::serialize(client.call("health", {})) << "\n";
  return 0;
}

int show_metrics(Client& client) {
  std::cout << json::value_to<std::string>(client.call("metrics", {}).at("text"));
  return 0;
}

// Runs the subcommand that was given.
int run_command(Client& client, const Flags& f, const Commands& c) {
  if (*c.exec) return exec_program(client, f);
  if (*c.run) return run_line(client, f);
  if (*c.submit) return submit_job(client, f);
  if (*c.status) return show_status(client, f);
  if (*c.wait) return wait_job(client, f);
  if (*c.logs) return show_logs(client, f);
  if (*c.cancel) return cancel_job(client, f, c.cancel->count("--grace-ms") > 0);
  if (*c.sig) return signal_job(client, f);
  if (*c.jobs) return list_jobs(client, f);
  if (*c.forget) return forget_job(client, f);
  if (*c.service.all) return run_service_command(client, f.service, c.service);
  if (*c.host.all) return run_host_command(client, f.host, c.host);
  if (*c.create) return create_session(client, f);
  if (*c.list) return list_sessions(client);
  if (*c.destroy) return destroy_session(client, f);
  if (*c.reload) return reload_daemon(client);
  if (*c.health) return show_health(client);
  if (*c.metrics) return show_metrics(client);
  if (*c.shell) return open_shell(client, f);
  if (*c.cp) return copy_file(client, f.cp_paths[0], f.cp_paths[1]);
  if (*c.ls) {
    const std::string& p = f.remote_dir;
    return list_files(client,
                      p.size() > 1 && p[0] == ':' ? p.substr(1)
                      : p == ":"                  ? "."
                                                  : p,
                      f.recursive, f.as_json);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  CLI::App app{kAbout, "shell-pool"};
  Commands commands = add_flags(app, flags);
  CLI11_PARSE(app, argc, argv);
  Client client(flags.socket);
  return run_command(client, flags, commands);
}
