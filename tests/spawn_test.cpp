// Spawning (worker/spawn.h): failures come back as errors, the child starts
// clean (own session, fds 0-2 only, empty signal mask, default dispositions,
// its rlimits) whatever the parent had, and a Process never leaves one behind.
#include "worker/spawn.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"

using namespace sp;
using namespace sp::worker;

namespace {

// A spec as the worker decodes one, over strings it owns.
class Command {
 public:
  explicit Command(std::vector<std::string> argv) : argv_(std::move(argv)) {
    for (const auto& a : argv_) spec.argv.push_back(a.c_str());
    spec.argv.push_back(nullptr);
    spec.env = {env_.c_str(), nullptr};
    spec.path = argv_[0].c_str();
  }
  static Command sh(const std::string& script) { return Command({"/bin/sh", "-c", script}); }

  shm::DecodedSpec spec;

 private:
  std::vector<std::string> argv_;
  std::string env_ = "PATH=/usr/bin:/bin";
};

class DevNull {
 public:
  DevNull() : fd_(::open("/dev/null", O_RDONLY | O_CLOEXEC)) { REQUIRE(fd_); }
  int get() const { return fd_.get(); }

 private:
  UniqueFd fd_;
};

Result<Process> start(const Command& c) {
  static DevNull devnull;
  // Taken for every spawn: the tests change dispositions between them.
  return spawn(c.spec, c.spec.path, devnull.get(), false, nullptr, SignalDispositions::current());
}

// Reads a pipe to EOF (within 10 s).
std::string read_to_eof(Process& p, Stream s) {
  std::string out;
  char buf[4096];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    ssize_t n = p.read(s, buf);
    if (n > 0) {
      out.append(buf, size_t(n));
    } else if (n == -EAGAIN) {
      pollfd pfd{p.pipe(s), POLLIN, 0};
      ::poll(&pfd, 1, 100);
    } else {
      break;
    }
  }
  return out;
}

// How it ended, once its pidfd says it has exited (EOF on its stdout is not
// enough: coreutils close stdout before they exit).
Process::Exit wait_exit(Process& p) {
  pollfd pfd{p.pidfd(), POLLIN, 0};
  REQUIRE(::poll(&pfd, 1, 10'000) == 1);
  return p.kill_and_reap();
}

// What the command printed on stdout, once it has exited.
std::string output_of(const Command& c) {
  auto p = start(c);
  REQUIRE(p);
  std::string out = read_to_eof(*p, kStdout);
  Process::Exit exit = wait_exit(*p);
  INFO(out);
  CHECK(exit.code == 0);
  return out;
}

// The value of `field:` in /proc/<pid>/status text.
std::string status_field(const std::string& status, const std::string& field) {
  std::istringstream in(status);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(field + ":", 0) == 0) {
      std::istringstream v(line.substr(field.size() + 1));
      std::string value;
      v >> value;
      return value;
    }
  return "<missing " + field + ">";
}

// Soft and hard values of the limit named `name` in /proc/<pid>/limits text.
std::pair<std::string, std::string> limit_of(const std::string& limits, const std::string& name) {
  std::istringstream in(limits);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(name, 0) == 0) {
      std::istringstream v(line.substr(name.size()));
      std::string soft, hard;
      v >> soft >> hard;
      return {soft, hard};
    }
  return {};
}

// Running: not gone and not a zombie.
bool running(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return false;
  size_t close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z';
}

bool wait_until(auto done, double seconds) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

bool no_children_left() {
  errno = 0;
  return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD;
}

bool same_mask(const sigset_t& a, const sigset_t& b) {
  for (int sig = 1; sig < NSIG; ++sig)
    if (sigismember(&a, sig) != sigismember(&b, sig)) return false;
  return true;
}

sigset_t current_mask() {
  sigset_t now;
  ::pthread_sigmask(SIG_SETMASK, nullptr, &now);
  return now;
}

// Blocks exactly these signals and ignores some in the test process for its
// lifetime.
class HostileSignals {
 public:
  HostileSignals() {
    sigemptyset(&mask_);
    for (int sig : {SIGUSR1, SIGTERM, SIGCHLD, SIGHUP}) sigaddset(&mask_, sig);
    ::pthread_sigmask(SIG_SETMASK, &mask_, &old_mask_);
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    ::sigaction(SIGINT, &ign, &old_int_);
    ::sigaction(SIGPIPE, &ign, &old_pipe_);
  }
  ~HostileSignals() {
    ::sigaction(SIGPIPE, &old_pipe_, nullptr);
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }
  const sigset_t& mask() const { return mask_; }

 private:
  sigset_t mask_;
  sigset_t old_mask_;
  struct sigaction old_int_;
  struct sigaction old_pipe_;
};

}  // namespace

TEST_CASE("a missing program is reported as an error, not as an exit status", "[spawn]") {
  Command c({"sp-no-such-program"});
  auto resolved = resolve_program(c.spec);
  REQUIRE_FALSE(resolved);
  CHECK(resolved.error().code == ENOENT);
  CHECK(resolved.error().message().find("command not found: sp-no-such-program") !=
        std::string::npos);

  Command direct({"/nonexistent/sp-no-such-program"});
  auto p = start(direct);
  REQUIRE_FALSE(p);
  CHECK(p.error().code == ENOENT);
  CHECK(p.error().context == "cannot execute /nonexistent/sp-no-such-program");
  CHECK(no_children_left());  // the failed child was reaped
}

TEST_CASE("a directory the child cannot change to is reported with the directory", "[spawn]") {
  Command c({"/bin/true"});
  c.spec.cwd = "/nonexistent/sp-dir";
  auto p = start(c);
  REQUIRE_FALSE(p);
  CHECK(p.error().code == ENOENT);
  CHECK(p.error().context == "cannot change directory to /nonexistent/sp-dir");
  CHECK(no_children_left());
}

TEST_CASE("the child runs in a session and process group of its own", "[spawn]") {
  auto p = start(Command({"/bin/sleep", "30"}));
  REQUIRE(p);
  pid_t pid = p->pid();
  REQUIRE(pid > 0);
  CHECK(::getpgid(pid) == pid);
  CHECK(::getsid(pid) == pid);
  CHECK(::getsid(pid) != ::getsid(0));
}

TEST_CASE("the child has only fds 0, 1 and 2, even where the parent leaked one", "[spawn]") {
  // Opened without O_CLOEXEC, as by whoever started the daemon.
  UniqueFd leaked(::open("/dev/null", O_RDONLY));
  REQUIRE(leaked);
  // The shell lists its own fds from a child (ls), whose fds do not count.
  std::string out = output_of(Command::sh("ls /proc/$$/fd; readlink /proc/$$/fd/0"));
  CHECK(out == "0\n1\n2\n/dev/null\n");
}

TEST_CASE("the child starts with no signal blocked or ignored, whatever the parent had",
          "[spawn]") {
  HostileSignals hostile;
  std::string status = output_of(Command({"/bin/cat", "/proc/self/status"}));
  CHECK(status_field(status, "SigBlk") == "0000000000000000");
  CHECK(status_field(status, "SigIgn") == "0000000000000000");
}

TEST_CASE("SignalDispositions lists the signals ignored or caught here, and only those",
          "[spawn]") {
  auto has = [](const SignalDispositions& d, int sig) {
    for (int s : d.changed())
      if (s == sig) return true;
    return false;
  };
  const SignalDispositions before = SignalDispositions::current();
  HostileSignals hostile;  // ignores SIGINT and SIGPIPE, blocks (does not catch) others
  const SignalDispositions now = SignalDispositions::current();
  CHECK(has(now, SIGINT));
  CHECK(has(now, SIGPIPE));
  CHECK(has(now, SIGUSR1) == has(before, SIGUSR1));  // blocked is not changed
  CHECK_FALSE(has(now, SIGKILL));
  // Caught is changed too; back to the default is not.
  struct sigaction caught {
  }, old{};
  caught.sa_handler = [](int) {};
  ::sigaction(SIGUSR2, &caught, &old);
  CHECK(has(SignalDispositions::current(), SIGUSR2));
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGUSR2, &dfl, nullptr);
  CHECK_FALSE(has(SignalDispositions::current(), SIGUSR2));
  ::sigaction(SIGUSR2, &old, nullptr);
}

TEST_CASE("the parent's signal mask is the same after a spawn as before", "[spawn]") {
  HostileSignals hostile;
  REQUIRE(same_mask(current_mask(), hostile.mask()));
  {
    auto p = start(Command({"/bin/true"}));
    REQUIRE(p);
    CHECK(same_mask(current_mask(), hostile.mask()));
  }
  auto failed = start(Command({"/nonexistent/sp-no-such-program"}));
  REQUIRE_FALSE(failed);
  CHECK(same_mask(current_mask(), hostile.mask()));
}

TEST_CASE("the job's resource limits are set in the child", "[spawn]") {
  Command c({"/bin/cat", "/proc/self/limits"});
  c.spec.limits.cpu_seconds = 100;
  c.spec.limits.open_files = 64;
  c.spec.limits.file_size_bytes = 1 << 20;
  std::string limits = output_of(c);
  // CPU: the hard limit a second above the soft one (SIGXCPU first).
  CHECK(limit_of(limits, "Max cpu time") == std::pair<std::string, std::string>{"100", "101"});
  CHECK(limit_of(limits, "Max open files") == std::pair<std::string, std::string>{"64", "64"});
  CHECK(limit_of(limits, "Max file size") ==
        std::pair<std::string, std::string>{"1048576", "1048576"});
}

TEST_CASE("a limit at or above the hard limit is no further limit, without privileges", "[spawn]") {
  // In a child of ours: its hard limits lowered, and (as root) without the
  // privilege to raise them again, as an unprivileged daemon runs.
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    rlimit nofile{256, 512}, cpu{50, 50};
    if (::setrlimit(RLIMIT_NOFILE, &nofile) != 0 || ::setrlimit(RLIMIT_CPU, &cpu) != 0) _exit(10);
    if (::getuid() == 0 && ::setresuid(65534, 65534, 65534) != 0) _exit(11);
    Command c({"/bin/cat", "/proc/self/limits"});
    c.spec.limits.open_files = UINT64_MAX;  // "unlimited", as a client may write it
    c.spec.limits.cpu_seconds = 100;
    auto p = start(c);
    if (!p) _exit(12);
    std::string limits = read_to_eof(*p, kStdout);
    pollfd exited{p->pidfd(), POLLIN, 0};
    if (::poll(&exited, 1, 10'000) != 1 || p->kill_and_reap().code != 0) _exit(13);
    if (limit_of(limits, "Max open files") != std::pair<std::string, std::string>{"512", "512"})
      _exit(14);
    if (limit_of(limits, "Max cpu time") != std::pair<std::string, std::string>{"50", "50"})
      _exit(15);
    _exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);  // 12: the job could not start
}

TEST_CASE("kill_and_reap reports the signal and clears the published process group", "[spawn]") {
  auto p = start(Command({"/bin/sleep", "30"}));
  REQUIRE(p);
  std::atomic<int32_t> pgid{0};
  p->publish_pgid(pgid);
  CHECK(pgid.load() == p->pid());
  Process::Exit exit = p->kill_and_reap();
  CHECK(exit.signal == SIGKILL);
  CHECK(pgid.load() == 0);
  CHECK_FALSE(p->owned());
  CHECK(p->pidfd() < 0);
  CHECK_FALSE(p->signal_group(SIGTERM));  // reaped: the pgid may belong to someone else now
  CHECK(no_children_left());
}

TEST_CASE("a command's exit status comes back when its process is reaped", "[spawn]") {
  auto p = start(Command::sh("echo out; echo err >&2; exit 3"));
  REQUIRE(p);
  CHECK(read_to_eof(*p, kStdout) == "out\n");
  CHECK(read_to_eof(*p, kStderr) == "err\n");
  Process::Exit exit = wait_exit(*p);
  CHECK(exit.code == 3);
  CHECK(exit.signal == 0);
}

TEST_CASE("destroying a Process kills its whole group and leaves no process behind", "[spawn]") {
  pid_t leader = 0, background = 0;
  {
    auto p = start(Command::sh("sleep 300 & echo $!; exec sleep 300"));
    REQUIRE(p);
    leader = p->pid();
    std::string line;
    char c;
    while (line.find('\n') == std::string::npos) {
      ssize_t n = p->read(kStdout, {&c, 1});
      if (n == 1) line += c;
      if (n == -EAGAIN) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      REQUIRE(n != 0);
    }
    background = std::stoi(line);
    REQUIRE(running(background));
    Process moved = std::move(*p);  // the handle moves; the process goes with it
    CHECK_FALSE(p->owned());
    CHECK(moved.pid() == leader);
  }
  CHECK(::kill(leader, 0) == -1);  // killed and reaped: not even a zombie
  CHECK(errno == ESRCH);
  CHECK(wait_until([&] { return !running(background); }, 5));
  CHECK(no_children_left());
}
