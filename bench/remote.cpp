// remote_bench: `true` on one SSH host, through shell-pool's pool against the
// OpenSSH client, in the same run.
//
//   pool     execute {command: "true", host} on the daemon: its remote worker
//            keeps the connection and opens a channel per job
//   ssh      `ssh host true` per job: a process, a TCP connection, a key
//            exchange and a login each time
//   mux      `ssh -S ctl host true` per job over a ControlMaster connection
//            made once (OpenSSH's own connection reuse)
//
// Each runs one client in a closed loop (p50, p99 of a job) and C clients at
// once (jobs/s). The host is a private sshd on a loopback address with its
// own keys, started and stopped here; nothing is read from ~/.ssh.
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_daemon.h"

namespace {

using sp::bench::now_ns;
using sp::bench::percentile;

struct Options {
  double seconds = 3;
  int clients = 8;
  std::string daemon;
  std::string address = "127.0.0.40";
};

// Runs argv with stdout/stderr to /dev/null (or `out`), waits; its exit status, -1 on failure.
int run(const std::vector<std::string>& args, const std::string& out = "/dev/null") {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  int e = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (e != 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A private sshd: its own host key, a login by a key made here. The login is
// a throwaway user whose shell is /bin/sh: root's shell may read a .bashrc
// for ssh commands (bash does, under sshd), whose cost would swamp what is
// measured.
struct Sshd {
  std::string dir, address, key, known_hosts, user;
  int port = 0;
  pid_t pid = -1;

  bool start(const std::string& tmp, const std::string& addr) {
    dir = tmp;
    address = addr;
    key = dir + "/id";
    known_hosts = dir + "/known_hosts";
    if (run({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir + "/host"}) != 0 ||
        run({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key}) != 0)
      return false;
    std::filesystem::copy_file(key + ".pub", dir + "/authorized_keys");
    ::chmod((dir + "/authorized_keys").c_str(), 0644);  // read as the user
    ::chmod(dir.c_str(), 0755);
    user = "spbench" + std::to_string(::getpid() % 100000);
    // "*": no password, not locked (sshd without PAM turns locked accounts away).
    if (run({"useradd", "-M", "-s", "/bin/sh", "-d", dir, "-p", "*", user}) != 0) return false;
    ::mkdir("/run/sshd", 0755);
    port = 20000 + int(::getpid() % 20000);
    std::ofstream(dir + "/sshd_config")
        << "ListenAddress " << address << ":" << port << "\nHostKey " << dir
        << "/host\nPidFile none\nAuthorizedKeysFile " << dir
        << "/authorized_keys\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
           "KbdInteractiveAuthentication no\nMaxStartups 200:30:400\n"
           "MaxSessions 64\nPrintMotd no\nLogLevel ERROR\n";
    std::string pub;
    std::getline(std::ifstream(dir + "/host.pub"), pub);
    std::ofstream(known_hosts) << "[" << address << "]:" << port << " " << pub << "\n";
    std::vector<std::string> args{"/usr/sbin/sshd",     "-D", "-f",
                                  dir + "/sshd_config", "-E", dir + "/sshd.log"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return false;
    for (int i = 0; i < 200; ++i) {  // until a login works
      if (run(ssh_args({"true"})) == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  std::vector<std::string> ssh_args(std::vector<std::string> cmd, const std::string& ctl = "") {
    std::vector<std::string> a{"ssh",
                               "-o",
                               "BatchMode=yes",
                               "-o",
                               "StrictHostKeyChecking=yes",
                               "-o",
                               "UserKnownHostsFile=" + known_hosts,
                               "-o",
                               "GlobalKnownHostsFile=/dev/null",
                               "-o",
                               "IdentitiesOnly=yes",
                               "-F",
                               "/dev/null",
                               "-i",
                               key,
                               "-p",
                               std::to_string(port)};
    if (!ctl.empty()) a.insert(a.end(), {"-S", ctl});
    a.push_back(user + "@" + address);
    a.insert(a.end(), cmd.begin(), cmd.end());
    return a;
  }
  ~Sshd() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
    if (!user.empty()) {
      run({"pkill", "-KILL", "-u", user});
      run({"userdel", "-f", user});
    }
  }
};

struct Result {
  double jobs_per_s = 0, p50_us = 0, p99_us = 0;
  uint64_t failures = 0;
};

// `clients` threads each running `one()` in a closed loop for `seconds`.
Result measure(int clients, double seconds, const std::function<bool(int)>& one) {
  std::vector<std::vector<uint64_t>> lat(static_cast<size_t>(clients));
  std::atomic<uint64_t> failures{0};
  const uint64_t end = now_ns() + sp::bench::to_ns(seconds);
  const uint64_t start = now_ns();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&, c] {
      while (now_ns() < end) {
        uint64_t t0 = now_ns();
        if (!one(c)) ++failures;
        lat[size_t(c)].push_back(now_ns() - t0);
      }
    });
  for (auto& t : threads) t.join();
  const double took = double(now_ns() - start) / 1e9;
  std::vector<uint64_t> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  return {double(all.size()) / took, percentile(all, 50) / 1e3, percentile(all, 99) / 1e3,
          failures.load()};
}

void print(const char* name, const Result& one, const Result& many, int clients) {
  std::printf("%-6s p50 %9.0f us  p99 %9.0f us  1 client %7.1f jobs/s  %d clients %7.1f jobs/s%s\n",
              name, one.p50_us, one.p99_us, one.jobs_per_s, clients, many.jobs_per_s,
              one.failures + many.failures ? "  (FAILURES)" : "");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "remote_bench: `true` on an SSH host through shell-pool's pool, against ssh "
      "per job and ssh over a ControlMaster, in the same run"};
  app.add_option("--seconds", o.seconds, "wall time per measurement")->capture_default_str();
  app.add_option("--clients", o.clients, "concurrent clients")->capture_default_str();
  app.add_option("--daemon", o.daemon, "the shell-poold binary");
  app.add_option("--address", o.address, "loopback address for the sshd")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  sp::bench::TempDir tmp;
  char tmpl[] = "/tmp/sp-remote-bench-XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  tmp.path = tmpl;
  Sshd sshd;
  if (!sshd.start(tmp.path, o.address)) {
    std::fprintf(stderr, "cannot start sshd on %s (run as root, openssh-server installed)\n",
                 o.address.c_str());
    return 1;
  }
  sp::bench::Daemon daemon;
  const std::string socket = tmp.path + "/sock";
  if (auto st = daemon.start(sp::bench::find_daemon(o.daemon),
                             {"--known-hosts", sshd.known_hosts, "--user-known-hosts", "none"},
                             socket, tmp.path + "/daemon.log");
      !st || !daemon.wait_ready(socket, 10)) {
    std::fprintf(stderr, "the daemon did not start\n%s", daemon.log_tail().c_str());
    return 1;
  }
  std::vector<std::unique_ptr<sp::bench::Conn>> conns;
  for (int c = 0; c < std::max(o.clients, 1); ++c) {
    auto fd = sp::bench::connect_unix(socket);
    if (!fd) return 1;
    conns.push_back(std::make_unique<sp::bench::Conn>(std::move(*fd)));
  }
  auto call = [&](int c, const std::string& line) {
    if (!conns[size_t(c)]->send_all(line + "\n")) return false;
    auto got = conns[size_t(c)]->read_line();
    return got && got->find("\"exit_code\":0") != std::string_view::npos;
  };
  const std::string add =
      "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"host_add\",\"params\":{\"name\":\"h\","
      "\"address\":\"" +
      o.address + "\",\"port\":" + std::to_string(sshd.port) + ",\"user\":\"" + sshd.user +
      "\",\"auth\":{\"key_file\":\"" + sshd.key + "\"},\"max_connections\":8}}";
  if (!conns[0]->send_all(add + "\n") || !conns[0]->read_line()) return 1;
  const std::string job =
      "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"execute\",\"params\":{\"command\":\"true\","
      "\"host\":\"h\"}}";
  for (int i = 0; i < 20; ++i) call(0, job);  // warm: the pool's connections are made
  Result pool1 = measure(1, o.seconds, [&](int c) { return call(c, job); });
  Result pooln = measure(o.clients, o.seconds, [&](int c) { return call(c, job); });

  Result ssh1 = measure(1, o.seconds, [&](int) { return run(sshd.ssh_args({"true"})) == 0; });
  Result sshn =
      measure(o.clients, o.seconds, [&](int) { return run(sshd.ssh_args({"true"})) == 0; });

  const std::string ctl = tmp.path + "/ctl";
  std::vector<std::string> master = sshd.ssh_args({}, ctl);
  master.insert(master.begin() + 1, {"-M", "-f", "-N", "-o", "ControlPersist=yes"});
  run(master);
  Result mux1 = measure(1, o.seconds, [&](int) { return run(sshd.ssh_args({"true"}, ctl)) == 0; });
  Result muxn =
      measure(o.clients, o.seconds, [&](int) { return run(sshd.ssh_args({"true"}, ctl)) == 0; });
  std::vector<std::string> stop_master = sshd.ssh_args({}, ctl);
  stop_master.insert(stop_master.begin() + 1, {"-O", "exit"});
  run(stop_master);

  std::printf("`true` on one SSH host (%s), %.0f s per measurement\n", o.address.c_str(),
              o.seconds);
  print("pool", pool1, pooln, o.clients);
  print("ssh", ssh1, sshn, o.clients);
  print("mux", mux1, muxn, o.clients);
  std::printf("pool / ssh:  %.1fx jobs/s (%d clients), %.1fx faster p50\n",
              pooln.jobs_per_s / sshn.jobs_per_s, o.clients, ssh1.p50_us / pool1.p50_us);
  std::printf("pool / mux:  %.2fx jobs/s (%d clients), %.2fx faster p50\n",
              pooln.jobs_per_s / muxn.jobs_per_s, o.clients, mux1.p50_us / pool1.p50_us);
  (void)daemon.stop(10);
  return 0;
}
