// RestartPolicy: when a dead role is started again, and when its deaths are
// a crash loop that ends the daemon. The first restart is at once; then
// 100 ms doubling up to 5 s, plus up to 25 % random jitter so roles that
// died together do not restart together; a role up for a minute has its
// count reset. More than `max_restarts` deaths within `window` is a crash
// loop. Pure (time and randomness are passed in); one per role.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>

namespace sp::supervisor {

class RestartPolicy {
 public:
  static constexpr uint64_t kMs = 1'000'000;
  static constexpr uint64_t kFirstBackoffNs = 100 * kMs;
  static constexpr uint64_t kMaxBackoffNs = 5000 * kMs;
  static constexpr uint64_t kHealthyNs = 60'000 * kMs;  // up this long: backoff reset

  RestartPolicy(uint32_t max_restarts, uint64_t window_ns)
      : max_(max_restarts), window_(window_ns) {}

  // The role started at `started_ns` died at `now_ns`: the delay before it
  // starts again, or nullopt for a crash loop. `jitter(n)` draws from 0..n.
  std::optional<uint64_t> on_death(uint64_t started_ns, uint64_t now_ns,
                                   const std::function<uint64_t(uint64_t)>& jitter);
  size_t deaths_in_window() const { return deaths_.size(); }

 private:
  uint32_t max_;
  uint64_t window_;
  std::deque<uint64_t> deaths_;  // bounded: at most max_ + 1 entries
};

}  // namespace sp::supervisor
