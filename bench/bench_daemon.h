// What the end-to-end benchmarks share: a clock, percentiles, the real
// shell-poold started on a private socket in a temp dir (Daemon, TempDir),
// and a client connection reading response lines (Conn). Header-only;
// each benchmark is one program.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/sys.h"
#include "common/unique_fd.h"

extern char** environ;

namespace sp::bench {

namespace fs = std::filesystem;

inline uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

inline uint64_t to_ns(double seconds) {
  return static_cast<uint64_t>(seconds * 1e9);
}

// Nearest-rank percentile of a sorted sample, as in shared/limits/common.h.
inline double percentile(const std::vector<uint64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  auto i = static_cast<size_t>(p / 100.0 * static_cast<double>(sorted.size() - 1) + 0.5);
  return static_cast<double>(sorted[std::min(i, sorted.size() - 1)]);
}

// ---- the daemon under test ------------------------------------------------------------------

inline sp::Result<sp::UniqueFd> connect_unix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return sp::Error{ENAMETOOLONG, "socket path " + path};
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  auto fd = sp::sys("socket", [] { return ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0); });
  if (!fd) return fd.error();
  sp::UniqueFd owned(*fd);
  auto r = sp::sys("connect", [&] {
    return ::connect(owned.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  });
  if (!r) return sp::Error{r.error().code, "connect " + path};
  return owned;
}

inline std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by ") + strsignal(WTERMSIG(status));
  return "unknown status";
}

// Daemons started and not yet reaped, so that a benchmark stopped by a signal (Ctrl-C,
// SIGTERM, SIGHUP) leaves none behind: the handler sends each SIGTERM (a daemon then drains
// and removes its shared memory) and dies of the signal. At most kLiveDaemons are tracked;
// a benchmark runs one or two at a time.
inline constexpr size_t kLiveDaemons = 16;
inline std::atomic<pid_t> live_daemons[kLiveDaemons];

inline void stop_daemons_and_die(int sig) {
  for (auto& slot : live_daemons)
    if (const pid_t pid = slot.load(); pid > 0) ::kill(pid, SIGTERM);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

inline void track_daemon(pid_t pid) {
  static const bool installed = [] {
    struct sigaction sa {};
    sa.sa_handler = stop_daemons_and_die;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
    return true;
  }();
  (void)installed;
  for (auto& slot : live_daemons)
    if (pid_t none = 0; slot.compare_exchange_strong(none, pid)) return;
}

inline void untrack_daemon(pid_t pid) {
  for (auto& slot : live_daemons)
    if (pid_t expected = pid; slot.compare_exchange_strong(expected, 0)) return;
}

// The shell-poold child: started with posix_spawnp, stdout+stderr to a log file, stopped with
// SIGTERM then SIGKILL after a bound. The destructor kills and reaps it if stop() was not called.
class Daemon {
 public:
  Daemon() = default;
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;
  ~Daemon() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      (void)wait_exit(-1);
    }
  }

  sp::Status start(const std::string& exe, const std::vector<std::string>& extra,
                   const std::string& socket, const std::string& log) {
    std::vector<std::string> args = {exe, "--socket", socket};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    const int e = posix_spawnp(&pid_, exe.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e != 0) {
      pid_ = -1;
      return sp::Error{e, "start " + exe};
    }
    log_ = log;
    track_daemon(pid_);
    // A pidfd lets waits sleep in poll() until the exit; without one (old kernel) we nap.
    pidfd_.reset(static_cast<int>(syscall(SYS_pidfd_open, pid_, 0)));
    return {};
  }

  // Until the socket accepts a connection; fails if the daemon exits or time runs out.
  sp::Status wait_ready(const std::string& socket, double timeout_s) {
    const uint64_t end = now_ns() + to_ns(timeout_s);
    for (;;) {
      auto fd = connect_unix(socket);
      if (fd) return {};
      if (auto st = wait_exit(10)) return sp::Error{0, "daemon exited during startup, " + *st};
      if (now_ns() >= end) {
        return sp::Error{0, "daemon socket did not accept within " +
                                std::to_string(std::lround(timeout_s)) + " s (" +
                                fd.error().message() + ")"};
      }
    }
  }

  pid_t pid() const { return pid_; }

  // SIGTERM, then SIGKILL after timeout_s. Value: how it ended; error: it had to be killed.
  sp::Result<std::string> stop(double timeout_s) {
    if (pid_ <= 0) return std::string("already reaped");
    ::kill(pid_, SIGTERM);
    if (auto st = wait_exit(static_cast<int>(timeout_s * 1000))) return *st;
    ::kill(pid_, SIGKILL);
    (void)wait_exit(-1);
    return sp::Error{
        0, "daemon ignored SIGTERM for " + std::to_string(std::lround(timeout_s)) + " s; killed"};
  }

  std::string log_tail() const {
    std::ifstream in(log_, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.size() > 4096) text.erase(0, text.size() - 4096);
    return "---- daemon log (last 4 KiB) ----\n" + text + "----\n";
  }

 private:
  // Waits up to timeout_ms (-1: forever) for the exit; reaps it and describes how it ended.
  std::optional<std::string> wait_exit(int timeout_ms) {
    const uint64_t end = now_ns() + static_cast<uint64_t>(std::max(timeout_ms, 0)) * 1'000'000;
    for (;;) {
      int status = 0;
      const pid_t r =
          sp::sys_raw([&] { return waitpid(pid_, &status, timeout_ms < 0 ? 0 : WNOHANG); });
      if (r != 0) {
        untrack_daemon(pid_);
        pid_ = -1;
        pidfd_.reset();
        return r > 0 ? describe_status(status) : std::string("not our child");
      }
      const uint64_t now = now_ns();
      if (now >= end) return std::nullopt;
      const int left_ms = static_cast<int>((end - now) / 1'000'000) + 1;
      if (pidfd_) {
        pollfd p{pidfd_.get(), POLLIN, 0};
        ::poll(&p, 1, left_ms);
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(std::min(left_ms, 10)));
      }
    }
  }

  pid_t pid_ = -1;
  sp::UniqueFd pidfd_;
  std::string log_;
};

// A directory made by mkdtemp (mode 0700) for the socket and the log; removed with all it
// holds on destruction.
struct TempDir {
  std::string path;
  ~TempDir() {
    std::error_code ec;
    if (!path.empty()) fs::remove_all(path, ec);
  }
};

// One client's connection: request lines out, response lines in. Used by one thread.
class Conn {
 public:
  explicit Conn(sp::UniqueFd fd) : fd_(std::move(fd)) { buf_.reserve(1 << 16); }

  sp::Status send_all(std::string_view data) {
    while (!data.empty()) {
      auto n = sp::sys("send",
                       [&] { return ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL); });
      if (!n) return n.error();
      data.remove_prefix(static_cast<size_t>(*n));
    }
    return {};
  }

  // The next line without its '\n'; valid until the next call.
  sp::Result<std::string_view> read_line() {
    size_t scanned = 0;
    return read_unit([&](std::string_view b) -> std::optional<std::pair<size_t, size_t>> {
      const size_t nl = b.find('\n', scanned);
      scanned = b.size();
      if (nl == std::string_view::npos) return std::nullopt;
      return std::pair{nl, nl + 1};
    });
  }

  // The next unit `end_of` finds in what was read: it returns the unit's
  // length and the bytes it spans, or nullopt while it is incomplete (a
  // MessagePack frame: bench/e2e.cpp). Valid until the next call.
  template <typename EndOf>
  sp::Result<std::string_view> read_unit(EndOf end_of) {
    buf_.erase(0, consumed_);
    consumed_ = 0;
    for (;;) {
      if (auto unit = end_of(std::string_view(buf_))) {
        consumed_ = unit->second;
        return std::string_view(buf_).substr(0, unit->first);
      }
      if (buf_.size() > kMaxLine) return sp::Error{0, "response over 64 MiB"};
      // As much as the socket holds: streams come in large chunks.
      auto n = sp::sys("recv", [&] { return ::recv(fd_.get(), chunk_.data(), chunk_.size(), 0); });
      if (!n && n.error().code == EAGAIN) return sp::Error{0, "no response within the timeout"};
      if (!n) return n.error();
      if (*n == 0) return sp::Error{0, "daemon closed the connection"};
      buf_.append(chunk_.data(), static_cast<size_t>(*n));
    }
  }

 private:
  static constexpr size_t kMaxLine = 64u << 20;

  sp::UniqueFd fd_;
  std::string buf_;
  std::vector<char> chunk_ = std::vector<char>(256u << 10);
  size_t consumed_ = 0;  // bytes of the line returned last, dropped at the next call
};

// One process of a running daemon: the supervisor or one of its roles.
struct Proc {
  pid_t pid = 0;
  std::string role;  // "supervisor", "frontend", "worker 0", "worker 128" (the remote one)...
};

// The supervisor and its children, each named by its role (argv[1] and its
// --index), in /proc order.
inline std::vector<Proc> daemon_processes(pid_t supervisor) {
  std::vector<Proc> out{{supervisor, "supervisor"}};
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    std::getline(stat, line);
    const size_t close = line.rfind(')');  // the comm may hold spaces and parentheses
    int ppid = 0;
    if (close == std::string::npos || sscanf(line.c_str() + close + 2, "%*c %d", &ppid) != 1 ||
        ppid != supervisor) {
      continue;
    }
    std::ifstream in(e.path() / "cmdline", std::ios::binary);
    std::vector<std::string> argv;
    for (std::string arg; std::getline(in, arg, '\0');) argv.push_back(arg);
    std::string role = argv.size() > 1 ? argv[1] : "?";
    for (size_t i = 2; i + 1 < argv.size(); ++i)
      if (argv[i] == "--index") role += " " + argv[i + 1];
    out.push_back({static_cast<pid_t>(std::stol(name)), role});
  }
  return out;
}

// CPU seconds (user + system) of a process and of its children it reaped;
// zeros once it is gone.
struct Cpu {
  double self = 0, children = 0;
};

inline Cpu process_cpu(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const size_t close = line.rfind(')');
  unsigned long long ut = 0, st = 0, cut = 0, cst = 0;
  if (close == std::string::npos ||
      sscanf(line.c_str() + close + 2,
             "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %llu %llu", &ut, &st, &cut,
             &cst) != 4) {
    return {};
  }
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  return {static_cast<double>(ut + st) / tick, static_cast<double>(cut + cst) / tick};
}

// The process's proportional set size in KiB (its private memory plus its
// share of what it maps with others, shared memory included); 0 once it is gone.
inline uint64_t pss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  for (std::string line; std::getline(in, line);) {
    unsigned long long kib = 0;
    if (sscanf(line.c_str(), "Pss: %llu kB", &kib) == 1) return kib;
  }
  return 0;
}

inline std::string find_daemon(const std::string& given) {
  if (given.find('/') != std::string::npos) return access(given.c_str(), X_OK) == 0 ? given : "";
  if (!given.empty()) return given;  // posix_spawnp searches PATH
  std::error_code ec;
  const fs::path dir = fs::read_symlink("/proc/self/exe", ec).parent_path();
  if (ec) return "";
  for (const fs::path& p : {dir / "shell-poold", dir / ".." / "supervisor" / "shell-poold"}) {
    if (access(p.c_str(), X_OK) == 0) return p.lexically_normal().string();
  }
  return "";
}

}  // namespace sp::bench
