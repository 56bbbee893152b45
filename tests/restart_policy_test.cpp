// The supervisor's restart policy (supervisor/restart_policy.h).
#include <catch2/catch.hpp>

#include "supervisor/restart_policy.h"

using sp::supervisor::RestartPolicy;

namespace {

constexpr uint64_t kS = 1'000'000'000;
uint64_t no_jitter(uint64_t) {
  return 0;
}

}  // namespace

TEST_CASE("the first restart is at once, then 100 ms doubling up to 5 s") {
  RestartPolicy p(100, 1000 * kS);
  uint64_t t = 10 * kS;
  CHECK(p.on_death(t, t + 1, no_jitter) == 0u);
  CHECK(p.on_death(t, t + 2, no_jitter) == 100 * RestartPolicy::kMs);
  CHECK(p.on_death(t, t + 3, no_jitter) == 200 * RestartPolicy::kMs);
  CHECK(p.on_death(t, t + 4, no_jitter) == 400 * RestartPolicy::kMs);
  for (int i = 5; i < 12; ++i) p.on_death(t, t + uint64_t(i), no_jitter);
  CHECK(p.on_death(t, t + 12, no_jitter) == RestartPolicy::kMaxBackoffNs);
}

TEST_CASE("jitter adds at most a quarter of the delay") {
  RestartPolicy p(100, 1000 * kS);
  p.on_death(0, 1, no_jitter);
  uint64_t asked = 0;
  auto delay = p.on_death(0, 2, [&](uint64_t n) {
    asked = n;
    return n;
  });
  CHECK(asked == 25 * RestartPolicy::kMs);
  CHECK(delay == 125 * RestartPolicy::kMs);
}

TEST_CASE("more deaths than max_restarts within the window are a crash loop") {
  RestartPolicy p(3, 30 * kS);
  for (uint64_t i = 1; i <= 3; ++i) CHECK(p.on_death(0, i * kS, no_jitter));
  CHECK_FALSE(p.on_death(0, 4 * kS, no_jitter));
}

TEST_CASE("deaths older than the window no longer count") {
  RestartPolicy p(3, 30 * kS);
  for (uint64_t i = 1; i <= 3; ++i) CHECK(p.on_death(0, i * kS, no_jitter));
  CHECK(p.on_death(0, 40 * kS, no_jitter));  // the first three are out of the window
  CHECK(p.deaths_in_window() == 1);
}

TEST_CASE("a role that stayed up for a minute starts again at once") {
  RestartPolicy p(10, 1000 * kS);
  for (uint64_t i = 1; i <= 5; ++i) p.on_death(0, i, no_jitter);
  uint64_t started = 100 * kS;
  CHECK(p.on_death(started, started + RestartPolicy::kHealthyNs + 1, no_jitter) == 0u);
}
