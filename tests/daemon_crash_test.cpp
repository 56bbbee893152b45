// Crash and lifecycle tests of the real shell-poold: killed workers and
// frontends, SIGTERM drain, several instances, stale leftovers, restarts of roles that were ready.
// Each test starts its own daemon and checks what it leaves behind.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <set>
#include <thread>

#include "tests/daemon_harness.h"

using namespace sp::test;
using Catch::Contains;

namespace {

bool contains(const std::vector<pid_t>& v, pid_t p) {
  return std::find(v.begin(), v.end(), p) != v.end();
}

// Job leaders (direct children of a worker) whose cmdline holds `marker`.
std::vector<pid_t> job_leaders(const TestDaemon& d, std::string_view marker) {
  std::vector<pid_t> workers = d.worker_pids(), out;
  for (pid_t p : pids_matching(marker))
    if (contains(workers, parent_of(p))) out.push_back(p);
  return out;
}

bool gone(pid_t p, std::string_view marker) {
  return parent_of(p) == 0 || cmdline_of(p).find(marker) == std::string::npos;
}

}  // namespace

TEST_CASE("a killed worker's running jobs end as lost and the worker is restarted",
          "[daemon][crash]") {
  START_DAEMON(d, {"--workers", "2"});
  REQUIRE(wait_until([&] { return d.worker_pids().size() == 2; }, 10));
  Client c(d.socket());
  std::string lines;
  for (int i = 1; i <= 3; ++i) lines += Client::request(i, "execute", sh("sleep 100.789")) + "\n";
  REQUIRE(c.send_raw(lines));
  std::vector<pid_t> leaders;
  REQUIRE(wait_until(
      [&] {
        leaders = job_leaders(d, "sleep 100.789");
        return leaders.size() == 3;
      },
      10));

  // Each job with a process is running (see the next test), so all of the
  // victim's jobs must end lost.
  pid_t victim = parent_of(leaders[0]);
  std::vector<pid_t> doomed;
  for (pid_t p : leaders)
    if (parent_of(p) == victim) doomed.push_back(p);
  REQUIRE(::kill(victim, SIGKILL) == 0);
  auto start = Clock::now();
  for (size_t i = 0; i < doomed.size(); ++i) {
    auto v = c.read_json(10);
    INFO("answer " << i << ": " << c.last_line());
    REQUIRE(v);
    json::object r = result_of(v->as_object());
    CHECK(str(r, "status") == "lost");
    CHECK_THAT(str(r, "error"), Contains("worker"));
    CHECK(r.at("timed_out") == false);
  }
  CHECK(seconds_since(start) < 5);
  for (pid_t p : doomed) CHECK(wait_until([&] { return gone(p, "sleep 100.789"); }, 5));
  // Jobs on the other worker, if any, are untouched.
  CHECK_FALSE(c.read_line(0.5));

  CHECK(wait_until(
      [&] {
        std::vector<pid_t> w = d.worker_pids();
        return w.size() == 2 && !contains(w, victim);
      },
      10));
  Client fresh(d.socket());
  CHECK(str(execute(fresh, sh("echo ok")), "stdout") == "ok\n");
  c.close();  // cancels the jobs that survived
  CHECK(wait_until([] { return pids_matching("sleep 100.789").empty(); }, 10));
  stop_cleanly(d);
}

// The supervisor's repair requeues the Claimed jobs of a dead worker as "not
// started yet", so a worker must mark a job running before it spawns the
// command; otherwise a worker that dies in between (here: while vfork waits
// for the child's exec) gets a command that already started run a second
// time, and its client is never told "lost".
TEST_CASE("a job whose command already started is not started again when its worker dies",
          "[daemon][crash]") {
  START_DAEMON(d, {"--workers", "1", "--max-restarts", "100", "--drain-timeout", "1"});
  std::vector<pid_t> killed;
  for (int attempt = 0; attempt < 3; ++attempt) {
    INFO("attempt " << attempt);
    pid_t w = 0;
    REQUIRE(wait_until(
        [&] {
          w = d.worker_pid(0);
          return w && !contains(killed, w) && d.idle();
        },
        10));
    std::string marker = "sleep 100.86" + std::to_string(attempt);
    Client c(d.socket());
    REQUIRE(c.send_line(Client::request(1, "execute", sh(marker))));
    // Kill the worker the moment its command exists.
    auto start = Clock::now();
    while (children_of(w).empty() && seconds_since(start) < 5) {
    }
    REQUIRE(::kill(w, SIGKILL) == 0);
    killed.push_back(w);
    auto v = c.read_json(5);
    INFO("answer: " << c.last_line());
    REQUIRE(v);
    CHECK(str(result_of(v->as_object()), "status") == "lost");
    // Its replacement is up and idle: it had its chance to start the job again.
    REQUIRE(wait_until(
        [&] {
          pid_t now = d.worker_pid(0);
          return now && now != w && d.idle();
        },
        10));
    CHECK(pids_matching(marker).empty());  // not started a second time
    c.close();
    CHECK(wait_until([&] { return pids_matching(marker).empty(); }, 10));
  }
  stop_cleanly(d);
}

TEST_CASE("a killed frontend is replaced on the same socket and its clients' jobs are killed",
          "[daemon][crash]") {
  START_DAEMON(d);
  pid_t frontend = 0;
  REQUIRE(wait_until([&] { return (frontend = d.frontend_pid()) != 0; }, 10));
  Client old(d.socket());
  REQUIRE(old.send_line(Client::request(1, "execute", sh("sleep 100.321"))));
  REQUIRE(wait_until([] { return !pids_matching("sleep 100.321").empty(); }, 10));

  std::atomic<bool> watching{true};
  std::atomic<int> stat_failures{0};
  std::thread watcher([&] {
    struct stat st;
    while (watching) {
      if (::stat(d.socket().c_str(), &st) != 0) ++stat_failures;
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  });
  auto start = Clock::now();
  REQUIRE(::kill(frontend, SIGKILL) == 0);

  Client fresh = Client::connect_retry(d.socket(), 5);
  REQUIRE(fresh.connected());
  auto r = fresh.try_call("execute", sh("echo ok"), 10);
  double took = seconds_since(start);
  watching = false;
  watcher.join();
  INFO("answer: " << fresh.last_line());
  REQUIRE(r);
  CHECK(str(result_of(*r), "stdout") == "ok\n");
  CHECK(took < 5);
  CHECK(stat_failures == 0);
  pid_t replacement = d.frontend_pid();
  CHECK(replacement != 0);
  CHECK(replacement != frontend);

  // The old connection was closed, and its job killed.
  CHECK_FALSE(old.read_line(10));
  CHECK(old.eof());
  CHECK(wait_until([] { return pids_matching("sleep 100.321").empty(); }, 10));
  stop_cleanly(d);
}

TEST_CASE("SIGTERM lets running jobs finish, answers them, and leaves nothing behind",
          "[daemon][shutdown]") {
  START_DAEMON(d);
  Client c(d.socket());
  // The job goes on to its end only once the daemon drains.
  const std::string gate = d.dir() + "/gate";
  REQUIRE(c.send_line(Client::request(1, "execute", sh(until_file(gate) + "; echo sp-drain-653"))));
  REQUIRE(wait_until([] { return !pids_matching("sp-drain-653").empty(); }, 10));
  std::vector<pid_t> children = d.children();
  REQUIRE(::kill(d.pid(), SIGTERM) == 0);
  // New clients find no daemon at once.
  CHECK(wait_until([&] { return !file_exists(d.socket()); }, 2));
  open_gate(gate);

  auto v = c.read_json(15);
  INFO("answer: " << c.last_line());
  REQUIRE(v);
  json::object r = result_of(v->as_object());
  CHECK(str(r, "status") == "exited");
  CHECK(str(r, "stdout") == "sp-drain-653\n");
  auto code = d.wait_exit(15);
  REQUIRE(code);
  CHECK(*code == 0);
  check_left_nothing(d, children);
}

TEST_CASE("SIGTERM cancels jobs still running at the drain timeout", "[daemon][shutdown]") {
  START_DAEMON(d, {"--drain-timeout", "0.5"});
  Client c(d.socket());
  REQUIRE(c.send_line(Client::request(1, "execute", sh("sleep 100.654"))));
  REQUIRE(wait_until([] { return !pids_matching("sleep 100.654").empty(); }, 10));
  std::vector<pid_t> children = d.children();
  auto start = Clock::now();
  REQUIRE(::kill(d.pid(), SIGTERM) == 0);
  auto code = d.wait_exit(10);
  INFO("daemon log:\n" << d.log());
  REQUIRE(code);
  CHECK(*code == 0);
  CHECK(seconds_since(start) < 10);

  auto v = c.read_json(5);
  INFO("answer: " << c.last_line());
  if (v) {
    CHECK(str(result_of(v->as_object()), "status") == "cancelled");
  } else {
    CHECK(c.eof());  // or the connection just closed
  }
  CHECK(wait_until([] { return pids_matching("sleep 100.654").empty(); }, 5));
  check_left_nothing(d, children);
}

TEST_CASE("two daemons on different sockets run side by side", "[daemon][instances]") {
  START_DAEMON(a);
  START_DAEMON(b);
  CHECK(a.shm_name() != b.shm_name());
  CHECK(file_exists(a.shm_path()));
  CHECK(file_exists(b.shm_path()));
  Client ca(a.socket()), cb(b.socket());
  CHECK(str(execute(ca, sh("echo a")), "stdout") == "a\n");
  CHECK(str(execute(cb, sh("echo b")), "stdout") == "b\n");
  stop_cleanly(a);
  CHECK(str(execute(cb, sh("echo still")), "stdout") == "still\n");
  stop_cleanly(b);
}

TEST_CASE("a second daemon on a live socket refuses to start and leaves the first alone",
          "[daemon][instances]") {
  START_DAEMON(first);
  TestDaemon second(DaemonOptions{.socket = first.socket(), .wait_ready = false});
  auto code = second.wait_exit(10);
  INFO("second's log:\n" << second.log());
  REQUIRE(code);
  CHECK(*code != 0);
  CHECK_THAT(second.log(), Contains("already listening"));
  CHECK(file_exists(first.socket()));
  CHECK(file_exists(first.shm_path()));
  Client c(first.socket());
  CHECK(str(execute(c, sh("echo first")), "stdout") == "first\n");
  stop_cleanly(first);
}

TEST_CASE("a stale socket file and stale shared memory are replaced at start",
          "[daemon][instances]") {
  TempDir t;
  std::string path = t.path() + "/stale.sock";

  SECTION("stale socket") {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    sp::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    fd.reset();
    REQUIRE(file_exists(path));
    START_DAEMON(d, DaemonOptions{.socket = path});
    Client c(d.socket());
    CHECK(str(execute(c, sh("echo fresh")), "stdout") == "fresh\n");
    CHECK_THAT(d.log(), Contains("stale socket"));
    stop_cleanly(d);
  }
  SECTION("stale shared memory") {
    std::string name = shm_name_for_socket(path);
    sp::UniqueFd fd(::shm_open(("/" + name).c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600));
    REQUIRE(fd);
    REQUIRE(::write(fd.get(), "garbage", 7) == 7);
    fd.reset();
    REQUIRE(file_exists("/dev/shm/" + name));
    START_DAEMON(d, DaemonOptions{.socket = path});
    CHECK(d.shm_name() == name);
    Client c(d.socket());
    CHECK(str(execute(c, sh("echo fresh")), "stdout") == "fresh\n");
    CHECK_THAT(d.log(), Contains("stale shared memory"));
    stop_cleanly(d);
  }
}

// Restarts of roles that were ready are never a crash loop (gunicorn,
// supervisord's startsecs): far more kills than --max-restarts, and the
// daemon serves on.
TEST_CASE("a worker killed again and again after it was ready is restarted however often",
          "[daemon][crash][restart]") {
  START_DAEMON(d, {"--workers", "2", "--max-restarts", "2", "--restart-window", "30"});
  Client c(d.socket());
  constexpr int kKills = 6;
  // Each incarnation only once it reported ready: a kill before that would
  // be a boot failure.
  kill_ready_worker(d, c, kKills);
  CHECK(d.running());
  CHECK(str(execute(c, sh("echo still serving")), "stdout") == "still serving\n");
  // The supervisor counts a death when it reaps it; the last kill's may be
  // counted a moment after the test sees the new worker (as in
  // unprivileged_test), so wait (bounded) for it. REQUIRE: a failure prints
  // the daemon's log, which names each death and restart.
  REQUIRE(wait_until(
      [&] { return num(health(c).at("counters").as_object(), "worker_restarts") == kKills; }, 10));
  json::object h = health(c);
  CHECK(num(h.at("counters").as_object(), "boot_failures") == 0);
  CHECK(str(h.at("workers").as_array().at(0).as_object(), "last_death") == "after_ready");
  CHECK_THAT(d.log(), Contains("restarted however often it is killed"));
  stop_cleanly(d);
}

// A worker that starts finds jobs already queued: it claims them in the same
// loop turn that arms the timeout timer and rings the frontend (worker/loop.cpp),
// so they time out and are answered on time even when another worker took
// the submission doorbell. (An earlier daemon claimed them before its loop
// and left them to its 1 s idle tick.) It concerns jobs sent right after the
// daemon starts, and after every worker restart.
// A race, so the test sends its jobs as early as it can, many times.
TEST_CASE("jobs sent while the workers start still time out and get their answers",
          "[daemon][startup]") {
  json::object timed = sh("sleep 5.246");
  timed["timeout"] = 0.2;
  json::object failing{{"command", "/nonexistent"}, {"shell", false}};
  std::string lines;
  for (int i = 0; i < 4; i += 2)
    lines += Client::request(i, "execute", timed) + "\n" +
             Client::request(i + 1, "execute", failing) + "\n";
  for (int attempt = 0; attempt < 20; ++attempt) {
    INFO("attempt " << attempt);
    TestDaemon d(DaemonOptions{.flags = {"--workers", "2"}, .wait_ready = false});
    LogOnFailure log(d);
    Client c = Client::connect_retry(d.socket(), 10, 0.0002);
    REQUIRE(c.connected());
    REQUIRE(c.send_raw(lines));
    for (int i = 0; i < 4; ++i) {
      auto v = c.read_json(4);
      INFO("answer " << i << ": " << c.last_line());
      REQUIRE(v);
      json::object r = result_of(v->as_object());
      if (v->as_object().at("id").as_int64() % 2 == 0) {
        CHECK(str(r, "status") == "timed_out");
        // Its timer was armed, not left to the worker's 1 s idle tick.
        REQUIRE(num(r, "duration_ms") < 800);
      } else {
        CHECK(str(r, "status") == "failed");
      }
    }
    stop_cleanly(d);
  }
}

TEST_CASE("a worker that stops beating is killed, its jobs end lost, and it is replaced",
          "[daemon][crash][hang]") {
  START_DAEMON(d, {"--workers", "1", "--hang-timeout", "1"});
  REQUIRE(wait_until([&] { return d.worker_pids().size() == 1; }, 10));
  Client c(d.socket());
  REQUIRE(c.send_line(Client::request(1, "execute", sh("sleep 100.246"))));
  REQUIRE(wait_until([] { return !pids_matching("sleep 100.246").empty(); }, 10));
  pid_t stuck = d.worker_pids().at(0);
  REQUIRE(::kill(stuck, SIGSTOP) == 0);  // a hang: alive, but its loop no longer turns
  auto v = c.read_json(15);
  INFO(c.last_line());
  REQUIRE(v);
  json::object r = result_of(v->as_object());
  CHECK(str(r, "status") == "lost");
  CHECK_THAT(str(r, "error"), Contains("hung"));
  CHECK(wait_until([] { return pids_matching("sleep 100.246").empty(); }, 5));
  CHECK(wait_until(
      [&] {
        std::vector<pid_t> w = d.worker_pids();
        return w.size() == 1 && w[0] != stuck;
      },
      10));
  Client fresh(d.socket());
  CHECK(str(execute(fresh, sh("echo ok")), "stdout") == "ok\n");
  stop_cleanly(d);
}

TEST_CASE("a frontend that stops beating is replaced on the same socket", "[daemon][crash][hang]") {
  START_DAEMON(d, {"--hang-timeout", "1"});
  pid_t stuck = d.frontend_pid();
  REQUIRE(stuck > 0);
  REQUIRE(::kill(stuck, SIGSTOP) == 0);
  REQUIRE(wait_until(
      [&] {
        pid_t f = d.frontend_pid();
        return f > 0 && f != stuck;
      },
      15));
  Client fresh(d.socket());
  CHECK(str(execute(fresh, sh("echo ok")), "stdout") == "ok\n");
  stop_cleanly(d);
}

TEST_CASE("health reports the pool and counts deaths by cause", "[daemon][health]") {
  START_DAEMON(d, {"--workers", "2", "--max-concurrent", "6", "--hang-timeout", "1"});
  REQUIRE(wait_until([&] { return d.worker_pids().size() == 2; }, 10));
  Client c(d.socket());
  json::object h = result_of(c.call("health", nullptr));
  CHECK(str(h, "status") == "ok");
  REQUIRE(h.at("workers").as_array().size() == 2);
  const json::object& jobs = h.at("jobs").as_object();
  CHECK(num(jobs, "max_concurrent") == 6);
  CHECK(num(jobs, "queue_capacity") == 1024);
  CHECK(num(h.at("counters").as_object(), "worker_restarts") == 0);

  pid_t crashed = d.worker_pids().at(0);
  REQUIRE(::kill(crashed, SIGKILL) == 0);
  REQUIRE(wait_until(
      [&] { return d.worker_pids().size() == 2 && !contains(d.worker_pids(), crashed); }, 10));
  pid_t stuck = d.worker_pids().at(0);
  REQUIRE(::kill(stuck, SIGSTOP) == 0);
  REQUIRE(wait_until(
      [&] { return d.worker_pids().size() == 2 && !contains(d.worker_pids(), stuck); }, 15));

  // The replacement is visible to us (a child process) before the health
  // answer we read may show the count, or its pid (stored once its exec
  // succeeded): wait for both (bounded), they must come.
  auto all_pids = [&] {
    for (const json::value& w : h.at("workers").as_array())
      if (num(w.as_object(), "pid") <= 0) return false;
    return true;
  };
  CHECK(wait_until(
      [&] {
        h = result_of(c.call("health", nullptr));
        return num(h.at("counters").as_object(), "worker_restarts") == 2 && all_pids();
      },
      10, 0.05));
  const json::object& counters = h.at("counters").as_object();
  CHECK(num(counters, "worker_restarts") == 2);
  CHECK(num(counters, "deaths_by_signal") == 1);
  CHECK(num(counters, "hang_kills") == 1);
  for (const json::value& w : h.at("workers").as_array()) CHECK(num(w.as_object(), "pid") > 0);
  stop_cleanly(d);
}

TEST_CASE("--recycle-after replaces a worker after its jobs, without counting a crash",
          "[daemon][recycle]") {
  START_DAEMON(d, {"--workers", "1", "--recycle-after", "5"});
  Client c(d.socket());
  std::set<pid_t> workers_seen;
  for (int i = 0; i < 30; ++i) {
    json::object r = execute(c, sh("echo job-" + std::to_string(i)));
    REQUIRE(str(r, "stdout") == "job-" + std::to_string(i) + "\n");
    for (pid_t w : d.worker_pids()) workers_seen.insert(w);
  }
  json::object h = result_of(c.call("health", nullptr));
  const json::object& counters = h.at("counters").as_object();
  CHECK(num(counters, "recycles") >= 5);
  CHECK(num(counters, "worker_restarts") == 0);
  CHECK(num(counters, "deaths_by_exit") == 0);
  CHECK(workers_seen.size() >= 4);
  stop_cleanly(d);
}
