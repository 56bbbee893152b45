// The verbs on the shm counters and histograms that `metrics` exposes
// (layout.h: Counters, Histogram, Metrics): any role adds, the frontend
// reads. Relaxed atomics only: a reader may see one observation's bucket
// before its sum, never a bucket count that goes down.
#pragma once

#include <array>
#include <cstdint>

#include "shm/layout.h"

namespace sp::shm {

// Upper bounds, in ns, of the finite buckets of a histogram; the last
// bucket (kHistogramBuckets - 1) is +Inf.
using Bounds = std::array<uint64_t, kHistogramBuckets - 1>;
inline constexpr uint64_t kUs = 1'000, kMsNs = 1'000'000, kSecNs = 1'000'000'000;

// Jobs run from a millisecond to minutes.
inline constexpr Bounds kJobDurationBounds = {1 * kMsNs,   5 * kMsNs,    10 * kMsNs,  25 * kMsNs,
                                              50 * kMsNs,  100 * kMsNs,  250 * kMsNs, 500 * kMsNs,
                                              1 * kSecNs,  2500 * kMsNs, 5 * kSecNs,  10 * kSecNs,
                                              30 * kSecNs, 60 * kSecNs,  300 * kSecNs};
// A job waits for a worker for microseconds when the pool has room, for
// seconds when the queue backs up.
inline constexpr Bounds kQueueWaitBounds = {
    10 * kUs,  25 * kUs,   50 * kUs,   100 * kUs,   250 * kUs,   500 * kUs,  1 * kMsNs,  2500 * kUs,
    5 * kMsNs, 10 * kMsNs, 50 * kMsNs, 100 * kMsNs, 500 * kMsNs, 1 * kSecNs, 10 * kSecNs};

inline void observe(Histogram& h, const Bounds& bounds, uint64_t ns) {
  uint32_t i = 0;
  while (i < bounds.size() && ns > bounds[i]) ++i;
  h.counts[i].fetch_add(1, std::memory_order_relaxed);
  h.sum_ns.fetch_add(ns, std::memory_order_relaxed);
}

inline void count_death(Counters& c, RoleKind role, DeathCause cause) {
  c.role_deaths[uint32_t(role)][uint32_t(cause)].fetch_add(1, std::memory_order_relaxed);
}

// Unplanned deaths of `role` of any cause, or of `cause` in any role.
inline uint64_t deaths_of(const Counters& c, RoleKind role) {
  uint64_t n = 0;
  for (const auto& count : c.role_deaths[uint32_t(role)]) n += count.load();
  return n;
}
inline uint64_t deaths_by(const Counters& c, DeathCause cause) {
  uint64_t n = 0;
  for (const auto& row : c.role_deaths) n += row[uint32_t(cause)].load();
  return n;
}

inline const char* role_kind_name(RoleKind r) {
  return r == RoleKind::kFrontend ? "frontend" : "worker";
}
inline const char* death_cause_name(DeathCause c) {
  switch (c) {
    case DeathCause::kCrash:
      return "crash";
    case DeathCause::kExit:
      return "exit";
    case DeathCause::kOom:
      return "oom";
    case DeathCause::kHang:
      return "hang";
    case DeathCause::kStartFailed:
      return "start_failed";
  }
  return "unknown";
}

}  // namespace sp::shm
