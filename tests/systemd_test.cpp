// systemd integration of the real shell-poold, driven by systemd's own
// protocol as a service manager speaks it: a NOTIFY_SOCKET the test binds
// (READY, STATUS, STOPPING, the watchdog), socket activation through
// systemd-socket-activate, and what must never reach a role or a job.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <string>

#include "tests/daemon_harness.h"

using namespace sp::test;
using Catch::Contains;

namespace {

// The service manager's end of NOTIFY_SOCKET: a datagram socket bound to a
// path in a temp dir, or to an abstract name.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& address) : address_(address) {
    fd_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    auto len = socklen_t(offsetof(sockaddr_un, sun_path) + address.size());
    std::memcpy(a.sun_path, address.data(), address.size());
    if (address[0] == '@')
      a.sun_path[0] = '\0';  // abstract: exactly the name's length
    else
      len += 1;
    REQUIRE(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), len) == 0);
  }
  std::string env() const { return "NOTIFY_SOCKET=" + address_; }

  // The next datagram; nullopt if none comes within `timeout_s`.
  std::optional<std::string> next(double timeout_s) {
    std::optional<std::string> got;
    wait_until(
        [&] {
          char buf[4096];
          ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
          if (n >= 0) got = std::string(buf, size_t(n));
          return got.has_value();
        },
        timeout_s, 0.005);
    if (got) seen_.push_back(*got);
    return got;
  }
  // Reads until a datagram contains `what`; that datagram, or nullopt.
  std::optional<std::string> until(const std::string& what, double timeout_s = 20) {
    auto start = Clock::now();
    while (seconds_since(start) < timeout_s)
      if (auto m = next(timeout_s - seconds_since(start)); m && m->find(what) != std::string::npos)
        return m;
    return std::nullopt;
  }
  // How many datagrams containing `what` arrive within `window_s`.
  int count(const std::string& what, double window_s) {
    int n = 0;
    auto start = Clock::now();
    while (seconds_since(start) < window_s)
      if (auto m = next(window_s - seconds_since(start)); m && m->find(what) != std::string::npos)
        ++n;
    return n;
  }
  const std::vector<std::string>& seen() const { return seen_; }

 private:
  std::string address_;
  sp::UniqueFd fd_;
  std::vector<std::string> seen_;
};

std::string environ_of(pid_t pid) {
  std::string env = read_file("/proc/" + std::to_string(pid) + "/environ");
  for (char& c : env)
    if (c == '\0') c = '\n';
  return env;
}

constexpr const char* kSocketActivate = "/usr/bin/systemd-socket-activate";

}  // namespace

TEST_CASE("READY=1 once the pool serves, STATUS= with the pool's state, STOPPING=1 on SIGTERM",
          "[systemd]") {
  TempDir tmp;
  NotifySocket notify(tmp.path() + "/notify");
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "2"}, .env = {notify.env()}});
  auto ready = notify.until("READY=1");
  REQUIRE(ready);
  CHECK_THAT(*ready, Contains("STATUS=serving: 2 workers"));
  Client c(d.socket());
  CHECK(str(health(c), "status") == "ok");  // health answers right after READY
  // The status follows the pool: a running job shows up within a few seconds.
  std::string gate = tmp.path() + "/gate";
  REQUIRE(c.send_line(Client::request(1, "execute", sh(until_file(gate)))));
  CHECK(notify.until("STATUS=serving: 2 workers (1 busy), 0 jobs queued, 1 running", 10));
  open_gate(gate);
  REQUIRE(c.read_json(20));
  ::kill(d.pid(), SIGTERM);
  auto stopping = notify.until("STOPPING=1");
  REQUIRE(stopping);
  CHECK_THAT(*stopping, Contains("EXTEND_TIMEOUT_USEC="));
  CHECK(d.wait_exit(20) == 0);
  CHECK(count_of(d.log(), "cannot notify") == 0);
  // READY was sent once.
  int readies = 0;
  for (const std::string& m : notify.seen()) readies += m.find("READY=1") != std::string::npos;
  CHECK(readies == 1);
}

TEST_CASE("a fatal start error sends STATUS= and ERRNO= before the exit", "[systemd]") {
  START_DAEMON(first, DaemonOptions{.flags = {"--workers", "1"}});
  TempDir tmp;
  NotifySocket notify(tmp.path() + "/notify");
  TestDaemon second(DaemonOptions{.flags = {"--workers", "1"},
                                  .env = {notify.env()},
                                  .socket = first.socket(),
                                  .wait_ready = false});
  CHECK(second.wait_exit(20) == 1);
  auto m = notify.until("ERRNO=");
  REQUIRE(m);
  CHECK_THAT(*m, Contains("STATUS=cannot start: another shell-poold is already listening"));
  CHECK_THAT(*m, Contains("ERRNO=" + std::to_string(EADDRINUSE)));
  stop_cleanly(first);
}

TEST_CASE("a reload sends RELOADING=1 with MONOTONIC_USEC, then READY=1 saying how it ended",
          "[systemd][reload]") {
  TempDir tmp;
  NotifySocket notify(tmp.path() + "/notify");
  const std::string config = tmp.path() + "/shell-pool.toml";
  std::ofstream(config) << "default-timeout = 30\n";
  START_DAEMON(
      d, DaemonOptions{.flags = {"--workers", "1", "--config", config}, .env = {notify.env()}});
  REQUIRE(notify.until("READY=1"));
  std::ofstream(config) << "default-timeout = 20\n";
  REQUIRE(::kill(d.pid(), SIGHUP) == 0);
  auto reloading = notify.until("RELOADING=1");
  REQUIRE(reloading);
  CHECK_THAT(*reloading, Contains("MONOTONIC_USEC="));
  auto ready = notify.until("READY=1");
  REQUIRE(ready);
  CHECK_THAT(*ready, Contains("reloaded: configuration generation 2"));
  std::ofstream(config) << "queue-size = 2\n";
  REQUIRE(::kill(d.pid(), SIGHUP) == 0);
  REQUIRE(notify.until("RELOADING=1"));
  ready = notify.until("READY=1");
  REQUIRE(ready);
  CHECK_THAT(*ready, Contains("reload failed: restart required to change --queue-size"));
  stop_cleanly(d);
}

TEST_CASE("an abstract NOTIFY_SOCKET works too", "[systemd]") {
  NotifySocket notify("@shell-pool-test-" + std::to_string(::getpid()));
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}, .env = {notify.env()}});
  CHECK(notify.until("READY=1"));
  stop_cleanly(d);
}

TEST_CASE("garbage in NOTIFY_SOCKET: one warning, and the daemon serves on", "[systemd]") {
  for (std::string garbage : {"not-a-path", "/nonexistent/dir/notify", "@"}) {
    INFO(garbage);
    START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"},
                                  .env = {"NOTIFY_SOCKET=" + garbage, "WATCHDOG_USEC=100000"}});
    Client c(d.socket());
    CHECK(str(execute(c, sh("echo serving")), "stdout") == "serving\n");
    // Many sends failed by now (READY and every watchdog ping): one warning.
    REQUIRE(wait_until([&] { return count_of(d.log(), "cannot notify") > 0; }, 10));
    stop_cleanly(d);
    CHECK(count_of(d.log(), "cannot notify") == 1);
  }
}

TEST_CASE("the watchdog is pinged at half of WATCHDOG_USEC, from the supervisor's loop",
          "[systemd]") {
  TempDir tmp;
  NotifySocket notify(tmp.path() + "/notify");
  // 300 ms: a ping every 150 ms.
  START_DAEMON(
      d, DaemonOptions{.flags = {"--workers", "1"}, .env = {notify.env(), "WATCHDOG_USEC=300000"}});
  REQUIRE(notify.until("READY=1"));
  CHECK(notify.count("WATCHDOG=1", 1.0) >= 4);
  // A stopped (hung) worker is the supervisor's business: the pings go on.
  pid_t w = d.worker_pid(0);
  REQUIRE(w > 0);
  REQUIRE(::kill(w, SIGSTOP) == 0);
  CHECK(notify.count("WATCHDOG=1", 1.0) >= 4);
  ::kill(w, SIGCONT);
  // A wedged supervisor must stop them.
  REQUIRE(::kill(d.pid(), SIGSTOP) == 0);
  notify.count("WATCHDOG=1", 0.1);  // what was sent before the stop took effect
  CHECK(notify.count("WATCHDOG=1", 0.6) == 0);
  ::kill(d.pid(), SIGCONT);
  CHECK(notify.until("WATCHDOG=1", 5));
  stop_cleanly(d);
}

TEST_CASE("a watchdog meant for another process (WATCHDOG_PID) is not pinged", "[systemd]") {
  TempDir tmp;
  NotifySocket notify(tmp.path() + "/notify");
  START_DAEMON(
      d, DaemonOptions{.flags = {"--workers", "1"},
                       .env = {notify.env(), "WATCHDOG_USEC=100000",
                               "WATCHDOG_PID=" + std::to_string(::getpid())}});  // ours, not its
  REQUIRE(notify.until("READY=1"));
  CHECK(notify.count("WATCHDOG=1", 0.5) == 0);
  stop_cleanly(d);
}

TEST_CASE("systemd's variables reach neither a role nor a job", "[systemd]") {
  TempDir tmp;
  NotifySocket notify(tmp.path() + "/notify");
  const std::vector<std::string> names{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                                       "LISTEN_FDS",    "LISTEN_PID",    "LISTEN_FDNAMES"};
  std::vector<std::string> flags{"--workers", "1"};
  for (const std::string& n : names) flags.insert(flags.end(), {"--env-pass", n});
  START_DAEMON(d, DaemonOptions{.flags = flags,
                                .env = {notify.env(), "WATCHDOG_USEC=10000000", "WATCHDOG_PID=1",
                                        "LISTEN_FDS=1", "LISTEN_PID=1", "LISTEN_FDNAMES=rpc"}});
  REQUIRE(notify.until("READY=1"));
  Client c(d.socket());
  std::string job_env = str(execute(c, sh("env")), "stdout");
  for (pid_t role : role_pids(d))
    for (const std::string& n : names) {
      INFO("role " << role << ", " << n);
      CHECK_FALSE(Contains(n + "=").match(environ_of(role)));
      CHECK_FALSE(Contains(n + "=").match(job_env));
    }
  stop_cleanly(d);
}

TEST_CASE("socket activation: the daemon serves on the socket systemd-socket-activate passed",
          "[systemd][activation]") {
  TempDir tmp;
  const std::string sock = tmp.path() + "/activated.sock";
  NotifySocket notify(tmp.path() + "/notify");
  // systemd-socket-activate passes only the variables it is told (-E).
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"},
                                .socket = sock,
                                .wrapper = {kSocketActivate, "-l", sock, "--fdname=rpc", "-E",
                                            notify.env(), "-E", "XDG_RUNTIME_DIR=" + tmp.path()}});
  struct stat before {};
  REQUIRE(::stat(sock.c_str(), &before) == 0);
  CHECK(notify.until("READY=1"));
  Client c(d.socket());
  CHECK(str(execute(c, sh("echo activated")), "stdout") == "activated\n");
  CHECK_THAT(d.log(), Contains("listening on " + sock));
  // No inherited fd but 0, 1 and 2 reaches a job (the shell's own fds).
  json::object fds = execute(c, json::object{{"command", "/bin/sh"},
                                             {"args", json::array{"-c", "ls /proc/$$/fd"}},
                                             {"shell", false}});
  CHECK(str(fds, "stdout") == "0\n1\n2\n");
  // A frontend killed restarts on the same socket.
  pid_t f = d.frontend_pid();
  REQUIRE(::kill(f, SIGKILL) == 0);
  REQUIRE(wait_until([&] { return d.frontend_pid() > 0 && d.frontend_pid() != f; }, 10));
  Client again = Client::connect_retry(sock, 10);
  CHECK(str(execute(again, sh("echo again")), "stdout") == "again\n");
  // Stopping leaves the socket to systemd: not unlinked, not changed.
  CHECK(d.stop() == 0);
  struct stat after {};
  REQUIRE(::stat(sock.c_str(), &after) == 0);
  CHECK(after.st_ino == before.st_ino);
  CHECK(after.st_mode == before.st_mode);
  CHECK(!file_exists(d.shm_path()));
  CHECK(!file_exists(d.spool_dir()));
}

TEST_CASE("a passed fd that is not a listening Unix stream socket: exit 78 with the reason",
          "[systemd][activation]") {
  TempDir tmp;
  // The shell keeps its pid through exec: LISTEN_PID=$$ names the daemon.
  auto pass = [&](const std::string& fd3, const std::string& names) {
    return std::vector<std::string>{
        "/bin/sh", "-c",
        "exec 3" + fd3 + "; LISTEN_FDS=" + std::to_string(names.empty() ? 1 : 2) +
            " LISTEN_PID=$$ LISTEN_FDNAMES=" + names + " exec \"$0\" \"$@\""};
  };
  SECTION("not a socket") {
    TestDaemon d(DaemonOptions{
        .flags = {"--workers", "1"}, .wait_ready = false, .wrapper = pass("</dev/null", "")});
    CHECK(d.wait_exit(20) == 78);
    CHECK_THAT(d.log(), Contains("is not a listening AF_UNIX stream socket"));
  }
  SECTION("two fds, none named rpc") {
    TestDaemon d(DaemonOptions{.flags = {"--workers", "1"},
                               .wait_ready = false,
                               .wrapper = pass("</dev/null 4</dev/null", "a:b")});
    CHECK(d.wait_exit(20) == 78);
    CHECK_THAT(d.log(), Contains("none is named \"rpc\""));
  }
  SECTION("a datagram socket") {
    const std::string sock = tmp.path() + "/dgram.sock";
    TestDaemon d(DaemonOptions{.flags = {"--workers", "1"},
                               .wait_ready = false,
                               .wrapper = {kSocketActivate, "--datagram", "-l", sock}});
    // It starts the daemon on the first datagram.
    REQUIRE(wait_until([&] { return file_exists(sock); }, 10));
    sp::UniqueFd s(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, sock.c_str(), sizeof a.sun_path - 1);
    REQUIRE(::sendto(s.get(), "x", 1, 0, reinterpret_cast<sockaddr*>(&a), sizeof a) == 1);
    CHECK(d.wait_exit(20) == 78);
    CHECK_THAT(d.log(), Contains("is not a listening AF_UNIX stream socket"));
  }
}

TEST_CASE("LISTEN_PID of another process: the variables are ignored", "[systemd][activation]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"},
                                .env = {"LISTEN_FDS=1", "LISTEN_PID=1", "LISTEN_FDNAMES=rpc"}});
  Client c(d.socket());
  CHECK(str(execute(c, sh("echo own socket")), "stdout") == "own socket\n");
  stop_cleanly(d);
}
