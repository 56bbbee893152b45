#include "common/signals.h"

#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cctype>

#include "common/sys.h"

namespace sp {

std::string signal_name(int sig) {
  const char* abbrev = sig > 0 ? sigabbrev_np(sig) : nullptr;
  return abbrev ? std::string("SIG") + abbrev : std::string();
}

std::optional<int> signal_number(std::string_view name) {
  std::string upper(name);
  for (char& ch : upper) ch = char(std::toupper(static_cast<unsigned char>(ch)));
  std::string_view bare(upper);
  if (bare.substr(0, 3) == "SIG") bare.remove_prefix(3);
  for (int sig = 1; sig <= 64; ++sig)
    if (const char* abbrev = sigabbrev_np(sig); abbrev && bare == abbrev) return sig;
  return std::nullopt;
}

Result<UniqueFd> open_signalfd(std::initializer_list<int> signals) {
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : signals) sigaddset(&mask, s);
  if (auto r = sys("sigprocmask", [&] { return ::sigprocmask(SIG_BLOCK, &mask, nullptr); }); !r)
    return r.error();
  return new_fd("signalfd", [&] { return ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK); });
}

int drain_signalfd(int fd) {
  int last = 0;
  signalfd_siginfo si;
  while (sys_raw([&] { return ::read(fd, &si, sizeof si); }) == sizeof si) last = int(si.ssi_signo);
  return last;
}

}  // namespace sp
