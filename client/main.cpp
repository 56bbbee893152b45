// shell-pool: the command-line client of shell-poold. Streams a command's
// output as it comes (byte-exact: it asks for base64) and exits with the
// command's exit code; manages sessions. Only wires flags to requests.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <cstdio>
#include <iostream>
#include <string>

#include "common/paths.h"
#include "common/unique_fd.h"
#include "frontend/utf8.h"

namespace json = boost::json;

namespace {

// Exit codes of the CLI itself (the command's own code otherwise).
constexpr int kUsage = 2;
constexpr int kNoDaemon = 69;    // EX_UNAVAILABLE
constexpr int kProtocol = 76;    // EX_PROTOCOL
constexpr int kTimedOut = 124;   // as timeout(1)
constexpr int kCannotRun = 127;  // as a shell for "not found"
constexpr int kLostOrCancelled = 125;

[[noreturn]] void die(int code, const std::string& message) {
  std::fprintf(stderr, "shell-pool: %s\n", message.c_str());
  std::exit(code);
}

class Client {
 public:
  explicit Client(const std::string& path) : path_(path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) die(kUsage, "socket path too long: " + path);
    std::memcpy(addr.sun_path, path.data(), path.size());
    fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd_ || ::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
      die(kNoDaemon, "cannot connect to shell-poold at " + path + ": " + std::strerror(errno) +
                         "\n  is the daemon running? start it with: shell-poold --socket " + path);
  }

  void send(const std::string& method, json::object params) {
    json::object req{
        {"jsonrpc", "2.0"}, {"id", 1}, {"method", method}, {"params", std::move(params)}};
    std::string line = json::serialize(req) + "\n";
    for (size_t off = 0; off < line.size();) {
      ssize_t n = ::send(fd_.get(), line.data() + off, line.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) die(kNoDaemon, std::string("lost the connection: ") + std::strerror(errno));
      off += size_t(n);
    }
  }

  // Next response line as JSON; dies on a closed connection.
  json::object next() {
    for (;;) {
      size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        boost::system::error_code ec;
        json::value v = json::parse(line, ec);
        if (ec || !v.is_object()) die(kProtocol, "unreadable answer from the daemon: " + line);
        json::object& o = v.as_object();
        if (auto* e = o.if_contains("error")) {
          const json::object& err = e->as_object();
          std::string msg = err.contains("message") ? json::value_to<std::string>(err.at("message"))
                                                    : json::serialize(err);
          die(kCannotRun, msg + " (code " + json::serialize(err.at("code")) + ")");
        }
        return o.at("result").as_object();
      }
      char chunk[65536];
      ssize_t n = ::recv(fd_.get(), chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) die(kNoDaemon, "the daemon closed the connection before the job ended");
      buf_.append(chunk, size_t(n));
    }
  }

 private:
  std::string path_;
  sp::UniqueFd fd_;
  std::string buf_;
};

void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) std::exit(kProtocol);  // our own stdout is gone
    data.remove_prefix(size_t(n));
  }
}

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
      auto bytes = sp::rpc::decode_base64(r.at("data").as_string());
      if (!bytes) die(kProtocol, "the daemon sent output that is not base64");
      write_all(type == "stdout" ? 1 : 2, *bytes);
      continue;
    }
    std::string status = r.contains("status") ? json::value_to<std::string>(r.at("status")) : "";
    if (auto* e = r.if_contains("error"); e && e->is_string())
      std::fprintf(stderr, "shell-pool: %s\n", e->as_string().c_str());
    if (status == "timed_out") return kTimedOut;
    if (status == "failed") return kCannotRun;
    if (status == "lost" || status == "cancelled") return kLostOrCancelled;
    if (auto* sig = r.if_contains("signal"); sig && sig->is_string()) {
      std::string name = json::value_to<std::string>(*sig).substr(3);
      for (int s = 1; s < 65; ++s)
        if (const char* a = sigabbrev_np(s); a && name == a) return 128 + s;
      return 128;
    }
    return int(r.at("exit_code").to_number<int64_t>());
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "shell-pool: run commands through shell-poold.\n"
      "Exit status: the command's own; 128+N if killed by signal N; 124 timed out;\n"
      "125 cancelled or lost; 127 could not start; 69 no daemon.",
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

  CLI::App* sess = app.add_subcommand("session", "create, list or destroy sessions");
  sess->require_subcommand(1);
  std::string name, id;
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
  if (*exec) {
    if (command.empty()) die(kUsage, "exec needs a command: shell-pool exec -- CMD ARGS...");
    json::object p = params();
    p["command"] = command.front();
    json::array args;
    for (size_t i = 1; i < command.size(); ++i) args.emplace_back(command[i]);
    p["args"] = std::move(args);
    p["shell"] = false;
    return run_job(client, std::move(p));
  }
  if (*run) {
    json::object p = params();
    p["command"] = line;
    p["shell"] = true;
    return run_job(client, std::move(p));
  }
  if (*create) {
    json::object p{{"name", name}};
    p["env_vars"] = env_params(session_env);
    client.send("session_create", std::move(p));
    std::cout << json::value_to<std::string>(client.next().at("session_id")) << "\n";
  } else if (*list) {
    client.send("session_list", {});
    std::cout << json::serialize(client.next().at("sessions")) << "\n";
  } else if (*destroy) {
    client.send("session_destroy", {{"session_id", id}});
    client.next();
  }
  return 0;
}
