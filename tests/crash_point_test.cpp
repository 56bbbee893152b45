// Crash-point tests: shell-poold-crashpoints (the daemon with live crash
// points, common/crash_point.h) makes a worker or the frontend SIGKILL itself
// at one named instruction, once; each test checks that the job ends as the
// crash table in docs/shm-layout.md says and that the daemon is whole after.
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>

#include "tests/daemon_harness.h"

using namespace sp::test;
using Catch::Contains;

namespace {

// A daemon that dies once at `point`; the marker file says whether it did.
struct CrashDaemon {
  // `signal`: how it dies there (a number; SIGKILL by default, SIGSEGV for a crash).
  explicit CrashDaemon(const std::string& point,
                       std::vector<std::string> flags = {"--workers", "1"}, int signal = SIGKILL)
      : marker(dir.path() + "/crashed"),
        daemon(DaemonOptions{
            .flags = std::move(flags),
            .env = {"SHELL_POOL_CRASH_POINT=" + point, "SHELL_POOL_CRASH_MARKER=" + marker,
                    "SHELL_POOL_CRASH_SIGNAL=" + std::to_string(signal)},
            .binary = SHELL_POOLD_CRASHPOINTS}) {}
  bool crashed() const { return file_exists(marker); }

  TempDir dir;
  std::string marker;
  TestDaemon daemon;
};

json::object counters(Client& c) {
  return health(c).at("counters").as_object();
}

// The pool is back: nothing queued or running, and a job runs.
void check_whole(const TestDaemon& d) {
  Client c = Client::connect_retry(d.socket(), 10);
  REQUIRE(c.connected());
  CHECK(wait_until(
      [&] {
        auto h = c.try_call("health", nullptr, 5);
        if (!h) return false;
        json::object jobs = result_of(*h).at("jobs").as_object();
        return num(jobs, "queued") == 0 && num(jobs, "running") == 0;
      },
      10, 0.05));
  CHECK(str(execute(c, sh("echo whole")), "stdout") == "whole\n");
}

}  // namespace

// ---- the restart policy: boot failures ----

TEST_CASE("a worker that crashes once before it is ready is restarted, and health says how",
          "[daemon][crashpoint][restart]") {
  CrashDaemon cd("worker_start", {"--workers", "1"}, SIGSEGV);
  LogOnFailure log(cd.daemon);
  REQUIRE(cd.daemon.ready());
  CHECK(cd.crashed());
  Client c(cd.daemon.socket());
  json::object h = health(c);
  CHECK(num(h.at("counters").as_object(), "boot_failures") == 1);
  const json::object& w = h.at("workers").as_array().at(0).as_object();
  CHECK(str(w, "last_death") == "boot_failure");
  CHECK(w.at("ready") == true);
  CHECK_THAT(cd.daemon.log(), Contains("before it was ready (a boot failure)"));
  check_whole(cd.daemon);
  stop_cleanly(cd.daemon);
}

TEST_CASE("a worker that dies before it is ready every time is a crash loop: exit status 70",
          "[daemon][crashpoint][restart]") {
  // No marker: every incarnation dies at the point.
  TestDaemon d(
      DaemonOptions{.flags = {"--workers", "1", "--max-restarts", "2", "--restart-window", "30"},
                    .env = {"SHELL_POOL_CRASH_POINT=worker_start",
                            "SHELL_POOL_CRASH_SIGNAL=" + std::to_string(SIGSEGV)},
                    .wait_ready = false,
                    .binary = SHELL_POOLD_CRASHPOINTS});
  std::vector<pid_t> seen;
  auto code = d.wait_exit(30);
  INFO("daemon log:\n" << d.log());
  REQUIRE(code);
  CHECK(*code == 70);
  CHECK_THAT(d.log(), Contains("failed to start 3 times within 30 s: giving up (a crash loop)"));
  check_left_nothing(d, seen);
}

TEST_CASE("a worker killed from outside while it starts, again and again, is no crash loop",
          "[daemon][crashpoint][restart]") {
  // Every incarnation SIGKILLed before it is ready (as a kill storm may do to
  // a slow start): far more than --max-restarts, and the daemon serves on.
  TestDaemon d(
      DaemonOptions{.flags = {"--workers", "1", "--max-restarts", "2", "--restart-window", "30"},
                    .env = {"SHELL_POOL_CRASH_POINT=worker_start"},
                    .wait_ready = false,
                    .binary = SHELL_POOLD_CRASHPOINTS});
  LogOnFailure log(d);
  REQUIRE(wait_until(
      [&] { return count_of(d.log(), "from outside while it started (not a boot failure)") >= 5; },
      30));
  CHECK(d.running());
  Client c = Client::connect_retry(d.socket(), 10);
  json::object h = health(c);
  CHECK(num(h.at("counters").as_object(), "boot_failures") == 0);
  CHECK(str(h.at("workers").as_array().at(0).as_object(), "last_death") == "killed_starting");
  stop_cleanly(d);
}

TEST_CASE("a worker that dies right after its claim: the job is requeued and runs once",
          "[daemon][crashpoint]") {
  CrashDaemon cd("after_claim");
  LogOnFailure log(cd.daemon);
  REQUIRE(cd.daemon.ready());
  Client c(cd.daemon.socket());
  std::string ran = cd.dir.path() + "/ran";
  json::object r = execute(c, sh("echo run >> " + ran + "; echo done"), 20);
  CHECK(cd.crashed());
  CHECK(str(r, "status") == "exited");
  CHECK(str(r, "stdout") == "done\n");
  CHECK(read_file(ran) == "run\n");  // exactly once
  json::object n = counters(c);
  CHECK(num(n, "requeued") == 1);
  CHECK(num(n, "worker_restarts") == 1);
  CHECK(num(n, "lost") == 0);
  check_whole(cd.daemon);
  stop_cleanly(cd.daemon);
}

TEST_CASE("a worker that dies right after spawning: the job ends lost and its processes die",
          "[daemon][crashpoint]") {
  CrashDaemon cd("after_spawn");
  LogOnFailure log(cd.daemon);
  REQUIRE(cd.daemon.ready());
  Client c(cd.daemon.socket());
  // The background sleep shares the job's process group: it must die too.
  json::object r = execute(c, sh("sleep 100.4411 & sleep 100.4412"), 20);
  CHECK(cd.crashed());
  CHECK(str(r, "status") == "lost");
  CHECK(num(r, "exit_code") == -1);
  CHECK_THAT(str(r, "error"), Contains("worker"));
  CHECK(wait_until([] { return pids_matching("sleep 100.441").empty(); }, 10));
  CHECK(num(counters(c), "lost") == 1);
  check_whole(cd.daemon);
  stop_cleanly(cd.daemon);
}

TEST_CASE("a worker that dies in the middle of an output chunk: nothing of it is seen",
          "[daemon][crashpoint]") {
  CrashDaemon cd("mid_output_chunk");
  LogOnFailure log(cd.daemon);
  REQUIRE(cd.daemon.ready());
  Client c(cd.daemon.socket());
  json::object r = execute(c, sh("printf half-written; sleep 100.4421"), 20);
  CHECK(cd.crashed());
  CHECK(str(r, "status") == "lost");
  CHECK(str(r, "stdout").empty());  // the bytes were in the ring, but never published
  CHECK(wait_until([] { return pids_matching("sleep 100.4421").empty(); }, 10));
  // The restarted worker writes records into fresh rings as before.
  CHECK(str(execute(c, sh("printf complete")), "stdout") == "complete");
  check_whole(cd.daemon);
  stop_cleanly(cd.daemon);
}

TEST_CASE("a frontend that dies between queuing a job and ringing it: the job never runs",
          "[daemon][crashpoint]") {
  CrashDaemon cd("mid_enqueue");
  LogOnFailure log(cd.daemon);
  REQUIRE(cd.daemon.ready());
  pid_t frontend = cd.daemon.frontend_pid();
  Client c(cd.daemon.socket());
  std::string ran = cd.dir.path() + "/ran";
  REQUIRE(c.send_line(Client::request(1, "execute", sh("touch " + ran))));
  CHECK_FALSE(c.read_line(10));  // the connection closes, unanswered
  CHECK(c.eof());
  CHECK(cd.crashed());
  REQUIRE(wait_until(
      [&] {
        pid_t now = cd.daemon.frontend_pid();
        return now && now != frontend;
      },
      10));
  check_whole(cd.daemon);  // its half-queued slot was freed, not left queued
  Client fresh(cd.daemon.socket());
  CHECK(num(counters(fresh), "frontend_restarts") == 1);
  CHECK_FALSE(file_exists(ran));
  stop_cleanly(cd.daemon);
}

TEST_CASE("a frontend that dies while reading a job's output: the job is killed",
          "[daemon][crashpoint]") {
  CrashDaemon cd("reading_output");
  LogOnFailure log(cd.daemon);
  REQUIRE(cd.daemon.ready());
  Client c(cd.daemon.socket());
  REQUIRE(c.send_line(Client::request(1, "execute_stream", sh("echo first; sleep 100.4431"))));
  CHECK_FALSE(c.read_line(10));  // the connection closes; the chunk was never sent
  CHECK(c.eof());
  CHECK(cd.crashed());
  // As on any disconnect, the job is cancelled: its process is killed.
  CHECK(wait_until([] { return pids_matching("sleep 100.4431").empty(); }, 10));
  check_whole(cd.daemon);
  Client fresh(cd.daemon.socket());
  json::object n = counters(fresh);
  CHECK(num(n, "cancelled") == 1);
  CHECK(num(n, "frontend_restarts") == 1);
  stop_cleanly(cd.daemon);
}

// ---- detached jobs and plans ----

TEST_CASE("a frontend that dies between queueing a detached job and pushing it: the job runs",
          "[daemon][crashpoint][detached]") {
  CrashDaemon cd("mid_enqueue");
  LogOnFailure log(cd.daemon);
  REQUIRE(cd.daemon.ready());
  {
    Client c(cd.daemon.socket());
    REQUIRE(c.send_line(Client::request(
        1, "job_submit",
        {{"command", "echo ran >> " + cd.dir.path() + "/ran"}, {"job_id", "j-1"}})));
    REQUIRE(wait_until([&] { return cd.crashed(); }, 10));
  }
  // The supervisor pushed it again: it runs once, and the retried submit finds it.
  Client c = Client::connect_retry(cd.daemon.socket(), 10);
  json::object again =
      result_of(c.call("job_submit", {{"command", "echo ran >> /dev/null"}, {"job_id", "j-1"}}));
  CHECK(again.at("existing") == true);
  json::object r = result_of(c.call("job_wait", {{"job_id", "j-1"}, {"timeout", 20}}));
  CHECK(str(r, "state") == "exited");
  CHECK(read_file(cd.dir.path() + "/ran") == "ran\n");
  check_whole(cd.daemon);
  stop_cleanly(cd.daemon);
}

TEST_CASE("a worker that dies mid spool chunk: the job is lost, the unpublished bytes unseen",
          "[daemon][crashpoint][detached]") {
  CrashDaemon cd("mid_spool_chunk");
  LogOnFailure log(cd.daemon);
  REQUIRE(cd.daemon.ready());
  Client c(cd.daemon.socket());
  std::string id =
      str(result_of(c.call("job_submit", {{"command", "echo secret; sleep 30"}})), "job_id");
  json::object r = result_of(c.call("job_wait", {{"job_id", id}, {"timeout", 20}}));
  CHECK(cd.crashed());
  CHECK(str(r, "state") == "lost");
  CHECK(str(r, "stdout") == "");
  CHECK(num(r, "stdout_bytes") == 0);
  json::object out = result_of(c.call("job_output", {{"job_id", id}}));
  CHECK(str(out, "data") == "");
  CHECK(out.at("eof") == true);
  // The bytes it had counted for that write were given back by the repair.
  CHECK(num(health(c).at("detached").as_object(), "spool_used_bytes") == 0);
  check_whole(cd.daemon);
  stop_cleanly(cd.daemon);
}

TEST_CASE("a frontend that dies between settling a job and freeing its slot leaks no slot",
          "[daemon][crashpoint][detached]") {
  CrashDaemon cd("mid_settle", {"--workers", "1", "--queue-size", "4"});
  LogOnFailure log(cd.daemon);
  REQUIRE(cd.daemon.ready());
  {
    Client c(cd.daemon.socket());
    REQUIRE(c.send_line(
        Client::request(1, "job_submit", {{"command", "echo settled"}, {"job_id", "s-1"}})));
    REQUIRE(wait_until([&] { return cd.crashed(); }, 10));
  }
  Client c = Client::connect_retry(cd.daemon.socket(), 10);
  json::object r = result_of(c.call("job_wait", {{"job_id", "s-1"}, {"timeout", 20}}));
  CHECK(str(r, "state") == "exited");
  CHECK(str(r, "stdout") == "settled\n");
  // All four slots are free again: four jobs are in at once (none ends
  // before the test opens the gate).
  const std::string gate = cd.dir.path() + "/gate";
  for (int i = 0; i < 4; ++i)
    result_of(c.call("job_submit",
                     {{"command", until_file(gate)}, {"job_id", "fill-" + std::to_string(i)}}));
  open_gate(gate);
  for (int i = 0; i < 4; ++i)
    CHECK(str(result_of(
                  c.call("job_wait", {{"job_id", "fill-" + std::to_string(i)}, {"timeout", 20}})),
              "state") == "exited");
  check_whole(cd.daemon);
  stop_cleanly(cd.daemon);
}

TEST_CASE("a frontend that dies while submitting a plan: the plan and its steps are dropped whole",
          "[daemon][crashpoint][plan]") {
  CrashDaemon cd("mid_plan_submit", {"--workers", "1", "--queue-size", "4"});
  LogOnFailure log(cd.daemon);
  REQUIRE(cd.daemon.ready());
  {
    Client c(cd.daemon.socket());
    REQUIRE(c.send_line(Client::request(
        1, "job_submit",
        {{"strategy", "chain"},
         {"job_id", "half"},
         {"commands", json::array{json::object{{"command", "echo never > " + cd.dir.path() + "/x"}},
                                  json::object{{"command", "true"}}}}})));
    REQUIRE(wait_until([&] { return cd.crashed(); }, 10));
  }
  Client c = Client::connect_retry(cd.daemon.socket(), 10);
  CHECK(result_of(c.call("job_list", {})).at("jobs").as_array().empty());
  CHECK_FALSE(file_exists(cd.dir.path() + "/x"));
  // The step's slot is free again: four jobs fit in the queue of four (none
  // ends before the test opens the gate).
  const std::string gate = cd.dir.path() + "/gate";
  for (int i = 0; i < 4; ++i)
    result_of(c.call("job_submit",
                     {{"command", until_file(gate)}, {"job_id", "fill-" + std::to_string(i)}}));
  open_gate(gate);
  for (int i = 0; i < 4; ++i)
    result_of(c.call("job_wait", {{"job_id", "fill-" + std::to_string(i)}, {"timeout", 20}}));
  // A retried submit now goes through.
  json::object again = result_of(
      c.call("job_submit", {{"strategy", "chain"},
                            {"job_id", "half"},
                            {"commands", json::array{json::object{{"command", "echo ok"}}}}}));
  CHECK(!again.contains("existing"));
  CHECK(str(result_of(c.call("job_wait", {{"job_id", "half"}, {"timeout", 20}})), "state") ==
        "exited");
  check_whole(cd.daemon);
  stop_cleanly(cd.daemon);
}
