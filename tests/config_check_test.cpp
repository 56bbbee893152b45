// The configuration's checks and its live-reload rules
// (supervisor/config_check.h, supervisor/flags.h), and its publication in
// the segment under a sequence lock (shm/role_config.h).
#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

#include "shm/role_config.h"
#include "supervisor/config_check.h"
#include "supervisor/flags.h"
#include "tests/shm_fixture.h"

using namespace sp;
using sp::supervisor::Config;

namespace {

Config parsed(std::vector<std::string> args) {
  auto c = supervisor::parse_daemon_flags(args);
  REQUIRE(c);
  supervisor::derive(*c);
  return *c;
}

}  // namespace

TEST_CASE("flags parse again into a Config, and errors say what is wrong") {
  Config c = parsed({"--socket", "/tmp/x.sock", "--default-timeout", "5", "--workers", "3"});
  CHECK(c.socket_path == "/tmp/x.sock");
  CHECK(c.role.default_timeout_s == 5);
  CHECK(c.caps.workers == 3);
  CHECK(c.args.size() == 6);
  auto bad = supervisor::parse_daemon_flags({"--default-timeout", "soon"});
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message(), Catch::Contains("default-timeout"));
}

TEST_CASE("a default above its ceiling or a list over its bound fails the check") {
  CHECK(supervisor::check(parsed({"--default-timeout", "5", "--max-timeout", "10"})));
  auto above = supervisor::check(parsed({"--default-timeout", "10", "--max-timeout", "5"}));
  REQUIRE_FALSE(above);
  CHECK(above.error().message() == "--default-timeout is above --max-timeout");
  Config many = parsed({});
  many.allow_uids.assign(shm::kMaxAllowUids + 1, 1000);
  CHECK_FALSE(supervisor::check(many));
}

TEST_CASE("only options that size shared memory or processes need a restart") {
  Config running = parsed({"--socket", "/tmp/x.sock"});
  CHECK(supervisor::restart_required(
            running, parsed({"--socket", "/tmp/x.sock", "--default-timeout", "3", "--limit",
                             "open_files=64", "--retain-seconds", "5", "--log-level", "warn",
                             "--max-restarts", "9", "--allow-uid", "1000"}))
            .empty());
  CHECK(supervisor::restart_required(running, parsed({"--socket", "/tmp/y.sock"})) ==
        std::vector<std::string>{"--socket"});
  CHECK(supervisor::restart_required(running, parsed({"--socket", "/tmp/x.sock", "--queue-size",
                                                      "8", "--env-pass", "HOME"})) ==
        std::vector<std::string>{"--queue-size", "--env-pass"});
}

TEST_CASE("a reader never sees a configuration half written") {
  test::TestSegment seg;
  shm::Header& h = seg->header();
  shm::RoleConfig a, b;
  a.max_output_bytes = a.job_spool_bytes = 1;
  b.max_output_bytes = b.job_spool_bytes = 2;
  shm::publish_config(h, a);
  CHECK(shm::config_generation(h) == 1);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; !stop; ++i) shm::publish_config(h, i % 2 ? a : b);
  });
  for (int i = 0; i < 20000; ++i) {
    shm::RoleConfig c = shm::read_config(h);
    REQUIRE(c.max_output_bytes == c.job_spool_bytes);
  }
  stop = true;
  writer.join();
  CHECK(shm::config_generation(h) > 1);
}
