// Poller: a worker's epoll set, and the tags its events carry. The loop
// (loop.h) waits on it and dispatches by tag; a job (job.h) watches its pidfd
// and pipes with tags naming its entry and that entry's generation, so an
// event left over from an earlier job in the entry is recognised and dropped.
// Owns the epoll fd; single-threaded.
#pragma once

#include <sys/epoll.h>

#include <cstdint>
#include <span>

#include "common/result.h"
#include "common/sys.h"
#include "common/unique_fd.h"
#include "worker/spawn.h"

namespace sp::worker {

enum class Kind : uint8_t {
  kSubmit = 1,
  kBell,
  kSignal,
  kTimer,
  kPidfd,
  kStdout,
  kStderr,
  kStdin,
  kSocket,    // the remote worker's SSH connections (remote/loop.h)
  kResolver,  // the remote worker's lookups (remote/resolver.h)
};

// Packed into epoll_data as kind:8 | entry:24 | generation:32.
struct Tag {
  Kind kind;
  uint32_t entry = 0;       // a job's entry in the loop
  uint32_t generation = 0;  // of that entry, bumped per job

  static Tag pipe(Stream s, uint32_t entry, uint32_t generation) {
    return {s == kStdout ? Kind::kStdout : Kind::kStderr, entry, generation};
  }
  uint64_t pack() const { return uint64_t(kind) << 56 | uint64_t(entry) << 32 | generation; }
  static Tag unpack(uint64_t t) {
    return {Kind(t >> 56), uint32_t(t >> 32) & 0xffffff, uint32_t(t)};
  }
};

class Poller {
 public:
  Status open() {
    auto ep = new_fd("epoll_create1", [] { return ::epoll_create1(EPOLL_CLOEXEC); });
    if (!ep) return ep.error();
    epoll_ = std::move(*ep);
    return {};
  }

  Status watch(int fd, Tag tag, uint32_t events = EPOLLIN) {
    epoll_event ev{events, {.u64 = tag.pack()}};
    return sys("epoll_ctl ADD", [&] { return ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev); })
        .status();
  }
  Status modify(int fd, Tag tag, uint32_t events) {
    epoll_event ev{events, {.u64 = tag.pack()}};
    return sys("epoll_ctl MOD", [&] { return ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev); })
        .status();
  }
  void unwatch(int fd) { ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr); }

  // Events ready within `timeout_ms` (0 on timeout).
  Result<int> wait(std::span<epoll_event> events, int timeout_ms) {
    return sys("epoll_wait", [&] {
      return ::epoll_wait(epoll_.get(), events.data(), int(events.size()), timeout_ms);
    });
  }

 private:
  UniqueFd epoll_;
};

}  // namespace sp::worker
