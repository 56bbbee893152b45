// RestartPolicy: when a dead role is started again, and when its deaths are
// a crash loop that ends the daemon. One per role; pure (time and randomness
// are passed in).
//
// Every death is restarted with capped exponential backoff: 50 ms doubling
// up to 3 s, plus up to 25 % random jitter so roles that died together do
// not restart together; a role up for 1 s has its backoff reset. A role
// that dies after it reported ready (it served) is restarted forever; so is
// one killed from outside while it started. Only boot failures (a bad
// binary, a bad environment, a crash at start: shm::DeathKind) count
// toward the crash-loop bound: more than `max_boot_failures` of them within
// `window` is a crash loop. A role that reports ready again starts the
// count anew.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>

#include "shm/layout.h"

namespace sp::supervisor {

class RestartPolicy {
 public:
  static constexpr uint64_t kMs = 1'000'000;
  static constexpr uint64_t kFloorNs = 50 * kMs;
  static constexpr uint64_t kCapNs = 3000 * kMs;
  static constexpr uint64_t kHealthyNs = 1000 * kMs;  // up this long: backoff reset

  RestartPolicy(uint32_t max_boot_failures, uint64_t window_ns)
      : max_(max_boot_failures), window_(window_ns) {}

  // The role started at `started_ns` died at `now_ns` as `kind` says: the
  // delay before it starts again, or nullopt for a crash loop. `jitter(n)`
  // draws from 0..n.
  std::optional<uint64_t> on_death(uint64_t started_ns, uint64_t now_ns, shm::DeathKind kind,
                                   const std::function<uint64_t(uint64_t)>& jitter);
  // A live reload changed the bound.
  void set_bound(uint32_t max_boot_failures, uint64_t window_ns) {
    max_ = max_boot_failures;
    window_ = window_ns;
  }
  // Boot failures within the window (for the crash-loop message).
  size_t boot_failures() const { return boot_failures_.size(); }
  // Deaths in a row without a healthy period between them.
  uint32_t streak() const { return streak_; }

 private:
  uint32_t max_;
  uint64_t window_;
  uint32_t streak_ = 0;
  std::deque<uint64_t> boot_failures_;  // bounded: at most max_ + 1 entries
};

}  // namespace sp::supervisor
