// The test-only daemon: crash points that fire (see crash_point.h).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "common/crash_point.h"
#include "common/unique_fd.h"

namespace sp {

void crash_point(const char* name) {
  const char* wanted = std::getenv("SHELL_POOL_CRASH_POINT");
  if (!wanted || std::strcmp(wanted, name) != 0) return;
  if (const char* marker = std::getenv("SHELL_POOL_CRASH_MARKER")) {
    UniqueFd once(::open(marker, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!once) return;  // another process (or an earlier life) already died here
  }
  // SIGKILL: a death at any instruction with no cleanup. SHELL_POOL_CRASH_SIGNAL
  // (a number) models a crash instead (SIGSEGV: the role's own fault).
  const char* crash = std::getenv("SHELL_POOL_CRASH_SIGNAL");
  const int sig = crash ? std::atoi(crash) : SIGKILL;
  ::signal(sig, SIG_DFL);  // no handler of ours (or a sanitizer's) in the way
  ::kill(::getpid(), sig);
}

}  // namespace sp
