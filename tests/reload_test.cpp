// Live reload of the real shell-poold: the `reload` method, `shell-pool
// reload` and SIGHUP read the command line and --config again; a good
// configuration applies to what comes next, a bad one changes nothing.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <string>

#include "tests/daemon_harness.h"

using namespace sp::test;
using Catch::Contains;

namespace {

void write_config(const std::string& path, const std::string& toml) {
  std::ofstream(path) << toml;
}

json::object config_of(Client& c) {
  return health(c).at("config").as_object();
}

// A job that takes the daemon's default timeout: how it ended.
std::string ends_with_default_timeout(Client& c) {
  json::object r = execute(c, sh("sleep 3"));
  return str(r, "status");
}

}  // namespace

TEST_CASE("a reload applies to jobs submitted after it; running jobs and connections stay",
          "[daemon][reload]") {
  TempDir tmp;
  const std::string config = tmp.path() + "/shell-pool.toml";
  write_config(config, "default-timeout = 30\n");
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--config", config}});
  Client c(d.socket());
  CHECK(num(config_of(c), "generation") == 1);
  // A job that runs across the reload, on a connection that stays open.
  std::string gate = tmp.path() + "/gate";
  Client running(d.socket());
  REQUIRE(running.send_line(Client::request(1, "execute", sh(until_file(gate) + "; echo done"))));
  REQUIRE(wait_until([&] { return num(health(c).at("jobs").as_object(), "running") == 1; }, 10));

  write_config(config, "default-timeout = 0.3\nlog-level = \"warn\"\n");
  json::object r = result_of(c.call("reload", nullptr));
  CHECK(num(r, "generation") == 2);
  CHECK_THAT(str(r, "message"), Contains("generation 2"));
  CHECK(ends_with_default_timeout(c) == "timed_out");  // the new default
  json::object cfg = config_of(c);
  CHECK(num(cfg, "generation") == 2);
  CHECK(cfg.at("last_reload").as_object().at("ok") == true);
  // The running job kept its own timeout and its connection.
  open_gate(gate);
  auto done = running.read_json(20);
  REQUIRE(done);
  json::object first = result_of(done->as_object());
  CHECK(str(first, "status") == "exited");
  CHECK(str(first, "stdout") == "done\n");
  stop_cleanly(d);
  // The new log level reached every role (each ran a turn after the reload):
  // none logged its info lines after it.
  const std::string log = d.log();
  CHECK_THAT(log, !Contains("configuration generation 2 in use"));
  CHECK_THAT(log, !Contains("] stopped"));
}

TEST_CASE("a bad configuration at reload is refused whole and the one in use stays",
          "[daemon][reload]") {
  TempDir tmp;
  const std::string config = tmp.path() + "/shell-pool.toml";
  write_config(config, "default-timeout = 0.3\n");
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--config", config}});
  Client c(d.socket());
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"default-timeout = \"soon\"\n", "default-timeout"},
      {"default-timeout = 30\nmax-timeout = 5\n", "above --max-timeout"},
      {"default-timeout = 30\nqueue-size = 8\n", "restart required to change --queue-size"},
      {"default-timeout = 30\nretain-jobs = 8\n", "restart required to change --retain-jobs"},
      {"default-timeout = 30\nno-such-option = 1\n", "no-such-option"},
      {"default-timeout = 30\nlimit = [\"open_files=lots\"]\n", "open_files"}};
  for (const auto& [toml, says] : bad) {
    INFO(toml);
    write_config(config, toml);
    json::object e = error_of(c.call("reload", nullptr));
    CHECK(num(e, "code") == -32007);
    CHECK_THAT(str(e, "message"), Contains(says));
    json::object cfg = config_of(c);
    CHECK(num(cfg, "generation") == 1);
    CHECK(cfg.at("last_reload").as_object().at("ok") == false);
  }
  // Nothing of them was applied: the default timeout is still 0.3 s.
  CHECK(ends_with_default_timeout(c) == "timed_out");
  CHECK_THAT(d.log(), Contains("reload failed, the configuration in use is unchanged"));
  // A missing file is an error too; the daemon serves on.
  ::unlink(config.c_str());
  CHECK(num(error_of(c.call("reload", nullptr)), "code") == -32007);
  CHECK(str(execute(c, sh("echo serving")), "stdout") == "serving\n");
  stop_cleanly(d);
}

TEST_CASE("SIGHUP reloads, and shell-pool reload returns when the reload is done",
          "[daemon][reload]") {
  TempDir tmp;
  const std::string config = tmp.path() + "/shell-pool.toml";
  write_config(config, "default-timeout = 30\n");
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--config", config}});
  Client c(d.socket());
  write_config(config, "default-timeout = 0.3\n");
  REQUIRE(::kill(d.pid(), SIGHUP) == 0);
  REQUIRE(wait_until([&] { return num(config_of(c), "generation") == 2; }, 10));
  CHECK(ends_with_default_timeout(c) == "timed_out");
  CHECK(d.running());  // SIGHUP is a reload, not a stop

  // The CLI: exit 0 when applied, 1 (with the reason) when refused.
  write_config(config, "default-timeout = 30\n");
  auto cli = [&](const std::string& out) {
    std::string cmd =
        std::string(SHELL_POOL_CLI) + " --socket " + d.socket() + " reload > " + out + " 2>&1";
    return WEXITSTATUS(std::system(cmd.c_str()));
  };
  CHECK(cli(tmp.path() + "/ok") == 0);
  CHECK_THAT(read_file(tmp.path() + "/ok"), Contains("generation 3"));
  write_config(config, "queue-size = 3\n");
  CHECK(cli(tmp.path() + "/refused") == 1);
  CHECK_THAT(read_file(tmp.path() + "/refused"), Contains("restart required"));
  CHECK(num(config_of(c), "generation") == 3);
  stop_cleanly(d);
}

TEST_CASE("reload is allowed only to the daemon's own uid and root", "[daemon][reload][security]") {
  if (::getuid() != 0) {
    WARN("skipped: needs root to connect as another uid");
    return;
  }
  const uid_t nobody = 65534;
  START_DAEMON(d,
               DaemonOptions{.flags = {"--workers", "1", "--allow-uid", std::to_string(nobody)}});
  REQUIRE(::chmod(d.dir().c_str(), 0755) == 0);
  REQUIRE(::chmod(d.socket().c_str(), 0777) == 0);
  std::string line = answer_as_uid(d.socket(), nobody, Client::request(1, "reload", nullptr));
  INFO(line);
  CHECK_THAT(line, Contains("-32006") && Contains("only to the daemon's own uid and root"));
  Client c(d.socket());
  json::object cfg = config_of(c);
  CHECK(num(cfg, "generation") == 1);
  CHECK_FALSE(cfg.contains("last_reload"));  // nothing was tried
  stop_cleanly(d);
}

TEST_CASE("a reload that changes --workers replaces them: the old finish their jobs, then exit",
          "[daemon][reload][workers]") {
  TempDir tmp;
  const std::string config = tmp.path() + "/shell-pool.toml";
  write_config(config, "workers = 1\n");
  // The harness counts workers from --workers only: wait for health instead.
  START_DAEMON(d, DaemonOptions{.flags = {"--config", config}, .wait_workers = false});
  Client c(d.socket());
  auto serving = [&](size_t n) {
    return wait_until(
        [&] {
          json::array ws = health(c).at("workers").as_array();
          size_t ready = 0;
          for (const json::value& w : ws)
            ready += str(w.as_object(), "state") == "serving" && w.as_object().at("ready") == true;
          return ready == n && ws.size() == n;
        },
        20);
  };
  REQUIRE(serving(1));
  const pid_t old_worker = pid_t(num(health(c).at("workers").as_array()[0].as_object(), "pid"));
  // A job that runs across the replacement, on the old worker.
  const std::string gate = tmp.path() + "/gate", ran = tmp.path() + "/ran";
  Client running(d.socket());
  REQUIRE(running.send_line(Client::request(
      1, "execute", sh(until_file(gate) + "; echo old >> " + ran + "; echo finished"))));
  REQUIRE(wait_until([&] { return num(health(c).at("jobs").as_object(), "running") == 1; }, 10));

  write_config(config, "workers = 2\n");
  json::object r = result_of(c.call("reload", nullptr));
  CHECK_THAT(str(r, "message"), Contains("2 new workers; 1 retiring"));
  // The old worker retires (still running its job), two new ones serve.
  json::array ws = health(c).at("workers").as_array();
  CHECK(ws.size() == 3);
  // New jobs run on the new generation, each exactly once, while the old job runs.
  for (int i = 0; i < 6; ++i)
    CHECK(str(execute(c, sh("echo new >> " + ran + "; echo ok")), "stdout") == "ok\n");
  const std::vector<pid_t> pids = d.worker_pids();
  CHECK(std::find(pids.begin(), pids.end(), old_worker) != pids.end());  // still finishing
  open_gate(gate);
  auto done = running.read_json(20);
  REQUIRE(done);
  json::object first = result_of(done->as_object());
  CHECK(str(first, "status") == "exited");  // not lost: it ran to its end
  CHECK(str(first, "stdout") == "finished\n");
  // Then the old worker exits and is not restarted.
  REQUIRE(serving(2));
  CHECK(wait_until([&] { return ::kill(old_worker, 0) != 0; }, 10));
  CHECK(read_file(ran) == "new\nnew\nnew\nnew\nnew\nnew\nold\n");
  json::object counters = health(c).at("counters").as_object();
  CHECK(num(counters, "lost") == 0);
  CHECK(num(counters, "worker_restarts") == 0);
  CHECK_THAT(d.log(), Contains("worker 0 retired"));
  // And back down to one.
  write_config(config, "workers = 1\n");
  CHECK_THAT(str(result_of(c.call("reload", nullptr)), "message"), Contains("1 new workers"));
  REQUIRE(serving(1));
  CHECK(str(execute(c, sh("echo one")), "stdout") == "one\n");
  stop_cleanly(d);
}
