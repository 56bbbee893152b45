// The supervisor's restart policy (supervisor/restart_policy.h) and the bound
// on how often it logs a role's deaths (supervisor/log_limiter.h).
#include <catch2/catch.hpp>

#include "supervisor/log_limiter.h"
#include "supervisor/restart_policy.h"

using sp::supervisor::RestartPolicy;

namespace {

constexpr uint64_t kS = 1'000'000'000;
constexpr uint64_t kMs = RestartPolicy::kMs;
constexpr auto kReady = sp::shm::DeathKind::kAfterReady;
constexpr auto kBooting = sp::shm::DeathKind::kBootFailure;
constexpr auto kKilledStarting = sp::shm::DeathKind::kKilledStarting;
uint64_t no_jitter(uint64_t) {
  return 0;
}

}  // namespace

TEST_CASE("restarts back off from 50 ms, doubling, up to 3 s") {
  RestartPolicy p(5, 30 * kS);
  uint64_t t = 10 * kS;
  CHECK(p.on_death(t, t + 1, kReady, no_jitter) == 50 * kMs);
  CHECK(p.on_death(t, t + 2, kReady, no_jitter) == 100 * kMs);
  CHECK(p.on_death(t, t + 3, kReady, no_jitter) == 200 * kMs);
  CHECK(p.on_death(t, t + 4, kReady, no_jitter) == 400 * kMs);
  for (int i = 5; i < 100; ++i) p.on_death(t, t + uint64_t(i), kReady, no_jitter);
  CHECK(p.on_death(t, t + 100, kReady, no_jitter) == RestartPolicy::kCapNs);
}

TEST_CASE("jitter adds at most a quarter of the delay") {
  RestartPolicy p(5, 30 * kS);
  p.on_death(0, 1, kReady, no_jitter);
  uint64_t asked = 0;
  auto delay = p.on_death(0, 2, kReady, [&](uint64_t n) {
    asked = n;
    return n;
  });
  CHECK(asked == 25 * kMs);
  CHECK(delay == 125 * kMs);
}

TEST_CASE("a role that dies after it was ready is restarted forever") {
  RestartPolicy p(5, 30 * kS);
  // A kill storm: a death every 0.15 s for ten minutes, far beyond max_boot_failures.
  for (uint64_t i = 1; i <= 4000; ++i) REQUIRE(p.on_death(0, i * 150 * kMs, kReady, no_jitter));
  CHECK(p.boot_failures() == 0);
}

TEST_CASE("more boot failures than the bound within the window are a crash loop") {
  RestartPolicy p(3, 30 * kS);
  for (uint64_t i = 1; i <= 3; ++i) CHECK(p.on_death(0, i * kS, kBooting, no_jitter));
  CHECK_FALSE(p.on_death(0, 4 * kS, kBooting, no_jitter));
}

TEST_CASE("boot failures older than the window no longer count") {
  RestartPolicy p(3, 30 * kS);
  for (uint64_t i = 1; i <= 3; ++i) CHECK(p.on_death(0, i * kS, kBooting, no_jitter));
  CHECK(p.on_death(0, 40 * kS, kBooting, no_jitter));  // the first three are out of the window
  CHECK(p.boot_failures() == 1);
}

TEST_CASE("a role killed from outside while it starts is restarted forever, and not counted") {
  RestartPolicy p(3, 30 * kS);
  for (uint64_t i = 1; i <= 2; ++i) CHECK(p.on_death(0, i * kS, kBooting, no_jitter));
  for (uint64_t i = 3; i <= 100; ++i)
    REQUIRE(p.on_death(0, i * kS / 10, kKilledStarting, no_jitter));
  CHECK(p.boot_failures() == 2);  // neither counted nor cleared
}

TEST_CASE("a role that got ready again starts the boot-failure count anew") {
  RestartPolicy p(3, 30 * kS);
  for (uint64_t i = 1; i <= 3; ++i) CHECK(p.on_death(0, i * kS, kBooting, no_jitter));
  CHECK(p.on_death(0, 4 * kS, kReady, no_jitter));
  CHECK(p.boot_failures() == 0);
  for (uint64_t i = 5; i <= 7; ++i) CHECK(p.on_death(0, i * kS, kBooting, no_jitter));
  CHECK_FALSE(p.on_death(0, 8 * kS, kBooting, no_jitter));
}

TEST_CASE("a role that stayed up for a healthy period backs off from the floor again") {
  RestartPolicy p(5, 30 * kS);
  for (uint64_t i = 1; i <= 8; ++i) p.on_death(0, i, kReady, no_jitter);
  CHECK(p.streak() == 8);
  uint64_t started = 100 * kS;
  CHECK(p.on_death(started, started + RestartPolicy::kHealthyNs + 1, kReady, no_jitter) ==
        RestartPolicy::kFloorNs);
  CHECK(p.streak() == 1);
}

// ---- the death-log bound (supervisor/log_limiter.h) ----

TEST_CASE("at most `burst` messages per window; the next one allowed says how many were not") {
  sp::supervisor::LogLimiter limit(2, 10 * kS);
  uint64_t left_out = 99;
  CHECK(limit.allow(1, &left_out));
  CHECK(left_out == 0);
  CHECK(limit.allow(2, &left_out));
  CHECK_FALSE(limit.allow(3, &left_out));
  CHECK_FALSE(limit.allow(4, &left_out));
  CHECK(limit.allow(1 + 10 * kS, &left_out));  // a new window
  CHECK(left_out == 2);
  CHECK(limit.allow(2 + 10 * kS, &left_out));
  CHECK(left_out == 0);
}
