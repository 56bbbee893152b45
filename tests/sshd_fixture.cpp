#include "tests/sshd_fixture.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace sp::test {

namespace {

constexpr const char* kSshd = "/usr/sbin/sshd";
constexpr const char* kSshKeygen = "/usr/bin/ssh-keygen";
constexpr const char* kSshAgent = "/usr/bin/ssh-agent";
constexpr const char* kSshAdd = "/usr/bin/ssh-add";
constexpr const char* kUseradd = "/usr/sbin/useradd";
constexpr const char* kUserdel = "/usr/sbin/userdel";
constexpr const char* kChpasswd = "/usr/sbin/chpasswd";

Clock::time_point deadline_after(double seconds) {
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

int ms_left(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() <= 0 ? 0 : int(std::min<int64_t>(left.count(), 1'000'000));
}

std::string errno_text(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

// This process's environment with `changes` applied (see run_tool).
std::vector<std::string> changed_environment(const std::vector<std::string>& changes) {
  auto name_of = [](const std::string& entry) { return entry.substr(0, entry.find('=')); };
  std::set<std::string> changed;
  for (const std::string& c : changes) changed.insert(name_of(c));
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e)
    if (!changed.count(name_of(*e))) env.emplace_back(*e);
  for (const std::string& c : changes)
    if (c.find('=') != std::string::npos) env.push_back(c);
  return env;
}

struct ChildSpec {
  std::vector<std::string> argv = {};
  std::vector<std::string> env = {};  // the whole environment
  int in_fd = -1;                     // -1: /dev/null
  int out_fd = -1, err_fd = -1;
  // ssh-agent is setgid, and exec'ing a setgid program clears the death
  // signal; without the setgid (no_new_privs) it runs as well and still dies
  // with the test.
  bool no_new_privs = false;
};

// Forks and execs spec.argv in a process group of its own, SIGKILLed when
// the forking thread ends. Everything the child touches is prepared before
// the fork; the child only makes async-signal-safe calls. -1 on failure.
pid_t spawn(const ChildSpec& spec) {
  std::vector<char*> argv, envp;
  for (const std::string& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const std::string& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  int in = spec.in_fd >= 0 ? spec.in_fd : devnull.get();
  if (in < 0 || spec.out_fd < 0 || spec.err_fd < 0 || spec.argv.empty()) return -1;
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) _exit(126);
    if (spec.no_new_privs && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(126);
    if (::dup2(in, 0) < 0 || ::dup2(spec.out_fd, 1) < 0 || ::dup2(spec.err_fd, 2) < 0) _exit(126);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  if (pid > 0) ::setpgid(pid, pid);  // also here, so that the group exists before any kill
  return pid;
}

UniqueFd open_output(const std::string& path) {
  return UniqueFd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
}

// Reaps child `pid` within `timeout_s`; its wait status, or nullopt.
std::optional<int> reap(pid_t pid, double timeout_s) {
  int status = 0;
  if (wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, timeout_s, 0.005))
    return status;
  return std::nullopt;
}

void kill_and_reap(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGKILL);
  reap(pid, 10);
}

void write_text_file(const std::string& path, const std::string& text, mode_t mode) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd || ::fchmod(fd.get(), mode) != 0) throw std::runtime_error(errno_text(path));
  for (size_t done = 0; done < text.size();) {
    ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error(errno_text("write " + path));
    done += size_t(n);
  }
}

std::string without_newline(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

std::string parent_dir(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

sockaddr_in inet_address(const std::string& address, int port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(uint16_t(port));
  if (::inet_pton(AF_INET, address.c_str(), &sa.sin_addr) != 1)
    throw std::runtime_error("not an IPv4 address: " + address);
  return sa;
}

// A TCP socket bound to address:port.
UniqueFd bound_socket(const std::string& address, int port, int flags = 0) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | flags, 0));
  if (!fd) throw std::runtime_error(errno_text("socket"));
  sockaddr_in sa = inet_address(address, port);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
    throw std::runtime_error(errno_text("bind " + address + ":" + std::to_string(port)));
  return fd;
}

int port_of(const UniqueFd& fd) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sa), &len) != 0)
    throw std::runtime_error(errno_text("getsockname"));
  return ntohs(sa.sin_port);
}

// Connects (non-blocking) within the deadline; false if it fails.
bool connect_by(int fd, const sockaddr_in& sa, Clock::time_point deadline) {
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) == 0) return true;
  if (errno != EINPROGRESS) return false;
  pollfd p{fd, POLLOUT, 0};
  if (::poll(&p, 1, ms_left(deadline)) != 1) return false;
  int err = 0;
  socklen_t len = sizeof err;
  return ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
}

bool unix_connectable(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (!fd || path.size() >= sizeof sa.sun_path) return false;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
}

// Whether `pid`'s environment has SSH_CONNECTION="... address port": sshd
// gives it to every session's command, which keeps it wherever it goes.
bool session_of(pid_t pid, const std::string& address, int port) {
  std::string env = read_file("/proc/" + std::to_string(pid) + "/environ");
  const std::string key = "SSH_CONNECTION=";
  const std::string tail = " " + address + " " + std::to_string(port);
  for (size_t at = 0; at < env.size();) {
    size_t end = env.find('\0', at);
    if (end == std::string::npos) end = env.size();
    std::string_view entry(env.data() + at, end - at);
    if (entry.substr(0, key.size()) == key && entry.size() >= tail.size() &&
        entry.substr(entry.size() - tail.size()) == tail)
      return true;
    at = end + 1;
  }
  return false;
}

// Live process ids under /proc, this process left out.
std::vector<pid_t> all_pids() {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  pid_t self = ::getpid();
  while (dirent* e = ::readdir(d)) {
    char* end;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end || pid <= 0 || pid == self) continue;
    out.push_back(pid_t(pid));
  }
  ::closedir(d);
  return out;
}

bool alive(pid_t pid) {
  char s = state_of(pid);
  return s != 0 && s != 'Z' && s != 'X';
}

void add_descendants(pid_t pid, std::set<pid_t>& into) {
  for (pid_t child : children_of(pid))
    if (into.insert(child).second) add_descendants(child, into);
}

std::string random_text(size_t n, const std::string& alphabet) {
  static std::mt19937_64 generator{std::random_device{}()};
  std::uniform_int_distribution<size_t> pick(0, alphabet.size() - 1);
  std::string out;
  for (size_t i = 0; i < n; ++i) out += alphabet[pick(generator)];
  return out;
}

}  // namespace

// ---- tools ----

std::string ToolRun::describe() const {
  return command + " -> " + (finished ? "exit " + std::to_string(exit_code) : "killed (timeout)") +
         "\n--- stdout:\n" + out + "--- stderr:\n" + err;
}

ToolRun run_tool(const std::vector<std::string>& argv, const std::string& dir,
                 const std::vector<std::string>& env, double timeout_s,
                 const std::optional<std::string>& stdin_data) {
  static std::atomic<int> serial{0};
  ToolRun run;
  for (const std::string& a : argv) run.command += (run.command.empty() ? "" : " ") + a;
  std::string base = dir + "/tool-" + std::to_string(::getpid()) + "-" + std::to_string(++serial);
  UniqueFd out = open_output(base + ".out"), err = open_output(base + ".err"), in;
  if (stdin_data) {
    write_text_file(base + ".in", *stdin_data, 0600);
    in.reset(::open((base + ".in").c_str(), O_RDONLY | O_CLOEXEC));
  }
  pid_t pid = spawn({.argv = argv,
                     .env = changed_environment(env),
                     .in_fd = in ? in.get() : -1,
                     .out_fd = out.get(),
                     .err_fd = err.get()});
  if (pid > 0) {
    std::optional<int> status = reap(pid, timeout_s);
    run.finished = status.has_value();
    if (!status) {
      ::kill(-pid, SIGKILL);
      status = reap(pid, 10);
    }
    if (status && WIFEXITED(*status)) run.exit_code = WEXITSTATUS(*status);
    if (status && WIFSIGNALED(*status)) run.exit_code = 128 + WTERMSIG(*status);
  }
  run.out = read_file(base + ".out");
  run.err = read_file(base + ".err");
  for (const char* suffix : {".out", ".err", ".in"}) ::unlink((base + suffix).c_str());
  return run;
}

// ---- keys ----

SshKeyPair make_key(const std::string& dir, const std::string& name, const std::string& type,
                    const std::string& passphrase) {
  SshKeyPair key{dir + "/" + name, dir + "/" + name + ".pub", "", passphrase};
  // ssh-keygen asks before it overwrites, and its stdin is /dev/null.
  ::unlink(key.private_path.c_str());
  ::unlink(key.public_path.c_str());
  std::vector<std::string> argv{kSshKeygen, "-q", "-t", type, "-N",
                                passphrase, "-C", name, "-f", key.private_path};
  if (type == "rsa") argv.insert(argv.end(), {"-b", "2048"});
  ToolRun run = run_tool(argv, dir);
  if (!run.finished || run.exit_code != 0) throw std::runtime_error(run.describe());
  key.public_line = without_newline(read_file(key.public_path));
  return key;
}

std::string fingerprint_of(const std::string& public_path) {
  ToolRun run =
      run_tool({kSshKeygen, "-l", "-E", "sha256", "-f", public_path}, parent_dir(public_path));
  // "256 SHA256:... comment (ED25519)"
  std::istringstream fields(run.out);
  std::string bits, fingerprint;
  fields >> bits >> fingerprint;
  if (run.exit_code != 0 || fingerprint.rfind("SHA256:", 0) != 0)
    throw std::runtime_error(run.describe());
  return fingerprint;
}

// ---- TCP ----

int free_port(const std::string& address) {
  return port_of(bound_socket(address, 0));
}

std::string ssh_banner(const std::string& address, int port, double timeout_s,
                       const std::string& source) {
  auto deadline = deadline_after(timeout_s);
  UniqueFd fd;
  sockaddr_in server{};
  try {  // a bad address is only a failed probe
    server = inet_address(address, port);
    fd = source.empty() ? UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0))
                        : bound_socket(source, 0);
  } catch (const std::exception&) {
    return "";
  }
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (!fd || flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) return "";
  if (!connect_by(fd.get(), server, deadline)) return "";
  std::string got;
  while (got.find('\n') == std::string::npos && got.size() < 1024) {
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, ms_left(deadline)) != 1) return "";
    char buf[256];
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return "";
    got.append(buf, size_t(n));
  }
  std::string line = without_newline(got.substr(0, got.find('\n')));
  if (line.rfind("SSH-", 0) != 0) return "";
  // Without an identification line of ours, sshd logs the close in a line
  // that does not name the peer (kex_exchange_identification: ...).
  const char hello[] = "SSH-2.0-sp_probe\r\n";
  [[maybe_unused]] ssize_t ignored = ::send(fd.get(), hello, sizeof hello - 1, MSG_NOSIGNAL);
  return line;
}

RawTcpSilent::RawTcpSilent(std::string address)
    : address_(std::move(address)), fd_(bound_socket(address_, 0)) {
  port_ = port_of(fd_);
  if (::listen(fd_.get(), 4096) != 0) throw std::runtime_error(errno_text("listen"));
}

// ---- /proc ----

char state_of(pid_t pid) {
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  // "pid (comm) state ...": comm may hold spaces and parentheses.
  size_t close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() ? 0 : stat[close + 2];
}

std::vector<pid_t> pids_of_uid(uid_t uid) {
  std::vector<pid_t> out;
  for (pid_t pid : all_pids()) {
    std::istringstream status(read_file("/proc/" + std::to_string(pid) + "/status"));
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("Uid:", 0) != 0) continue;
      std::istringstream ids(line.substr(4));
      long real = -1;
      if (ids >> real && real == long(uid) && alive(pid)) out.push_back(pid);
      break;
    }
  }
  return out;
}

// ---- Sshd ----

Sshd::Sshd(SshdOptions options, std::vector<std::string> authorized_keys)
    : options_(std::move(options)),
      config_path_(dir() + "/sshd_config"),
      log_path_(dir() + "/sshd.log"),
      authorized_keys_path_(dir() + "/authorized_keys") {
  // sshd refuses to start without its privilege separation dir, which the
  // package leaves to systemd's RuntimeDirectory.
  if (::mkdir("/run/sshd", 0755) != 0 && errno != EEXIST)
    throw std::runtime_error(errno_text("mkdir /run/sshd (sshd tests need root)"));
  host_key_ = make_key(dir(), "host_key_0", options_.host_key_type);
  authorize(authorized_keys);
  // The port was free when picked; sshd may still lose it to another process.
  for (int attempt = 0; attempt < 5; ++attempt) {
    port_ = free_port(options_.address);
    write_config();
    if (start_once()) return;
    if (log().find("Address already in use") == std::string::npos) break;
  }
  fail("sshd did not start");
}

Sshd::~Sshd() {
  kill_all();
}

void Sshd::authorize(const std::vector<std::string>& public_lines) {
  std::string text;
  for (const std::string& line : public_lines) text += line + "\n";
  write_text_file(authorized_keys_path_, text, 0600);
}

void Sshd::write_config() {
  std::string c;
  auto line = [&](const std::string& text) { c += text + "\n"; };
  line("ListenAddress " + options_.address + ":" + std::to_string(port_));
  line("HostKey " + host_key_.private_path);
  line("PidFile none");
  line("AuthorizedKeysFile " + authorized_keys_path_);
  line("StrictModes no");  // the temp dir and its files are root's, not the user's
  line("UsePAM no");
  line(std::string("PasswordAuthentication ") + (options_.password_auth ? "yes" : "no"));
  line("KbdInteractiveAuthentication no");
  line("PubkeyAuthentication yes");
  line("PermitRootLogin yes");
  // Tests open many connections at once; sshd's default (10:30:100) would
  // drop some of them before authentication.
  line("MaxStartups 100:30:200");
  line("MaxSessions " + std::to_string(options_.max_sessions));
  line("LogLevel VERBOSE");
  line("PrintMotd no");  // a session's output is the command's alone
  line("PrintLastLog no");
  if (!options_.rekey_limit.empty()) line("RekeyLimit " + options_.rekey_limit);
  for (const std::string& extra : options_.extra_config) line(extra);
  write_text_file(config_path_, c, 0600);
}

bool Sshd::start_once() {
  UniqueFd out = open_output(dir() + "/sshd.out");
  // -D: no daemon, so that the listener is our child; -E: the log in a file
  // (the per-connection processes re-exec with the same arguments).
  pid_t pid = spawn({.argv = {kSshd, "-D", "-f", config_path_, "-E", log_path_},
                     .env = changed_environment({}),
                     .out_fd = out.get(),
                     .err_fd = out.get()});
  if (pid < 0) fail(errno_text("fork"));
  pid_ = OwnedPid(pid);
  bool exited = false;
  bool ready = wait_until(
      [&] {
        exited = ::waitpid(pid, nullptr, WNOHANG) == pid;
        return exited || !ssh_banner(address(), port_, 1, kProbeSource).empty();
      },
      10);
  if (exited) {
    pid_.release();
    return false;
  }
  if (!ready) fail("sshd sent no banner within 10 s");
  return true;
}

void Sshd::fail(const std::string& what) {
  std::string message = what + " (" + address() + ":" + std::to_string(port_) +
                        ")\n--- sshd log:\n" + log() + "--- sshd stderr:\n" +
                        read_file(dir() + "/sshd.out");
  kill_all();
  throw std::runtime_error(message);
}

std::string Sshd::log() const {
  return read_file(log_path_);
}

std::string Sshd::known_hosts_line() const {
  std::istringstream fields(host_key_.public_line);
  std::string type, blob;
  fields >> type >> blob;
  return "[" + address() + "]:" + std::to_string(port_) + " " + type + " " + blob;
}

int Sshd::count_in_log(const std::string& what) const {
  std::istringstream in(log());
  int n = 0;
  for (std::string line; std::getline(in, line);)
    if (line.find(what) != std::string::npos && line.find(kProbeSource) == std::string::npos) ++n;
  return n;
}

std::vector<pid_t> Sshd::processes() const {
  std::set<pid_t> found;
  if (pid_.get() > 0) {
    found.insert(pid_.get());
    add_descendants(pid_.get(), found);
  }
  if (port_ > 0)
    for (pid_t pid : all_pids())
      if (!found.count(pid) && session_of(pid, address(), port_)) {
        found.insert(pid);
        add_descendants(pid, found);
      }
  std::vector<pid_t> out;
  for (pid_t pid : found)
    if (alive(pid)) out.push_back(pid);
  return out;
}

// SIGSTOPs every process of the server until two listings in a row find no
// new one, waiting after each round until the stopped ones really stopped: a
// stopped process forks no more. Two, because the kernel's list of a
// process's children may skip one while a sibling exits. Returns the
// processes it stopped; all of them are stopped (or gone) unless one would
// not stop within 5 s (then `stopped` is false).
std::set<pid_t> Sshd::freeze(bool& stopped) {
  std::set<pid_t> held;
  stopped = true;
  for (int round = 0, quiet = 0; round < 100 && quiet < 2; ++round) {
    bool fresh = false;
    for (pid_t pid : processes())
      if (held.insert(pid).second) {
        ::kill(pid, SIGSTOP);
        fresh = true;
      }
    quiet = fresh ? 0 : quiet + 1;
    stopped = wait_until(
        [&] {
          for (pid_t pid : held)
            if (alive(pid) && state_of(pid) != 'T' && state_of(pid) != 't') return false;
          return true;
        },
        5);
    if (!stopped) return held;
  }
  return held;
}

void Sshd::stop() {
  bool stopped = false;
  freeze(stopped);
  if (!stopped) throw std::runtime_error("an sshd process did not stop within 5 s");
}

void Sshd::cont() {
  for (pid_t pid : processes()) ::kill(pid, SIGCONT);
}

void Sshd::kill_all() {
  if (pid_.get() < 0) return;
  bool stopped = false;
  std::set<pid_t> held = freeze(stopped);
  for (pid_t pid : processes()) held.insert(pid);
  for (pid_t pid : held) ::kill(pid, SIGKILL);
  reap(pid_.release(), 10);
  // A session's command found only now (its listing raced with an exec, say)
  // is killed as well.
  wait_until(
      [&] {
        std::vector<pid_t> late = processes();
        for (pid_t pid : late) ::kill(pid, SIGKILL);
        for (pid_t pid : held)
          if (alive(pid)) return false;
        return late.empty();
      },
      5);
}

void Sshd::restart_with_new_host_key() {
  kill_all();
  host_key_ =
      make_key(dir(), "host_key_" + std::to_string(++host_key_generation_), host_key_type());
  write_config();
  // The killed listener's port is free at once (sshd binds with
  // SO_REUSEADDR), unless another process took it meanwhile.
  for (int attempt = 0; attempt < 5; ++attempt)
    if (start_once()) return;
  fail("sshd did not restart on its port");
}

// ---- SshAgent ----

SshAgent::SshAgent() : socket_path_(dir_.path() + "/agent.sock") {
  UniqueFd out = open_output(dir_.path() + "/agent.out");
  pid_t pid = spawn({.argv = {kSshAgent, "-D", "-a", socket_path_},
                     .env = changed_environment({}),
                     .out_fd = out.get(),
                     .err_fd = out.get(),
                     .no_new_privs = true});
  if (pid < 0) throw std::runtime_error(errno_text("fork"));
  pid_ = OwnedPid(pid);
  bool exited = false;
  bool ready = wait_until(
      [&] {
        exited = ::waitpid(pid, nullptr, WNOHANG) == pid;
        return exited || unix_connectable(socket_path_);
      },
      10);
  if (!ready || exited) {
    pid_t started = pid_.release();
    if (!exited) kill_and_reap(started);
    throw std::runtime_error("ssh-agent did not start: " + read_file(dir_.path() + "/agent.out"));
  }
}

SshAgent::~SshAgent() {
  kill_and_reap(pid_.release());
}

void SshAgent::add(const SshKeyPair& key) {
  std::vector<std::string> env{this->env(), "SSH_ASKPASS_REQUIRE=never"};
  if (!key.passphrase.empty()) {
    // ssh-add reads a passphrase from a terminal or from SSH_ASKPASS only.
    std::string quoted;
    for (char ch : key.passphrase) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    std::string askpass = dir_.path() + "/askpass";
    write_text_file(askpass, "#!/bin/sh\nprintf '%s\\n' '" + quoted + "'\n", 0700);
    env = {this->env(), "SSH_ASKPASS=" + askpass, "SSH_ASKPASS_REQUIRE=force"};
  }
  ToolRun run = run_tool({kSshAdd, key.private_path}, dir_.path(), env, 30);
  if (!run.finished || run.exit_code != 0) throw std::runtime_error(run.describe());
}

// ---- SystemUser ----

bool SystemUser::available() {
  return ::geteuid() == 0 && ::access(kUseradd, X_OK) == 0 && ::access(kUserdel, X_OK) == 0 &&
         ::access(kChpasswd, X_OK) == 0;
}

SystemUser::SystemUser()
    : password_(random_text(20, "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789")) {
  // useradd fails while another one holds the lock on /etc/passwd, or when
  // the name is taken: try again, with a fresh name.
  ToolRun run;
  bool added = wait_until(
      [&] {
        name_ = "spt" + random_text(6, "abcdefghijklmnopqrstuvwxyz");
        run = run_tool({kUseradd, "-M", "-s", "/bin/sh", "-d", home(), name_}, home());
        return run.finished && run.exit_code == 0;
      },
      10, 0.05);
  if (!added) {
    name_.clear();
    throw std::runtime_error(run.describe());
  }
  const passwd* pw = ::getpwnam(name_.c_str());
  if (pw) uid_ = pw->pw_uid;
  bool owned = pw && ::chown(home().c_str(), pw->pw_uid, pw->pw_gid) == 0;
  run = run_tool({kChpasswd}, home(), {}, 30, name_ + ":" + password_ + "\n");
  if (!owned || run.exit_code != 0) {
    std::string why = owned ? run.describe() : "no passwd entry or chown failed for " + name_;
    remove();
    throw std::runtime_error(why);
  }
}

SystemUser::~SystemUser() {
  remove();
}

void SystemUser::remove() {
  if (name_.empty()) return;
  // A process that forks while being killed leaves a child: kill until none.
  // (uid 0 would be a user that never got its entry: nothing to kill.)
  wait_until(
      [&] {
        if (uid_ == 0) return true;
        std::vector<pid_t> left = pids_of_uid(uid_);
        for (pid_t pid : left) ::kill(pid, SIGKILL);
        return left.empty();
      },
      5);
  wait_until(
      [&] {
        ToolRun run = run_tool({kUserdel, "-f", name_}, home());
        return run.finished && (run.exit_code == 0 || run.exit_code == 6);  // 6: no such user
      },
      10, 0.05);
  name_.clear();
}

}  // namespace sp::test
