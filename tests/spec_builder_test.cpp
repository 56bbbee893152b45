// How a job's params become its spec (frontend/spec_builder.h): argv, the
// merged environment, limits and timeouts against defaults and ceilings.
#include <catch2/catch.hpp>

#include "common/redactor.h"
#include "frontend/spec_builder.h"

using namespace sp;
using namespace sp::frontend;

namespace {

std::vector<std::string> strings(std::span<const std::string_view> views) {
  return {views.begin(), views.end()};
}

}  // namespace

TEST_CASE("a shell line runs under /bin/sh -c; a program with args runs as given") {
  shm::RoleConfig cfg;
  SpecBuilder b(cfg, {{"PATH", "/bin"}});
  rpc::ExecParams line;
  line.command = "echo $1";
  line.args = {"x"};
  auto spec = std::get<shm::SpecInput>(b.build(line, nullptr));
  CHECK(spec.path == "/bin/sh");
  CHECK(strings(spec.argv) == std::vector<std::string>{"sh", "-c", "echo $1", "sh", "x"});
  rpc::ExecParams prog;
  prog.command = "ls";
  prog.args = {"-l"};
  prog.shell = false;
  spec = std::get<shm::SpecInput>(b.build(prog, nullptr));
  CHECK(spec.path == "ls");
  CHECK(strings(spec.argv) == std::vector<std::string>{"ls", "-l"});
}

TEST_CASE("the environment is the base, then the session's, then the request's") {
  shm::RoleConfig cfg;
  SpecBuilder b(cfg, {{"PATH", "/bin"}, {"HOME", "/root"}});
  rpc::ExecParams p;
  p.command = "env";
  p.env = {{"A", "request"}, {"HOME", "/tmp"}};
  shm::SessionEnv session{{{"A", "session"}, {"B", "session"}}, {}};
  auto spec = std::get<shm::SpecInput>(b.build(p, &session));
  CHECK(strings(spec.env) ==
        std::vector<std::string>{"PATH=/bin", "HOME=/tmp", "A=request", "B=session"});
  spec = std::get<shm::SpecInput>(b.build(p, nullptr));
  CHECK(strings(spec.env) == std::vector<std::string>{"PATH=/bin", "HOME=/tmp", "A=request"});
}

TEST_CASE("a job's secrets are its own and its session's, at most kMaxSecrets") {
  shm::RoleConfig cfg;
  SpecBuilder b(cfg, {});
  rpc::ExecParams p;
  p.command = "true";
  p.secrets = {"mine-1234"};
  shm::SessionEnv session{{}, {"theirs-5678"}};
  auto spec = std::get<shm::SpecInput>(b.build(p, &session));
  CHECK(strings(spec.secrets) == std::vector<std::string>{"mine-1234", "theirs-5678"});
  session.secrets.assign(sp::kMaxSecrets, "many-secrets");
  CHECK(std::holds_alternative<SubmitError>(b.build(p, &session)));
}

TEST_CASE("limits come from the request, else the default, else the ceiling; more is refused") {
  shm::RoleConfig cfg;
  cfg.default_limits.open_files = 64;
  cfg.max_limits.open_files = 128;
  cfg.max_limits.processes = 10;
  cfg.kill_grace_ms = 1500;
  SpecBuilder b(cfg, {});
  rpc::ExecParams p;
  p.command = "true";
  auto spec = std::get<shm::SpecInput>(b.build(p, nullptr));
  CHECK(spec.limits.open_files == 64);
  CHECK(spec.limits.processes == 10);
  CHECK(spec.limits.cpu_seconds == 0);
  CHECK(spec.kill_grace_ms == 1500);
  p.limits.open_files = 100;
  CHECK(std::get<shm::SpecInput>(b.build(p, nullptr)).limits.open_files == 100);
  p.limits.open_files = 200;
  auto refused = b.build(p, nullptr);
  REQUIRE(std::holds_alternative<SubmitError>(refused));
  CHECK(std::get<SubmitError>(refused).kind == SubmitError::kAboveCeiling);
  CHECK_THAT(std::get<SubmitError>(refused).detail, Catch::Contains("ceiling of 128"));
}

TEST_CASE("a timeout is the request's, else the default, capped by the ceiling") {
  shm::RoleConfig cfg;
  cfg.default_timeout_s = 2;
  SpecBuilder b(cfg, {});
  rpc::ExecParams p;
  p.command = "true";
  CHECK(std::get<shm::SpecInput>(b.build(p, nullptr)).timeout_ms == 2000);
  p.timeout_s = 0.0015;
  CHECK(std::get<shm::SpecInput>(b.build(p, nullptr)).timeout_ms == 2);  // rounded up
  cfg.max_timeout_s = 1;
  p.timeout_s = 5;
  CHECK(std::holds_alternative<SubmitError>(b.build(p, nullptr)));
  p.timeout_s.reset();
  cfg.default_timeout_s = 0;
  CHECK(std::get<shm::SpecInput>(b.build(p, nullptr)).timeout_ms == 1000);
}

TEST_CASE("memory limits need cgroups") {
  shm::RoleConfig cfg;
  SpecBuilder b(cfg, {});
  rpc::ExecParams p;
  p.command = "true";
  p.limits.memory_bytes = 1 << 20;
  auto refused = b.build(p, nullptr);
  REQUIRE(std::holds_alternative<SubmitError>(refused));
  CHECK_THAT(std::get<SubmitError>(refused).detail, Catch::Contains("needs per-job cgroups"));
  cfg.isolation = shm::Isolation::kCgroupV1;
  CHECK(std::holds_alternative<shm::SpecInput>(b.build(p, nullptr)));
}
