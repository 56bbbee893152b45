#include "supervisor/role_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "common/sys.h"
#include "common/unique_fd.h"

namespace sp::supervisor {

namespace {

constexpr int kFirstFd = 3;
constexpr size_t kMaxFds = 256;  // the frontend's: 3 + shm::kWorkerSlots

// In the forked child: async-signal-safe calls only; on failure the errno
// goes to the error pipe and the child exits.
[[noreturn]] void exec_child(const RoleProcess::Spec& spec, const char* const* argv,
                             const char* const* envp, pid_t parent, int error_fd) {
  auto fail = [error_fd] {
    int e = errno;
    [[maybe_unused]] ssize_t w = ::write(error_fd, &e, sizeof e);
    _exit(127);
  };
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) _exit(1);  // the supervisor died before prctl
  if (!spec.cgroup_procs.empty()) {     // best effort: without it only its OOM kills go uncounted
    int fd = ::open(spec.cgroup_procs.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd >= 0) [[maybe_unused]]
      ssize_t w = ::write(fd, "0", 1);  // exec closes fd
  }
  // Move the inherited fds out of the way first, then to their fixed numbers
  // (dup2 clears FD_CLOEXEC on the copies; everything else closes on exec).
  int tmp[kMaxFds];
  for (size_t i = 0; i < spec.fds.size(); ++i)
    if ((tmp[i] = ::fcntl(spec.fds[i], F_DUPFD_CLOEXEC, 256)) < 0) fail();
  for (size_t i = 0; i < spec.fds.size(); ++i)
    if (::dup2(tmp[i], kFirstFd + int(i)) < 0) fail();
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(spec.program.c_str(), const_cast<char* const*>(argv), const_cast<char* const*>(envp));
  fail();
  _exit(127);  // not reached
}

}  // namespace

Result<RoleProcess> RoleProcess::start(const Spec& spec) {
  if (spec.fds.size() > kMaxFds) return Error{EINVAL, "too many fds for a role"};
  std::vector<const char*> argv{"shell-poold"};
  for (const auto& a : spec.args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  std::vector<const char*> envp;
  if (spec.env) {
    for (const auto& e : *spec.env) envp.push_back(e.c_str());
    envp.push_back(nullptr);
  }
  int p[2];
  if (auto r = sys("pipe2", [&] { return ::pipe2(p, O_CLOEXEC); }); !r) return r.error();
  UniqueFd rd(p[0]), wr(p[1]);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();  // the supervisor's heap is small: fork is cheap here
  if (pid == 0) exec_child(spec, argv.data(), spec.env ? envp.data() : environ, parent, wr.get());
  if (pid < 0) return Error{errno, "fork"};
  RoleProcess child(pid);
  wr.reset();  // ours: only the child's copy is left, and exec closes it
  int child_errno = 0;
  ssize_t n = sys_raw([&] { return ::read(rd.get(), &child_errno, sizeof child_errno); });
  if (n == sizeof child_errno) {
    ::waitpid(pid, nullptr, 0);
    child.pid_ = 0;
    return Error{child_errno, "exec " + spec.program};
  }
  return child;
}

RoleProcess& RoleProcess::operator=(RoleProcess&& other) noexcept {
  if (this != &other) {
    kill_and_reap();
    pid_ = other.pid_;
    other.pid_ = 0;
  }
  return *this;
}

RoleProcess::~RoleProcess() {
  kill_and_reap();
}

void RoleProcess::signal(int sig) const {
  if (pid_ > 0) ::kill(pid_, sig);
}

void RoleProcess::kill_and_reap() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = 0;
}

}  // namespace sp::supervisor
