#include "client/hosts.h"

#include "client/flags.h"

#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <utility>

#include "common/unique_fd.h"

namespace sp::cli {

namespace {

// A host command that failed: the daemon refused it, or a secret could not
// be read.
constexpr int kFailed = 1;
// A secret file longer than this is not a secret (a wrong path, /dev/zero):
// reading it whole would not end.
constexpr size_t kMaxSecretBytes = 64 * 1024;
// A partial line longer than this is printed as a line of its own: a host
// whose output never ends a line must not hold our memory without bound.
constexpr size_t kMaxPartialLine = 1 << 20;

std::string text_of(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  if (!v || v->is_null()) return "-";
  return v->is_string() ? std::string(v->as_string()) : json::serialize(*v);
}

// Control characters (a remote error's newlines) as spaces: one row, one line.
std::string one_line(std::string s) {
  for (char& ch : s)
    if (static_cast<unsigned char>(ch) < 0x20) ch = ' ';
  return s;
}

// "CODE (phase PHASE): MESSAGE" of an {code, phase, message} error object.
std::string describe_error(const json::object& e) {
  return text_of(e, "code") + " (phase " + text_of(e, "phase") + "): " + text_of(e, "message");
}

int print_json(const json::object& r) {
  std::cout << json::serialize(r) << "\n";
  return 0;
}

// The answer to a host request. A refusal ends the process with the
// daemon's message and code, as for every other command, but with kFailed
// (kUsage for invalid params): a host that exists or runs jobs is no reason
// to look like a command that could not start.
json::object call_host(Client& client, const std::string& method, json::object params) {
  std::string error;
  if (auto r = client.try_call(method, std::move(params), &error)) return std::move(*r);
  boost::system::error_code ec;
  json::value v = json::parse(error, ec);
  const json::object* e = !ec && v.is_object() ? &v.as_object() : nullptr;
  const json::value* message = e ? e->if_contains("message") : nullptr;
  const json::value* code = e ? e->if_contains("code") : nullptr;
  die(code && *code == -32602 ? kUsage : kFailed,
      (message && message->is_string() ? std::string(message->as_string()) : error) + " (code " +
          (code ? json::serialize(*code) : std::string("null")) + ")");
}

// ---- host add ----

struct Endpoint {
  std::string user, address;
  std::optional<uint16_t> port;
};

// [user@]address[:port]; an IPv6 address takes a port only in brackets
// ([::1]:2222), as in ssh's URIs, since its own colons would be ambiguous.
Endpoint parse_endpoint(const std::string& text) {
  Endpoint e;
  std::string rest = text;
  if (size_t at = rest.rfind('@'); at != std::string::npos) {
    e.user = rest.substr(0, at);
    rest.erase(0, at + 1);
    if (e.user.empty()) die(kUsage, "no user before the @ in " + text);
  }
  std::optional<std::string> port;
  if (!rest.empty() && rest[0] == '[') {
    const size_t close = rest.find(']');
    if (close == std::string::npos || (close + 1 < rest.size() && rest[close + 1] != ':'))
      die(kUsage, "expected [ADDRESS]:PORT, got: " + text);
    if (close + 1 < rest.size()) port = rest.substr(close + 2);
    rest = rest.substr(1, close - 1);
  } else if (size_t colon = rest.find(':');
             colon != std::string::npos && rest.find(':', colon + 1) == std::string::npos) {
    port = rest.substr(colon + 1);
    rest.erase(colon);
  }
  if (rest.empty()) die(kUsage, "no address in " + text);
  e.address = rest;
  if (port) {
    uint16_t n = 0;
    const char* end = port->data() + port->size();
    auto [at, ec] = std::from_chars(port->data(), end, n);
    if (ec != std::errc() || at != end || n == 0)
      die(kUsage, "the port must be 1..65535, got: " + *port);
    e.port = n;
  }
  return e;
}

// A path the daemon can open whatever its working directory.
std::string absolute(const std::string& path) {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::absolute(path, ec);
  return ec ? path : p.lexically_normal().string();
}

// All of `fd`, up to kMaxSecretBytes; with `line`, only up to the first line end.
std::string read_up_to(int fd, const std::string& what, bool line) {
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, line ? 1 : sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die(kFailed, "cannot read " + what + ": " + std::strerror(errno));
    if (n == 0 || (line && buf[0] == '\n')) return text;
    text.append(buf, size_t(n));
    if (text.size() > kMaxSecretBytes)
      die(kFailed, what + " holds more than " + std::to_string(kMaxSecretBytes) + " bytes");
  }
}

// A secret typed at the terminal, not echoed.
std::string prompt_secret(const std::string& prompt, const std::string& what) {
  termios saved{};
  const bool quiet = ::tcgetattr(0, &saved) == 0;
  if (quiet) {
    termios silent = saved;
    silent.c_lflag &= ~tcflag_t(ECHO);
    ::tcsetattr(0, TCSAFLUSH, &silent);
  }
  std::fprintf(stderr, "%s: ", prompt.c_str());
  std::string text = read_up_to(0, what, true);
  if (quiet) ::tcsetattr(0, TCSAFLUSH, &saved);
  std::fprintf(stderr, "\n");
  return text;
}

// The secret in file `path` ("-": our stdin, prompted for on a terminal),
// without the line end that echo or an editor leaves at its end.
std::string read_secret(const std::string& path, const std::string& flag,
                        const std::string& prompt) {
  const std::string what = flag + " " + path;
  std::string text;
  if (path == "-" && ::isatty(0)) return prompt_secret(prompt, what);
  if (path == "-") {
    text = read_up_to(0, what, false);
  } else {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) die(kFailed, "cannot open " + what + ": " + std::strerror(errno));
    text = read_up_to(fd.get(), what, false);
  }
  if (!text.empty() && text.back() == '\n') text.pop_back();
  if (!text.empty() && text.back() == '\r') text.pop_back();
  return text;
}

json::object auth_params(const HostFlags& f) {
  if (!f.key_file.empty()) {
    json::object a{{"key_file", absolute(f.key_file)}};
    if (!f.passphrase_file.empty())
      a["passphrase"] = read_secret(f.passphrase_file, "--passphrase-file", "Passphrase");
    return a;
  }
  if (f.agent) {
    json::object a;
    if (!f.agent_socket.empty()) a["agent_socket"] = absolute(f.agent_socket);
    return a;
  }
  if (!f.password_file.empty())
    return {{"password", read_secret(f.password_file, "--password-file", "Password")}};
  die(kUsage, "host add needs a way to log in: --key FILE, --agent or --password-file FILE");
}

void put(json::object& o, const char* key, const std::optional<uint64_t>& value) {
  if (value) o[key] = *value;
}

json::object add_params(const HostFlags& f) {
  const Endpoint e = parse_endpoint(f.address);
  const std::string user = f.user.empty() ? e.user : f.user;
  if (user.empty()) die(kUsage, "host add needs a user: --user USER, or USER@ADDRESS");
  json::object p{{"name", f.name}, {"address", e.address}, {"user", user}};
  if (f.port || e.port) p["port"] = f.port ? *f.port : *e.port;
  json::object key;
  if (!f.host_key.empty()) key["policy"] = f.host_key;
  if (!f.fingerprint.empty()) {
    key["fingerprint"] = f.fingerprint;
    if (f.host_key.empty()) key["policy"] = "pinned";
  }
  if (!key.empty()) p["host_key"] = std::move(key);
  put(p, "connect_timeout_ms", f.connect_timeout_ms);
  put(p, "keepalive_ms", f.keepalive_ms);
  put(p, "idle_timeout_ms", f.idle_timeout_ms);
  put(p, "max_connections", f.max_connections);
  p["auth"] = auth_params(f);  // last: a prompt comes after every usage error
  return p;
}

void add_auth_options(CLI::App* add, HostFlags& f) {
  const std::string group = "Login (one of --key, --agent, --password-file)";
  CLI::Option* key =
      add->add_option("--key", f.key_file, "private key FILE (the daemon reads it)")->group(group);
  add->add_option("--passphrase-file", f.passphrase_file,
                  "FILE holding the key's passphrase (-: stdin)")
      ->needs(key)
      ->group(group);
  CLI::Option* agent =
      add->add_flag("--agent", f.agent, "log in with the keys of an ssh-agent")->group(group);
  add->add_option("--agent-socket", f.agent_socket,
                  "the agent's socket (default: the daemon's $SSH_AUTH_SOCK)")
      ->needs(agent)
      ->group(group);
  CLI::Option* password =
      add->add_option("--password-file", f.password_file, "FILE holding the password (-: stdin)")
          ->group(group);
  key->excludes(agent)->excludes(password);
  agent->excludes(password);
}

void add_add_command(CLI::App* host, HostFlags& f, HostCommands& c) {
  c.add = host->add_subcommand(
      "add",
      "add a remote host and print it as JSON:\n"
      "  host add NAME [USER@]ADDRESS[:PORT] [--user USER] (--key FILE [--passphrase-file F] "
      "| --agent | --password-file F)\n"
      "Secrets (a key's passphrase, a password) are read from a file, or from stdin with -, and "
      "never taken\non the command line, where other users see them (ps).");
  c.add->add_option("name", f.name, "its name for --host and --hosts (letters, digits, . _ -)")
      ->required();
  c.add
      ->add_option("address", f.address,
                   "[USER@]ADDRESS[:PORT]; an IPv6 address with a port in brackets: [::1]:2222")
      ->required();
  c.add->add_option("--user", f.user, "the login user (wins over USER@)");
  c.add->add_option("--port", f.port, "the SSH port (default 22; wins over :PORT)")
      ->check(CLI::Range(1, 65535));
  add_auth_options(c.add, f);
  const std::string group = "Host key and connections";
  c.add
      ->add_option("--host-key", f.host_key,
                   "strict (default: known_hosts must have it), accept-new (learn a new host's "
                   "key; refuse a changed one), pinned (--fingerprint), insecure (no check)")
      ->check(CLI::IsMember({"strict", "accept-new", "pinned", "insecure"}))
      ->group(group);
  c.add
      ->add_option("--fingerprint", f.fingerprint,
                   "SHA256:... (as ssh-keygen -l shows it) the host key must have; implies "
                   "--host-key pinned")
      ->group(group);
  add_count(c.add, "--connect-timeout-ms", f.connect_timeout_ms, "ms to connect and log in at most",
            group);
  add_count(c.add, "--keepalive-ms", f.keepalive_ms, "ms between keepalives", group);
  add_count(c.add, "--idle-timeout-ms", f.idle_timeout_ms,
            "ms before an unused connection is closed", group);
  add_count(c.add, "--max-connections", f.max_connections, "connections to the host at most",
            group);
}

// ---- host list, host check ----

std::string endpoint_of(const json::object& h) {
  const std::string address = text_of(h, "address");
  return (address.find(':') == std::string::npos ? address : "[" + address + "]") + ":" +
         text_of(h, "port");
}

// Columns as wide as their widest cell; the last one as it comes.
void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(rows.front().size(), 0);
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i + 1 < row.size(); ++i)
      line += row[i] + std::string(width[i] + 2 - row[i].size(), ' ');
    line += row.back();
    std::printf("%s\n", line.c_str());
  }
}

int list_hosts(Client& client, const HostFlags& f) {
  json::object r = call_host(client, "host_list", {});
  if (f.as_json) return print_json(r);
  std::vector<std::vector<std::string>> rows{
      {"NAME", "ADDRESS", "USER", "AUTH", "HOSTKEY", "CONN", "BUSY", "LAST-ERROR"}};
  for (const json::value& v : r.at("hosts").as_array()) {
    const json::object& h = v.as_object();
    rows.push_back({text_of(h, "name"), endpoint_of(h), text_of(h, "user"),
                    text_of(h.at("auth").as_object(), "type"),
                    text_of(h.at("host_key").as_object(), "policy"),
                    text_of(h, "connections") + "/" + text_of(h, "max_connections"),
                    text_of(h, "busy_channels"), one_line(text_of(h, "last_error"))});
  }
  print_table(rows);
  return 0;
}

void print_check(const json::object& r) {
  std::printf("host %s: %s\n", text_of(r, "name").c_str(), r.at("ok") == true ? "ok" : "failed");
  auto row = [](const char* label, const std::string& value) {
    std::printf("  %-13s %s\n", label, value.c_str());
  };
  if (r.contains("fingerprint")) row("fingerprint", text_of(r, "fingerprint"));
  if (r.contains("key_type")) row("key type", text_of(r, "key_type"));
  if (r.contains("banner")) row("banner", one_line(text_of(r, "banner")));
  if (const json::value* methods = r.if_contains("auth_methods"); methods && methods->is_array()) {
    std::string list;
    for (const json::value& m : methods->as_array())
      list += (list.empty() ? "" : ", ") + std::string(m.as_string());
    row("auth methods", list);
  }
  if (const json::value* ms = r.if_contains("latency_ms"); ms && ms->is_number()) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f ms", ms->to_number<double>());
    row("latency", text);
  }
}

int check_host(Client& client, const HostFlags& f) {
  json::object r = call_host(client, "host_check", {{"name", f.name}});
  if (f.as_json)
    print_json(r);
  else
    print_check(r);
  if (r.at("ok") == true) return 0;
  const json::value& e = r.at("error");
  std::fprintf(stderr, "shell-pool: host %s: %s\n", f.name.c_str(),
               e.is_object() ? one_line(describe_error(e.as_object())).c_str() : "failed");
  return kFailed;
}

// ---- fan-out ----

// Each host's output a whole line at a time with its name in front, so that
// the lines of hosts that run at once never mix within a line.
class PrefixedLines {
 public:
  void add(const std::string& host, int fd, std::string_view data) {
    std::string& partial = partial_[{host, fd}];
    std::string out;
    size_t at = 0;
    for (size_t nl; (nl = data.find('\n', at)) != std::string_view::npos; at = nl + 1) {
      out += host + ": " + partial;
      out.append(data.substr(at, nl + 1 - at));
      partial.clear();
    }
    partial.append(data.substr(at));
    if (partial.size() > kMaxPartialLine) {
      out += host + ": " + partial + "\n";
      partial.clear();
    }
    write_all(fd, out);
  }

  // The last lines that had no line end.
  void finish() {
    for (auto& [where, partial] : partial_)
      if (!partial.empty()) write_all(where.second, where.first + ": " + partial + "\n");
    partial_.clear();
  }

 private:
  std::map<std::pair<std::string, int>, std::string> partial_;
};

// A host's error that was not its command's own end (it could not connect,
// log in, or lost its connection), described; nullopt for a command's end,
// whose error, if any, is named after its status.
std::optional<std::string> connection_error(const json::object& entry) {
  const json::value* e = entry.if_contains("error");
  if (!e || !e->is_object()) return std::nullopt;
  const json::object& error = e->as_object();
  if (text_of(error, "code") == text_of(entry, "status")) return std::nullopt;
  return one_line(describe_error(error));
}

std::string how_it_ended(const json::object& entry) {
  std::string how;
  const std::string status = text_of(entry, "status");
  if (const json::value* sig = entry.if_contains("signal"); sig && sig->is_string())
    how = "killed by " + std::string(sig->as_string());
  else if (status == "exited")
    how = "exit code " + text_of(entry, "exit_code");
  else
    how = status == "timed_out" ? "timed out" : status;
  if (const json::value* e = entry.if_contains("error"); e && e->is_object())
    how += ": " + one_line(text_of(e->as_object(), "message"));
  return how;
}

void print_summary(const json::object& s) {
  auto n = [&](const char* key) { return s.at(key).to_number<int64_t>(); };
  std::string line = std::to_string(n("total")) + (n("total") == 1 ? " host: " : " hosts: ") +
                     std::to_string(n("succeeded")) + " ok, " + std::to_string(n("failed")) +
                     " failed, " + std::to_string(n("errors")) + " errors";
  if (n("skipped")) line += ", " + std::to_string(n("skipped")) + " skipped";
  std::fprintf(stderr, "shell-pool: %s\n", line.c_str());
}

// The summary, a line for each host that did not succeed, and the exit code.
int report_fan_out(const json::object& r) {
  print_summary(r.at("summary").as_object());
  std::optional<int> worst;
  bool connection = false;
  for (const json::value& v : r.at("results").as_array()) {
    const json::object& entry = v.as_object();
    const std::string host = text_of(entry, "host"), status = text_of(entry, "status");
    if (entry.if_contains("truncated") && entry.at("truncated") == true)
      std::fprintf(stderr, "shell-pool: %s: output truncated\n", host.c_str());
    if (status == "skipped") {
      std::fprintf(stderr, "shell-pool: %s: skipped (--fail-fast)\n", host.c_str());
    } else if (auto error = connection_error(entry)) {
      std::fprintf(stderr, "shell-pool: %s: %s\n", host.c_str(), error->c_str());
      connection = true;
    } else if (const int code = exit_code_of(entry); code != 0) {
      std::fprintf(stderr, "shell-pool: %s: %s\n", host.c_str(), how_it_ended(entry).c_str());
      worst = std::max(worst.value_or(code), code);
    }
  }
  return worst ? *worst : connection ? kConnectionFailed : 0;
}

void add_manage_commands(CLI::App* host, HostFlags& f, HostCommands& c) {
  c.list = host->add_subcommand(
      "list",
      "list the hosts: NAME ADDRESS USER AUTH HOSTKEY CONN (open/most) BUSY (channels) LAST-ERROR");
  c.list->add_flag("--json", f.as_json, "print the daemon's answer as JSON");
  c.rm = host->add_subcommand(
      "rm",
      "remove a host and print {name, removed, jobs_ended} as JSON (exit 1 if jobs run "
      "there, without --force)");
  c.rm->add_option("name", f.name, "the host's name")->required();
  c.rm->add_flag("--force", f.force, "end the jobs that run there (they fail: host_removed)");
  c.check = host->add_subcommand(
      "check",
      "connect and log in to a host now; print its host key, banner, auth methods and latency "
      "(exit 1 if it fails: the error's code, phase and message)");
  c.check->add_option("name", f.name, "the host's name")->required();
  c.check->add_flag("--json", f.as_json, "print the daemon's answer as JSON");
}

}  // namespace

HostCommands add_host_commands(CLI::App& app, HostFlags& f) {
  HostCommands c{};
  c.all = app.add_subcommand(
      "host",
      "remote hosts the daemon runs jobs on over SSH (run --host, --hosts): add, list, rm, check");
  c.all->require_subcommand(1);
  add_add_command(c.all, f, c);
  add_manage_commands(c.all, f, c);
  return c;
}

int run_host_command(Client& client, const HostFlags& f, const HostCommands& c) {
  if (*c.add) return print_json(call_host(client, "host_add", add_params(f)));
  if (*c.list) return list_hosts(client, f);
  if (*c.rm) {
    json::object p{{"name", f.name}};
    if (f.force) p["force"] = true;
    return print_json(call_host(client, "host_remove", std::move(p)));
  }
  if (*c.check) return check_host(client, f);
  return 0;
}

void add_target_options(CLI::App* sub, TargetFlags& t) {
  const std::string group = "Remote hosts (see `host add`)";
  CLI::Option* host =
      sub->add_option("--host", t.host, "run it on this host instead of here")->group(group);
  CLI::Option* hosts =
      sub->add_option("--hosts", t.hosts,
                      "run it on each of these hosts at once: a,b,c (repeatable); each output "
                      "line comes as HOST: line, stdin is not passed. Exit: 0 if all succeeded, "
                      "else the worst exit code, 255 if only connections failed")
          ->delimiter(',')
          ->excludes(host)
          ->group(group);
  sub->add_option("--max-parallel", t.max_parallel, "hosts that run it at once (default: all)")
      ->transform(whole_number())
      ->needs(hosts)
      ->group(group);
  sub->add_flag("--fail-fast", t.fail_fast, "once a host fails, start it on no more")
      ->needs(hosts)
      ->group(group);
}

bool add_target_params(json::object& p, const TargetFlags& t) {
  if (!t.host.empty()) p["host"] = t.host;
  if (t.hosts.empty()) return false;
  json::array hosts;
  for (const std::string& h : t.hosts)
    if (!h.empty()) hosts.emplace_back(h);  // a,b, is a and b
  if (hosts.empty()) die(kUsage, "--hosts needs a host name");
  p["hosts"] = std::move(hosts);
  if (t.max_parallel) p["max_parallel"] = *t.max_parallel;
  if (t.fail_fast) p["fail_fast"] = true;
  return true;
}

int run_fan_out(Client& client, json::object params) {
  client.send("execute_stream", std::move(params));
  PrefixedLines lines;
  for (;;) {
    json::object r = client.next();
    const std::string type = text_of(r, "type");
    if (type == "stdout" || type == "stderr") {
      lines.add(text_of(r, "host"), type == "stdout" ? 1 : 2, bytes_of(r.at("data")));
    } else if (type == "exit") {
      lines.finish();
      return report_fan_out(r);
    }
  }
}

}  // namespace sp::cli
