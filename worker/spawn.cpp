#include "worker/spawn.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string_view>

#include "common/sys.h"

namespace sp::worker {

namespace {

constexpr std::string_view kDefaultPath = "/usr/local/bin:/usr/bin:/bin";

// What the vfork'd child reports back. The child shares our memory until it
// execs or exits, so it writes here directly (no error pipe needed).
struct ChildFailure {
  int error = 0;
  const char* step = nullptr;
};

Result<std::pair<UniqueFd, UniqueFd>> make_pipe() {
  int fds[2];
  if (auto r = sys("pipe2", [&] { return ::pipe2(fds, O_CLOEXEC); }); !r) return r.error();
  UniqueFd rd(fds[0]), wr(fds[1]);
  // Only our end is non-blocking: the command gets an ordinary blocking pipe.
  if (auto r = sys("fcntl O_NONBLOCK", [&] { return ::fcntl(rd.get(), F_SETFL, O_NONBLOCK); }); !r)
    return r.error();
  return std::pair{std::move(rd), std::move(wr)};
}

// Runs in the vfork child: async-signal-safe calls only, no allocation, no
// return; failures are written to `failure` and end in _exit(127).
[[noreturn]] void exec_child(const shm::DecodedSpec& spec, const char* program, int devnull,
                             int out, int err, const char* const* cgroup_procs,
                             ChildFailure* failure) {
  auto fail = [failure](const char* step) {
    failure->error = errno;
    failure->step = step;
    _exit(127);
  };
  // Into the job's cgroup first, so everything it starts is counted and killed
  // with it. Writing "0" moves the writer; exec closes the fd (O_CLOEXEC).
  for (const char* const* p = cgroup_procs; p && *p; ++p) {
    int fd = ::open(*p, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::write(fd, "0", 1) != 1) fail("cgroup");
  }
  if (::setsid() < 0) fail("setsid");
  if (spec.cwd && ::chdir(spec.cwd) < 0) fail("chdir");
  if (::dup2(devnull, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) fail("dup2");
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
    if (::setrlimit(resource, &rl) < 0) fail("setrlimit");
  }
  // A signal ignored by whoever started the daemon (a shell's SIG_IGN for
  // SIGINT in a background job) stays ignored across exec: the command gets
  // the defaults, so job_signal and job_cancel reach it.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig)
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(program, const_cast<char* const*>(spec.argv.data()),
           const_cast<char* const*>(spec.env.data()));
  fail("exec");
  _exit(127);  // not reached: fail() exits
}

std::string_view path_of(const shm::DecodedSpec& spec) {
  for (const char* const* e = spec.env.data(); *e; ++e)
    if (std::strncmp(*e, "PATH=", 5) == 0) return *e + 5;
  return kDefaultPath;
}

}  // namespace

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
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (errno == EACCES) found_not_executable = true;
    if (colon == std::string_view::npos) break;
    path.remove_prefix(colon + 1);
  }
  if (found_not_executable) return Error{EACCES, "cannot execute " + std::string(name)};
  return Error{ENOENT, "command not found: " + std::string(name)};
}

Result<Child> spawn(const shm::DecodedSpec& spec, const std::string& program, int devnull,
                    const char* const* cgroup_procs) {
  auto out = make_pipe();
  if (!out) return out.error();
  auto err = make_pipe();
  if (!err) return err.error();

  ChildFailure failure;
  const char* prog = program.c_str();
  int out_w = out->second.get(), err_w = err->second.get();
  pid_t pid = ::vfork();
  if (pid == 0) exec_child(spec, prog, devnull, out_w, err_w, cgroup_procs, &failure);
  if (pid < 0) return Error{errno, "vfork"};
  if (failure.step) {
    ::waitpid(pid, nullptr, 0);
    std::string what = std::strcmp(failure.step, "chdir") == 0
                           ? "cannot change directory to " + std::string(spec.cwd)
                       : std::strcmp(failure.step, "exec") == 0 ? "cannot execute " + program
                       : std::strcmp(failure.step, "setrlimit") == 0
                           ? std::string("cannot set the job's resource limits")
                       : std::strcmp(failure.step, "cgroup") == 0
                           ? std::string("cannot move into the job's cgroup")
                           : std::string(failure.step);
    return Error{failure.error, what};
  }
  Child child;
  child.pid = pid;
  auto pidfd = sys("pidfd_open", [&] { return int(::syscall(SYS_pidfd_open, pid, 0)); });
  if (!pidfd) {
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return pidfd.error();
  }
  child.pidfd.reset(*pidfd);
  child.out = std::move(out->first);
  child.err = std::move(err->first);
  return child;
}

}  // namespace sp::worker
