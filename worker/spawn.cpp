#include "worker/spawn.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string_view>
#include <utility>

#include "common/sys.h"

namespace sp::worker {

namespace {

constexpr std::string_view kDefaultPath = "/usr/local/bin:/usr/bin:/bin";

// The vfork child's steps that can fail.
enum class Step : uint8_t { kNone, kCgroup, kSetsid, kTty, kChdir, kDup2, kSetrlimit, kExec };

// What the vfork'd child reports back when it fails, and why no error pipe is
// needed for it. A fork()ed child has memory of its own, so an exec failure
// must travel back through a close-on-exec pipe. A vfork()ed child borrows
// ours, and we stay suspended until it has either exec'd (then it wrote
// nothing) or _exit'ed (after writing here). So when vfork returns to us,
// this already says whether and where the child failed, and a failure is
// reported as an Error, never mistaken for the command's exit status 127.
// volatile: the compiler cannot see the child's stores (vfork returns twice),
// so the parent must really load them.
struct ChildFailure {
  volatile int error = 0;
  volatile Step step = Step::kNone;
};

std::string describe(Step step, const shm::DecodedSpec& spec, const std::string& program) {
  switch (step) {
    case Step::kCgroup:
      return "cannot move into the job's cgroup";
    case Step::kSetsid:
      return "setsid";
    case Step::kTty:
      return "cannot make the job's terminal its controlling terminal";
    case Step::kChdir:
      return "cannot change directory to " + std::string(spec.cwd);
    case Step::kDup2:
      return "dup2";
    case Step::kSetrlimit:
      return "cannot set the job's resource limits";
    case Step::kExec:
    case Step::kNone:
      break;
  }
  return "cannot execute " + program;
}

// Every signal blocked in this thread for the object's lifetime; the old
// mask comes back when it is destroyed (in the parent only: the vfork child
// never returns from exec_child). Until the child has reset them it runs our
// signal handlers, on our stack and in our memory: a handler run there would
// change our state under us, and a signal meant for us could be taken by the
// child. Blocked, ours wait until the mask is restored, right after vfork
// returns, and the child's until it empties its mask just before exec.
class AllSignalsBlocked {
 public:
  AllSignalsBlocked() {
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old_);
  }
  ~AllSignalsBlocked() { ::pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  AllSignalsBlocked(const AllSignalsBlocked&) = delete;
  AllSignalsBlocked& operator=(const AllSignalsBlocked&) = delete;

 private:
  sigset_t old_;
};

// A pipe {read end, write end}; `ours` (0 or 1) is made non-blocking: the
// command gets an ordinary blocking end.
Result<std::pair<UniqueFd, UniqueFd>> make_pipe(int ours) {
  int fds[2];
  if (auto r = sys("pipe2", [&] { return ::pipe2(fds, O_CLOEXEC); }); !r) return r.error();
  UniqueFd rd(fds[0]), wr(fds[1]);
  if (auto r = sys("fcntl O_NONBLOCK", [&] { return ::fcntl(fds[ours], F_SETFL, O_NONBLOCK); }); !r)
    return r.error();
  return std::pair{std::move(rd), std::move(wr)};
}

// A new terminal of `rows` x `cols`: {master (ours, non-blocking), slave
// (the command's stdin, stdout and stderr)}.
Result<std::pair<UniqueFd, UniqueFd>> make_pty(uint16_t rows, uint16_t cols) {
  auto master =
      new_fd("posix_openpt", [] { return ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC); });
  if (!master) return master.error();
  const int m = master->get();
  if (auto r = sys("grantpt", [&] { return ::grantpt(m); }); !r) return r.error();
  if (auto r = sys("unlockpt", [&] { return ::unlockpt(m); }); !r) return r.error();
  char name[64];
  if (int e = ::ptsname_r(m, name, sizeof name); e != 0) return Error{e, "ptsname_r"};
  auto slave =
      new_fd("open the terminal", [&] { return ::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC); });
  if (!slave) return slave.error();
  winsize ws{rows, cols, 0, 0};
  if (auto r = sys("TIOCSWINSZ", [&] { return ::ioctl(m, TIOCSWINSZ, &ws); }); !r) return r.error();
  if (auto r = sys("fcntl O_NONBLOCK", [&] { return ::fcntl(m, F_SETFL, O_NONBLOCK); }); !r)
    return r.error();
  return std::pair{std::move(*master), std::move(*slave)};
}

// Runs in the vfork child, with every signal blocked: async-signal-safe calls
// only, no allocation, no return; failures are written to `failure` and end
// in _exit(127).
[[noreturn]] void exec_child(const shm::DecodedSpec& spec, const char* program, int in, int out,
                             int err, bool tty, const char* const* cgroup_procs,
                             const SignalDispositions& dispositions, ChildFailure* failure) {
  auto fail = [failure](Step step) {
    failure->error = errno;
    failure->step = step;
    _exit(127);
  };
  // Into the job's cgroup first, so everything it starts is counted and killed
  // with it. Writing "0" moves the writer; the fd is closed below.
  for (const char* const* p = cgroup_procs; p && *p; ++p) {
    int fd = ::open(*p, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::write(fd, "0", 1) != 1) fail(Step::kCgroup);
  }
  if (::setsid() < 0) fail(Step::kSetsid);
  // A PTY job: the new session's controlling terminal is its terminal.
  if (tty && ::ioctl(in, TIOCSCTTY, 0) < 0) fail(Step::kTty);
  if (spec.cwd && ::chdir(spec.cwd) < 0) fail(Step::kChdir);
  if (::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) fail(Step::kDup2);
  // Our fds are all close-on-exec, but one the daemon inherited without it
  // would reach every command (and a pipe held open that way never reaches
  // EOF for whoever started the daemon). The vfork child has its own fd
  // table: this closes nothing of ours. Best effort: an old kernel lacks it.
  ::close_range(3, ~0u, 0);
  const std::pair<int, uint64_t> limits[] = {{RLIMIT_CPU, spec.limits.cpu_seconds},
                                             {RLIMIT_AS, spec.limits.address_space_bytes},
                                             {RLIMIT_NOFILE, spec.limits.open_files},
                                             {RLIMIT_NPROC, spec.limits.processes},
                                             {RLIMIT_FSIZE, spec.limits.file_size_bytes}};
  bool in_cgroup = cgroup_procs && *cgroup_procs;
  for (const auto& [resource, value] : limits) {
    // RLIMIT_NPROC counts all of the uid's processes: in a cgroup, pids.max
    // counts the job's alone and is the limit.
    if (value == 0 || (resource == RLIMIT_NPROC && in_cgroup)) continue;
    // CPU: hard one second above soft, so the command first gets SIGXCPU
    // (catchable: time to clean up), then the kernel's SIGKILL.
    bool room = value < RLIM_INFINITY - 1;
    rlimit rl{rlim_t(value), rlim_t(resource == RLIMIT_CPU && room ? value + 1 : value)};
    // At or above the hard limit we run under: no further limit. (Only a
    // daemon with CAP_SYS_RESOURCE could raise it; asking for more than the
    // ceiling is not an error.)
    rlimit now{};
    if (::getrlimit(resource, &now) == 0 && now.rlim_max != RLIM_INFINITY &&
        rl.rlim_max > now.rlim_max) {
      rl.rlim_max = now.rlim_max;
      rl.rlim_cur = std::min(rl.rlim_cur, now.rlim_max);
    }
    if (::setrlimit(resource, &rl) < 0) fail(Step::kSetrlimit);
  }
  // Every disposition back to the default: a handler of ours must not run
  // here once the mask is emptied, and a signal ignored by whoever started
  // the daemon (a shell's SIG_IGN for SIGINT in a background job) would stay
  // ignored across exec, so job_signal and job_cancel could not reach the
  // command. vfork does not share the handler table (no CLONE_SIGHAND): ours
  // stay as they are.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig : dispositions.changed()) ::sigaction(sig, &dfl, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(program, const_cast<char* const*>(spec.argv.data()),
           const_cast<char* const*>(spec.env.data()));
  fail(Step::kExec);
  _exit(127);  // not reached: fail() exits
}

std::string_view path_of(const shm::DecodedSpec& spec) {
  for (const char* const* e = spec.env.data(); *e; ++e)
    if (std::strncmp(*e, "PATH=", 5) == 0) return *e + 5;
  return kDefaultPath;
}

}  // namespace

SignalDispositions SignalDispositions::current() {
  SignalDispositions d;
  for (int sig = 1; sig < NSIG; ++sig) {
    struct sigaction now {};
    if (sig != SIGKILL && sig != SIGSTOP && ::sigaction(sig, nullptr, &now) == 0 &&
        now.sa_handler != SIG_DFL)
      d.signals_[d.count_++] = sig;
  }
  return d;
}

Process::Process(Process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::move(other.pidfd_)),
      pipe_{std::move(other.pipe_[kStdout]), std::move(other.pipe_[kStderr])},
      stdin_(std::move(other.stdin_)),
      terminal_(std::move(other.terminal_)),
      pgid_word_(std::exchange(other.pgid_word_, nullptr)) {}

Process& Process::operator=(Process&& other) noexcept {
  if (this == &other) return *this;
  if (owned()) kill_and_reap();
  pid_ = std::exchange(other.pid_, -1);
  pidfd_ = std::move(other.pidfd_);
  for (Stream s : kStreams) pipe_[s] = std::move(other.pipe_[s]);
  stdin_ = std::move(other.stdin_);
  terminal_ = std::move(other.terminal_);
  pgid_word_ = std::exchange(other.pgid_word_, nullptr);
  return *this;
}

Process::~Process() {
  if (owned()) kill_and_reap();
}

ssize_t Process::read(Stream s, std::span<char> buf) {
  return sys_raw([&] { return ::read(pipe_[s].get(), buf.data(), buf.size()); });
}

ssize_t Process::write_stdin(std::span<const unsigned char> bytes) {
  return sys_raw([&] { return ::write(stdin_.get(), bytes.data(), bytes.size()); });
}

void Process::resize(uint16_t rows, uint16_t cols) {
  winsize ws{rows, cols, 0, 0};
  if (terminal_) ::ioctl(terminal_.get(), TIOCSWINSZ, &ws);
}

bool Process::signal_foreground(int sig) {
  if (!owned()) return false;
  // The terminal is the job's: its foreground group is one of the job's own
  // (a reaped leader aside, which owned() rules out).
  const pid_t fg = terminal_ ? ::tcgetpgrp(terminal_.get()) : -1;
  ::kill(fg > 0 ? -fg : -pid_, sig);
  return true;
}

void Process::publish_pgid(std::atomic<int32_t>& word) {
  word.store(pid_, std::memory_order_release);
  pgid_word_ = &word;
}

bool Process::signal_group(int sig) {
  if (!owned()) return false;
  ::kill(-pid_, sig);
  return true;
}

bool Process::ended() const {
  if (!owned()) return false;
  siginfo_t info{};
  return ::waitid(P_PID, id_t(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid != 0;
}

Process::Exit Process::kill_and_reap() {
  Exit exit;
  if (!signal_group(SIGKILL)) return exit;  // not reaped yet: the pgid is still the job's
  if (pgid_word_) pgid_word_->store(0, std::memory_order_release);
  siginfo_t info{};
  if (sys_raw([&] { return ::waitid(P_PID, id_t(pid_), &info, WEXITED); }) == 0) {
    if (info.si_code == CLD_EXITED) {
      exit.code = info.si_status;
    } else {
      exit.signal = info.si_status;
    }
  }
  pid_ = -1;
  pgid_word_ = nullptr;
  pidfd_.reset();
  return exit;
}

Result<std::string> resolve_program(const shm::DecodedSpec& spec) {
  std::string_view name = spec.path;
  if (name.find('/') != std::string_view::npos) return std::string(name);
  std::string_view path = path_of(spec);
  bool found_not_executable = false;
  std::string candidate;
  while (true) {
    size_t colon = path.find(':');
    std::string_view dir = path.substr(0, colon);
    candidate.assign(dir.empty() ? "." : dir).append("/").append(name);
    int r = sys_raw([&] { return ::access(candidate.c_str(), X_OK); });
    if (r == 0) return candidate;
    if (r == -EACCES) found_not_executable = true;
    if (colon == std::string_view::npos) break;
    path.remove_prefix(colon + 1);
  }
  if (found_not_executable) return Error{EACCES, "cannot execute " + std::string(name)};
  return Error{ENOENT, "command not found: " + std::string(name)};
}

// spawn() on a new terminal: the master is read as stdout and written as
// stdin (two fds of it, so each can be closed alone), and kept for resizes.
Result<Process> spawn_on_pty(const shm::DecodedSpec& spec, const std::string& program,
                             const char* const* cgroup_procs,
                             const SignalDispositions& dispositions) {
  auto pty = make_pty(spec.pty_rows, spec.pty_cols ? spec.pty_cols : 80);
  if (!pty) return pty.error();
  auto input = new_fd("dup", [&] { return ::fcntl(pty->first.get(), F_DUPFD_CLOEXEC, 0); });
  if (!input) return input.error();
  auto control = new_fd("dup", [&] { return ::fcntl(pty->first.get(), F_DUPFD_CLOEXEC, 0); });
  if (!control) return control.error();
  ChildFailure failure;
  const char* prog = program.c_str();
  pid_t pid;
  int vfork_error;
  {
    AllSignalsBlocked blocked;
    pid = ::vfork();
    if (pid == 0)
      exec_child(spec, prog, pty->second.get(), pty->second.get(), pty->second.get(), true,
                 cgroup_procs, dispositions, &failure);
    vfork_error = errno;
  }
  if (pid < 0) return Error{vfork_error, "vfork"};
  if (failure.step != Step::kNone) {
    sys_raw([&] { return ::waitpid(pid, nullptr, 0); });
    return Error{failure.error, describe(failure.step, spec, program)};
  }
  Process proc(pid);
  auto pidfd = new_fd("pidfd_open", [&] { return int(::syscall(SYS_pidfd_open, pid, 0)); });
  if (!pidfd) return pidfd.error();
  proc.pidfd_ = std::move(*pidfd);
  proc.pipe_[kStdout] = std::move(pty->first);
  proc.stdin_ = std::move(*input);
  proc.terminal_ = std::move(*control);
  return proc;  // the slave closes here: the command holds the only copies
}

Result<Process> spawn(const shm::DecodedSpec& spec, const std::string& program, int devnull,
                      bool stdin_pipe, const char* const* cgroup_procs,
                      const SignalDispositions& dispositions) {
  if (spec.pty_rows) return spawn_on_pty(spec, program, cgroup_procs, dispositions);
  auto out = make_pipe(0);
  if (!out) return out.error();
  auto err = make_pipe(0);
  if (!err) return err.error();
  // Initialized once, never assigned: nothing here may change around the vfork.
  auto in = stdin_pipe ? make_pipe(1)
                       : Result<std::pair<UniqueFd, UniqueFd>>(std::pair<UniqueFd, UniqueFd>());
  if (!in) return in.error();

  ChildFailure failure;
  const char* prog = program.c_str();
  int out_w = out->second.get(), err_w = err->second.get();
  pid_t pid;
  int vfork_error;
  {
    AllSignalsBlocked blocked;
    // Not through sys(): the child would return from the lambda's frame.
    pid = ::vfork();
    if (pid == 0)
      exec_child(spec, prog, stdin_pipe ? in->first.get() : devnull, out_w, err_w, false,
                 cgroup_procs, dispositions, &failure);
    vfork_error = errno;
  }
  if (pid < 0) return Error{vfork_error, "vfork"};
  if (failure.step != Step::kNone) {
    sys_raw([&] { return ::waitpid(pid, nullptr, 0); });  // it has _exit'ed
    return Error{failure.error, describe(failure.step, spec, program)};
  }
  Process proc(pid);  // owns it from here: an early return kills and reaps it
  auto pidfd = new_fd("pidfd_open", [&] { return int(::syscall(SYS_pidfd_open, pid, 0)); });
  if (!pidfd) return pidfd.error();
  proc.pidfd_ = std::move(*pidfd);
  proc.pipe_[kStdout] = std::move(out->first);
  proc.pipe_[kStderr] = std::move(err->first);
  proc.stdin_ = std::move(in->second);
  return proc;
}

}  // namespace sp::worker
