// sys(): the one syscall wrapper. Retries EINTR, reads errno right at the call
// site and turns a failure into an Error that names what was being done.
// Async-signal-safe only when `what` is a literal and the call succeeds; do not
// use it between vfork and exec.
#pragma once

#include <cerrno>
#include <string>
#include <type_traits>
#include <utility>

#include "common/result.h"
#include "common/unique_fd.h"

namespace sp {

template <typename F>
auto sys(const char* what, F&& call) -> Result<decltype(call())> {
  using R = decltype(call());
  static_assert(std::is_integral_v<R>, "sys() wraps calls returning an integer");
  for (;;) {
    R r = call();
    if (r != static_cast<R>(-1)) return r;
    int e = errno;
    if (e == EINTR) continue;
    return Error{e, what};
  }
}

// Same, for a call whose failure is expected and handled by the caller
// (EAGAIN on a non-blocking fd): returns -errno instead of an Error.
template <typename F>
auto sys_raw(F&& call) -> decltype(call()) {
  for (;;) {
    auto r = call();
    if (r != -1) return r;
    if (errno != EINTR) return -static_cast<decltype(r)>(errno);
  }
}

// sys() for a call that makes a new fd: the fd, owned.
template <typename F>
Result<UniqueFd> new_fd(const char* what, F&& call) {
  auto fd = sys(what, std::forward<F>(call));
  if (!fd) return fd.error();
  return UniqueFd(*fd);
}

}  // namespace sp
