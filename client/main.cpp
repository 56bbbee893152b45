// shell-pool: the command-line client of shell-poold. Streams a command's
// output as it comes (byte-exact: it asks for base64) and exits with the
// command's exit code; submits detached jobs and finds them again; manages
// sessions. Only wires flags to requests.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <string>

#include "client/client.h"
#include "common/paths.h"

using namespace sp::cli;

namespace {

json::object env_params(const std::vector<std::string>& env) {
  json::object o;
  for (const auto& kv : env) {
    size_t eq = kv.find('=');
    if (eq == 0 || eq == std::string::npos) die(kUsage, "--env takes NAME=value, got: " + kv);
    o[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return o;
}

int run_job(Client& client, json::object params) {
  params["output_encoding"] = "base64";
  client.send("execute_stream", std::move(params));
  for (;;) {
    json::object r = client.next();
    std::string type = json::value_to<std::string>(r.at("type"));
    if (type == "stdout" || type == "stderr") {
      write_all(type == "stdout" ? 1 : 2, from_base64(r.at("data")));
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
    json::object params{{"job_id", id},
                        {"stream", stream},
                        {"cursor", cursor},
                        {"max_bytes", 1 << 20},
                        {"output_encoding", "base64"}};
    if (follow) params["wait"] = 30;
    json::object r = client.call_resending("job_output", params);
    if (stream == "both") {
      for (const json::value& chunk : r.at("chunks").as_array()) {
        const json::object& c = chunk.as_object();
        write_all(c.at("stream") == "stderr" ? 2 : 1, from_base64(c.at("data")));
      }
    } else {
      write_all(stream == "stderr" ? 2 : 1, from_base64(r.at("data")));
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "shell-pool: run commands through shell-poold.\n"
      "Exit status of run, exec and wait: the command's own; 128+N if killed by signal N;\n"
      "124 timed out; 125 cancelled or lost; 127 could not start; 69 no daemon;\n"
      "75 wait --timeout ran out first.",
      "shell-pool"};
  app.require_subcommand(1);
  std::string socket = sp::default_socket_path();
  app.add_option("--socket", socket, "daemon socket")->capture_default_str();

  double timeout = 0;
  std::string cwd, session;
  std::vector<std::string> env, command;
  auto job_options = [&](CLI::App* sub) {
    sub->add_option("--timeout", timeout, "seconds (fractions ok); 0: none");
    sub->add_option("--cwd", cwd, "working directory of the command");
    sub->add_option("--session", session, "session id whose env_vars apply");
    sub->add_option("--env", env, "NAME=value for the command (repeatable)");
  };
  CLI::App* exec =
      app.add_subcommand("exec", "run a program with arguments, no shell: exec -- CMD ARGS...");
  job_options(exec);
  exec->add_option("command", command, "program and its arguments (after --)")->required();
  exec->positionals_at_end();  // exec --timeout 1 -- ls -l: everything after -- is the command
  std::string line;
  CLI::App* run = app.add_subcommand("run", "run a shell line with /bin/sh -c: run 'CMD | ...'");
  job_options(run);
  run->add_option("line", line, "shell command line")->required();

  // Detached jobs.
  std::string id, job_id, stream = "both", state, signal;
  double wait_timeout = -1;
  bool follow = false, as_json = false;
  uint64_t grace_ms = 0;
  CLI::App* submit = app.add_subcommand(
      "submit",
      "start a detached job and print its job id: submit 'shell line', or submit -- PROG ARGS...");
  job_options(submit);
  submit->add_option("--id", job_id,
                     "your own job id (letters, digits, . _ : -): submitting it again is a no-op");
  submit->add_option("command", command, "one word: a shell line; several: a program and args")
      ->required();
  submit->positionals_at_end();
  CLI::App* status = app.add_subcommand("status", "print a job's status as JSON");
  status->add_option("job_id", id)->required();
  CLI::App* wait =
      app.add_subcommand("wait", "wait for a job, print its output and exit with its exit status");
  wait->add_option("job_id", id)->required();
  wait->add_option("--timeout", wait_timeout, "seconds to wait at most (then exit 75)");
  CLI::App* logs = app.add_subcommand("logs", "print a job's output so far");
  logs->add_option("job_id", id)->required();
  logs->add_flag("-f,--follow", follow, "keep printing until the job ends");
  logs->add_option("--stream", stream, "stdout, stderr or both")
      ->check(CLI::IsMember({"stdout", "stderr", "both"}))
      ->capture_default_str();
  CLI::App* cancel = app.add_subcommand("cancel", "stop a job: a signal, then SIGKILL after grace");
  cancel->add_option("job_id", id)->required();
  cancel->add_option("--signal", signal, "signal to send first (default TERM)");
  cancel->add_option("--grace-ms", grace_ms, "ms before SIGKILL (default: the daemon's)");
  CLI::App* sig = app.add_subcommand("signal", "send a signal to a running job");
  sig->add_option("job_id", id)->required();
  sig->add_option("signal", signal, "INT, TERM, HUP, USR1, ... or a number")->required();
  CLI::App* jobs = app.add_subcommand("jobs", "list detached jobs");
  jobs->add_option("--state", state, "only jobs in this state (running, exited, ...)");
  jobs->add_option("--session", session, "only jobs of this session");
  jobs->add_flag("--json", as_json, "print the list as JSON");
  CLI::App* forget = app.add_subcommand("forget", "drop a finished job and its output");
  forget->add_option("job_id", id)->required();

  CLI::App* sess = app.add_subcommand("session", "create, list or destroy sessions");
  sess->require_subcommand(1);
  std::string name;
  std::vector<std::string> session_env;
  CLI::App* create = sess->add_subcommand("create", "create a session; prints its id");
  create->add_option("--name", name, "a name for people");
  create->add_option("--env", session_env, "NAME=value (repeatable)");
  CLI::App* list = sess->add_subcommand("list", "list sessions as JSON");
  CLI::App* destroy = sess->add_subcommand("destroy", "destroy a session");
  destroy->add_option("session_id", id)->required();

  CLI11_PARSE(app, argc, argv);

  Client client(socket);
  auto params = [&]() {
    json::object p;
    if (timeout > 0) p["timeout"] = timeout;
    if (!cwd.empty()) p["working_dir"] = cwd;
    if (!session.empty()) p["session_id"] = session;
    if (!env.empty()) p["env"] = env_params(env);
    return p;
  };
  auto program = [&](json::object& p) {
    p["command"] = command.front();
    json::array args;
    for (size_t i = 1; i < command.size(); ++i) args.emplace_back(command[i]);
    p["args"] = std::move(args);
    p["shell"] = false;
  };
  if (*exec) {
    if (command.empty()) die(kUsage, "exec needs a command: shell-pool exec -- CMD ARGS...");
    json::object p = params();
    program(p);
    return run_job(client, std::move(p));
  }
  if (*run) {
    json::object p = params();
    p["command"] = line;
    p["shell"] = true;
    return run_job(client, std::move(p));
  }
  if (*submit) {
    json::object p = params();
    if (command.size() == 1) {
      p["command"] = command.front();
      p["shell"] = true;
    } else {
      program(p);
    }
    if (!job_id.empty()) p["job_id"] = job_id;
    std::cout << json::value_to<std::string>(client.call("job_submit", std::move(p)).at("job_id"))
              << "\n";
    return 0;
  }
  if (*status) {
    std::cout << json::serialize(client.call("job_status", {{"job_id", id}})) << "\n";
    return 0;
  }
  if (*wait) {
    json::object p{{"job_id", id}, {"output_encoding", "base64"}};
    if (wait_timeout >= 0) p["timeout"] = wait_timeout;
    json::object r = client.call_resending("job_wait", p);
    if (r.at("finished_at_ms").is_null()) {  // the wait ran out first
      std::fprintf(stderr, "shell-pool: job %s is still %s\n", id.c_str(),
                   std::string(r.at("state").as_string()).c_str());
      return kStillRunning;
    }
    if (const json::value* results = r.if_contains("results")) {  // a plan: each step's output
      auto print_step = [](const json::object& step) {
        write_all(1, from_base64(step.at("stdout")));
        write_all(2, from_base64(step.at("stderr")));
        std::string ended(step.at("state").as_string());
        if (ended != "exited" || step.at("exit_code") != 0)
          std::fprintf(stderr, "shell-pool: step %s: %s\n",
                       std::string(step.at("name").as_string()).c_str(), ended.c_str());
      };
      if (results->is_array())
        for (const json::value& step : results->as_array()) print_step(step.as_object());
      if (results->is_object())
        for (const auto& step : results->as_object()) print_step(step.value().as_object());
      return exit_code_of(r);
    }
    write_all(1, from_base64(r.at("stdout")));
    write_all(2, from_base64(r.at("stderr")));
    if (r.at("truncated").as_bool())
      std::fprintf(stderr,
                   "shell-pool: output truncated; `shell-pool logs %s` has all that "
                   "was kept\n",
                   id.c_str());
    return exit_code_of(r);
  }
  if (*logs) {
    print_logs(client, id, stream, follow);
    return 0;
  }
  if (*cancel) {
    json::object p{{"job_id", id}};
    if (!signal.empty()) p["signal"] = signal;
    if (cancel->count("--grace-ms")) p["grace_ms"] = grace_ms;
    json::object r = client.call("job_cancel", std::move(p));
    std::string now = json::value_to<std::string>(r.at("state"));
    // Still stopping (its grace runs): say so rather than "running".
    std::cout << (r.at("cancelled") == true && now == "running" ? "cancelling" : now) << "\n";
    return 0;
  }
  if (*sig) {
    client.call("job_signal", {{"job_id", id}, {"signal", signal}});
    return 0;
  }
  if (*jobs) {
    json::object p;
    if (!state.empty()) p["state"] = state;
    if (!session.empty()) p["session_id"] = session;
    json::object r = client.call("job_list", std::move(p));
    if (as_json) {
      std::cout << json::serialize(r.at("jobs")) << "\n";
    } else {
      print_jobs(r.at("jobs").as_array());
    }
    return 0;
  }
  if (*forget) {
    client.call("job_forget", {{"job_id", id}});
    return 0;
  }
  if (*create) {
    json::object p{{"name", name}};
    p["env_vars"] = env_params(session_env);
    std::cout << json::value_to<std::string>(
                     client.call("session_create", std::move(p)).at("session_id"))
              << "\n";
  } else if (*list) {
    std::cout << json::serialize(client.call("session_list", {}).at("sessions")) << "\n";
  } else if (*destroy) {
    client.call("session_destroy", {{"session_id", id}});
  }
  return 0;
}
