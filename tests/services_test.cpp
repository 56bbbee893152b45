// Supervised services through the real shell-poold: an HTTP server
// (python3 -m http.server) readied by an http probe; file and command
// probes, and `ready` following the probe; a service that never gets ready;
// on-failure backoff timings and the `failed` end; `always` vs `never`; a
// stop that wins over the policy; a service ignoring TERM; logs across
// restarts and a ring that overflows; a frontend kill and a worker kill
// under running services; sessions and the bounds; the daemon's SIGTERM
// stopping services with their stop signal; the CLI.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <string>
#include <vector>

#include "tests/daemon_harness.h"

using namespace sp::test;
using Catch::Contains;

namespace {

// A TCP port on 127.0.0.1 nobody listens on right now.
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

bool port_open(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(uint16_t(port));
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

bool alive(int64_t pid) {
  return pid > 0 && ::kill(pid_t(pid), 0) == 0;
}

json::object status(Client& c, const std::string& name) {
  return result_of(c.call("service_status", {{"name", name}}));
}

std::string state(Client& c, const std::string& name) {
  return str(status(c, name), "state");
}

// The whole log from the oldest byte kept, and what was lost before it.
struct Log {
  std::string text;
  int64_t lost = 0;
};
Log read_log(Client& c, const std::string& name, const char* stream = "both") {
  Log log;
  uint64_t cursor = 0;
  for (int reads = 0; reads < 1000; ++reads) {
    json::object r =
        result_of(c.call("service_logs", {{"name", name}, {"cursor", cursor}, {"stream", stream}}));
    if (reads == 0) log.lost = num(r, "lost_bytes");
    log.text += str(r, "data");
    const uint64_t next = uint64_t(num(r, "next_cursor"));
    if (next == cursor) break;
    cursor = next;
  }
  return log;
}

json::object wait_for(Client& c, const std::string& name, const char* until, double timeout_s) {
  return result_of(c.call(
      "service_wait", {{"name", name}, {"until", until}, {"timeout", timeout_s}}, timeout_s + 30));
}

std::vector<double> numbers_in(const std::string& path) {
  std::vector<double> out;
  std::ifstream in(path);
  for (double t; in >> t;) out.push_back(t);
  return out;
}

}  // namespace

TEST_CASE("an HTTP server readied by an http probe, stopped, removed", "[daemon][services]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  const int port = free_port();
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/";
  json::object start{{"name", "web"},
                     {"command", "python3"},
                     {"args", {"-m", "http.server", std::to_string(port), "--bind", "127.0.0.1"}},
                     {"working_dir", d.dir()},
                     {"readiness", {{"http", {{"url", url}, {"status", 200}}}, {"period_ms", 100}}},
                     {"wait_ready", 60}};
  json::object r = result_of(c.call("service_start", start, 90));
  CHECK(str(r, "state") == "ready");
  CHECK(r.at("ready").as_bool());
  CHECK(num(r, "generation") == 1);
  CHECK_FALSE(r.at("existing").as_bool());
  const int64_t pid = num(r, "pid");
  CHECK(alive(pid));
  CHECK(port_open(port));
  CHECK(r.at("last_probe").as_object().at("ok").as_bool());
  CHECK(num(r, "ready_at_ms") >= num(r, "started_at_ms"));

  // The same spec again: the same service (retry-safe); another: an error.
  r = result_of(c.call("service_start", start));
  CHECK(r.at("existing").as_bool());
  CHECK(num(r, "pid") == pid);
  json::object other = start;
  other["env"] = {{"X", "1"}};
  json::object e = error_of(c.call("service_start", other));
  CHECK(e.at("code").as_int64() == -32005);
  CHECK_THAT(std::string(e.at("message").as_string()), Contains("service_restart"));
  CHECK_THAT(
      std::string(error_of(c.call("service_remove", {{"name", "web"}})).at("message").as_string()),
      Contains("stop it first"));

  r = result_of(c.call("service_list", json::object{}));
  REQUIRE(r.at("services").as_array().size() == 1);

  // Stopped: its process group is gone and the port is free when it answers.
  r = result_of(c.call("service_stop", {{"name", "web"}}));
  CHECK(str(r, "state") == "stopped");
  CHECK_FALSE(alive(pid));
  CHECK_FALSE(port_open(port));
  CHECK(r.at("pid").is_null());
  CHECK(r.at("last_exit").as_object().at("signal").as_string() == "SIGTERM");
  Log log = read_log(c, "web");
  CHECK_THAT(log.text, Contains("generation 1 started"));
  CHECK_THAT(log.text, Contains("\"GET / HTTP/1.1\" 200"));
  CHECK_THAT(log.text, Contains("generation 1 is ready"));
  CHECK_THAT(log.text, Contains("stopped by service_stop"));
  CHECK(log.lost == 0);

  r = result_of(c.call("service_remove", {{"name", "web"}}));
  CHECK(r.at("removed").as_bool());
  CHECK(error_of(c.call("service_status", {{"name", "web"}})).at("code").as_int64() == -32001);
  CHECK(result_of(c.call("service_list", json::object{})).at("services").as_array().empty());
  stop_cleanly(d);
}

TEST_CASE("file and command probes; ready follows the probe", "[daemon][services]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  TempDir dir;
  result_of(
      c.call("service_start", {{"name", "files"},
                               {"command", "sleep 0.3; touch up; exec sleep 600"},
                               {"working_dir", dir.path()},
                               {"readiness", {{"file", {{"path", "up"}}}, {"period_ms", 50}}}}));
  result_of(c.call(
      "service_start",
      {{"name", "cmd"},
       {"command", "exec sleep 600"},
       {"working_dir", dir.path()},
       {"env", {{"WANT", "flag"}}},
       {"readiness", {{"command", {{"command", "test -e \"$WANT\""}}}, {"period_ms", 50}}}}));
  json::object r = wait_for(c, "files", "ready", 30);
  CHECK(r.at("reached").as_bool());
  CHECK(str(r, "state") == "ready");
  // The command probe runs in the service's directory with its env.
  CHECK(str(status(c, "cmd"), "state") == "starting");
  { std::ofstream(dir.path() + "/flag") << ""; }
  CHECK(wait_for(c, "cmd", "ready", 30).at("reached").as_bool());

  // Probing goes on after ready: `ready` follows it, the state stays.
  REQUIRE(::unlink((dir.path() + "/up").c_str()) == 0);
  REQUIRE(wait_until([&] { return !status(c, "files").at("ready").as_bool(); }, 10));
  r = status(c, "files");
  CHECK(str(r, "state") == "ready");
  CHECK_FALSE(r.at("last_probe").as_object().at("ok").as_bool());
  CHECK_THAT(std::string(r.at("last_probe").as_object().at("error").as_string()), Contains("up"));
  { std::ofstream(dir.path() + "/up") << ""; }
  REQUIRE(wait_until([&] { return status(c, "files").at("ready").as_bool(); }, 10));
  CHECK(num(status(c, "files"), "generation") == 1);
  stop_cleanly(d);
}

TEST_CASE("a service that never gets ready is killed and fails", "[daemon][services]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  const int port = free_port();  // nobody listens
  json::object r = result_of(c.call(
      "service_start",
      {{"name", "deaf"},
       {"command", "exec sleep 600"},
       {"restart", {{"policy", "never"}}},
       {"readiness", {{"tcp", {{"port", port}}}, {"period_ms", 50}, {"start_period_ms", 2000}}},
       {"wait_ready", true}},
      60));
  // wait_ready answers once ready can no longer happen.
  CHECK(str(r, "state") == "failed");
  CHECK_FALSE(r.at("ready").as_bool());
  CHECK_THAT(str(r, "error"), Contains("not ready within start_period_ms (2000 ms)"));
  CHECK(r.at("last_probe").as_object().at("ok").as_bool() == false);
  CHECK_THAT(std::string(r.at("last_probe").as_object().at("error").as_string()),
             Contains("refused"));
  CHECK(r.at("last_exit").as_object().at("signal").as_string() == "SIGTERM");
  r = wait_for(c, "deaf", "ready", 10);
  CHECK_FALSE(r.at("reached").as_bool());

  // Under on-failure the same counts toward max_restarts.
  r = result_of(c.call(
      "service_start",
      {{"name", "deaf2"},
       {"command", "exec sleep 600"},
       {"restart", {{"backoff_ms", 50}, {"max_restarts", 1}}},
       {"readiness", {{"tcp", {{"port", port}}}, {"period_ms", 50}, {"start_period_ms", 1000}}}}));
  r = wait_for(c, "deaf2", "failed", 30);
  CHECK(r.at("reached").as_bool());
  CHECK(num(r, "generation") == 2);
  CHECK_THAT(str(r, "error"), Contains("max_restarts 1"));
  stop_cleanly(d);
}

TEST_CASE("on-failure backs off exponentially, then fails; exit 0 ends it", "[daemon][services]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  TempDir dir;
  const std::string starts = dir.path() + "/starts";
  result_of(
      c.call("service_start", {{"name", "crashy"},
                               {"command", "date +%s.%N >> " + starts + "; echo boom >&2; exit 3"},
                               {"restart",
                                {{"backoff_ms", 200},
                                 {"backoff_max_ms", 800},
                                 {"max_restarts", 4},
                                 {"window_ms", 60000}}}}));
  json::object r = wait_for(c, "crashy", "failed", 60);
  CHECK(r.at("reached").as_bool());
  CHECK(num(r, "generation") == 5);
  CHECK(num(r, "restarts") == 4);
  CHECK(num(r.at("last_exit").as_object(), "exit_code") == 3);
  CHECK_THAT(str(r, "error"), Contains("exit code 3"));
  CHECK_THAT(str(r, "error"), Contains("5 times within 60000 ms (max_restarts 4)"));
  // The gaps between starts: at least 200, 400, 800, 800 ms (capped).
  std::vector<double> t = numbers_in(starts);
  REQUIRE(t.size() == 5);
  const double want[] = {0.2, 0.4, 0.8, 0.8};
  for (size_t k = 0; k < 4; ++k) {
    INFO("gap " << k << ": " << t[k + 1] - t[k] << " s");
    CHECK(t[k + 1] - t[k] >= want[k]);
    CHECK(t[k + 1] - t[k] < want[k] + 5);
  }
  // Waits that can no longer be met answer at once.
  CHECK_FALSE(wait_for(c, "crashy", "ready", 30).at("reached").as_bool());
  CHECK_FALSE(wait_for(c, "crashy", "exited", 30).at("reached").as_bool());

  result_of(c.call("service_start", {{"name", "done"}, {"command", "echo fine"}}));
  r = wait_for(c, "done", "exited", 30);
  CHECK(r.at("reached").as_bool());
  CHECK(num(r, "generation") == 1);
  CHECK(r.at("error").is_null());
  CHECK_THAT(read_log(c, "done").text, Contains("fine\n"));
  stop_cleanly(d);
}

TEST_CASE("always restarts after exit 0, never does not restart at all", "[daemon][services]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  result_of(
      c.call("service_start",
             {{"name", "again"},
              {"command", "echo tick"},
              {"restart", {{"policy", "always"}, {"backoff_ms", 20}, {"max_restarts", 50}}}}));
  result_of(c.call("service_start",
                   {{"name", "once"}, {"command", "exit 7"}, {"restart", {{"policy", "never"}}}}));
  REQUIRE(wait_until([&] { return num(status(c, "again"), "generation") >= 3; }, 30));
  json::object r = wait_for(c, "once", "exited", 30);
  CHECK(r.at("reached").as_bool());
  CHECK(num(r, "generation") == 1);
  CHECK(num(r.at("last_exit").as_object(), "exit_code") == 7);
  // Generations 1 and 2 ended, so their output is in the log (the third's may not be yet).
  CHECK(count_of(read_log(c, "again").text, "tick\n") >= 2);
  r = result_of(c.call("service_stop", {{"name", "again"}}));
  CHECK(str(r, "state") == "stopped");
  stop_cleanly(d);
}

TEST_CASE("a stop wins over the policy, in a run and in a backoff", "[daemon][services]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  // Without a probe a service is ready once started: wait_ready answers then.
  json::object r = result_of(c.call("service_start",
                                    {{"name", "keeper"},
                                     {"command", "exec sleep 600"},
                                     {"restart", {{"policy", "always"}, {"backoff_ms", 10}}},
                                     {"wait_ready", 30}},
                                    60));
  CHECK(str(r, "state") == "running");
  CHECK(r.at("ready").as_bool());
  REQUIRE(wait_until([&] { return status(c, "keeper").at("pid").is_int64(); }, 10));
  r = result_of(c.call("service_stop", {{"name", "keeper"}}));
  CHECK(str(r, "state") == "stopped");
  // Nothing starts again (its backoff would have been 10 ms).
  CHECK_FALSE(wait_until([&] { return state(c, "keeper") != "stopped"; }, 0.5));
  CHECK(num(status(c, "keeper"), "generation") == 1);

  result_of(
      c.call("service_start",
             {{"name", "slowretry"}, {"command", "exit 1"}, {"restart", {{"backoff_ms", 60000}}}}));
  REQUIRE(wait_until([&] { return state(c, "slowretry") == "backoff"; }, 10));
  CHECK(num(status(c, "slowretry"), "next_start_in_ms") > 1000);
  r = result_of(c.call("service_stop", {{"name", "slowretry"}}));
  CHECK(str(r, "state") == "stopped");

  // service_restart starts a stopped service again, at once.
  r = result_of(c.call("service_restart", {{"name", "keeper"}}));
  CHECK(num(r, "generation") == 2);
  CHECK(str(r, "state") == "running");
  // ... and with a new spec replaces the running generation.
  r = result_of(c.call("service_restart",
                       {{"name", "keeper"}, {"spec", {{"command", "echo new; exec sleep 600"}}}}));
  CHECK(num(r, "generation") == 3);
  REQUIRE(wait_until([&] { return read_log(c, "keeper").text.find("new\n") != std::string::npos; },
                     10));
  stop_cleanly(d);
}

TEST_CASE("a service that ignores TERM is killed after its grace, whole group",
          "[daemon][services]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  TempDir dir;
  const std::string child = dir.path() + "/child";
  result_of(c.call("service_start",
                   {{"name", "stubborn"},
                    {"command", "trap '' TERM; sleep 600 & echo $! > " + child + "; wait"},
                    {"stop", {{"grace_ms", 700}}}}));
  REQUIRE(wait_until([&] { return read_file(child).find('\n') != std::string::npos; }, 10));
  const pid_t grandchild = pid_t(std::stol(read_file(child)));
  REQUIRE(alive(grandchild));
  const auto t0 = Clock::now();
  json::object r = result_of(c.call("service_stop", {{"name", "stubborn"}}));
  CHECK(seconds_since(t0) >= 0.6);
  CHECK(str(r, "state") == "stopped");
  CHECK(r.at("last_exit").as_object().at("signal").as_string() == "SIGKILL");
  CHECK(wait_until([&] { return !alive(grandchild); }, 5));

  // A stop signal of its own: INT, which it handles.
  result_of(c.call(
      "service_start",
      {{"name", "polite"},
       {"command", "trap 'echo got INT; exit 0' INT; echo armed; while :; do sleep 0.05; done"},
       {"stop", {{"signal", "INT"}, {"grace_ms", 30000}}}}));
  REQUIRE(wait_until([&] { return count_of(read_log(c, "polite").text, "armed") == 1; }, 10));
  r = result_of(c.call("service_stop", {{"name", "polite"}}));
  CHECK(str(r, "state") == "stopped");
  CHECK_THAT(read_log(c, "polite").text, Contains("got INT"));
  stop_cleanly(d);
}

TEST_CASE("one log across restarts, a ring that overflows, cursors and streams",
          "[daemon][services]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  result_of(
      c.call("service_start", {{"name", "chatty"},
                               {"command", "echo \"out $$ hunter22\"; echo \"err $$\" >&2; exit 1"},
                               {"secrets", {"hunter22"}},
                               {"restart", {{"backoff_ms", 10}, {"max_restarts", 2}}}}));
  REQUIRE(wait_for(c, "chatty", "failed", 30).at("reached").as_bool());
  Log log = read_log(c, "chatty");
  for (int g = 1; g <= 3; ++g)
    CHECK_THAT(log.text, Contains("generation " + std::to_string(g) + " started"));
  CHECK(count_of(log.text, "out ") == 3);
  CHECK(count_of(log.text, "err ") == 3);
  CHECK(count_of(log.text, "***") == 3);  // redacted before it reached shm
  CHECK(log.text.find("hunter22") == std::string::npos);
  CHECK(json::serialize(status(c, "chatty")).find("hunter22") == std::string::npos);
  const std::string out = read_log(c, "chatty", "stdout").text;
  CHECK(count_of(out, "out ") == 3);
  CHECK(count_of(out, "err ") == 0);
  CHECK_THAT(out, Contains("generation 3 started"));  // markers are in every view
  json::object r = result_of(c.call("service_logs", {{"name", "chatty"}, {"tail_bytes", 20}}));
  CHECK(str(r, "data").size() == 20);
  CHECK(r.at("eof").as_bool());

  // A 4 KiB ring and 40 KiB of output: the oldest is overwritten.
  result_of(c.call("service_start",
                   {{"name", "flood"},
                    {"command", "for i in $(seq 1 400); do printf 'line %05d %089d\\n' $i 0; done"},
                    {"restart", {{"policy", "never"}}},
                    {"log_bytes", 4096}}));
  REQUIRE(wait_for(c, "flood", "exited", 30).at("reached").as_bool());
  log = read_log(c, "flood");
  CHECK(log.lost > 30000);
  CHECK(log.text.size() < 4096);
  CHECK_THAT(log.text, Contains("line 00400"));
  CHECK_THAT(log.text, !Contains("line 00001 "));

  // Following a running service's log with a cursor and "wait".
  result_of(c.call("service_start",
                   {{"name", "ticker"},
                    {"command", "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done"}}));
  uint64_t cursor = 0;
  std::string seen;
  for (int reads = 0; reads < 200 && seen.find("tick 5\n") == std::string::npos; ++reads) {
    r = result_of(
        c.call("service_logs", {{"name", "ticker"}, {"cursor", cursor}, {"wait", 5}}, 30));
    seen += str(r, "data");
    cursor = uint64_t(num(r, "next_cursor"));
    CHECK_FALSE(r.at("eof").as_bool());
  }
  CHECK_THAT(seen, Contains("tick 1\ntick 2\ntick 3\ntick 4\ntick 5\n"));
  stop_cleanly(d);
}

TEST_CASE("services survive a frontend kill; a worker kill restarts them elsewhere",
          "[daemon][services][crash]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "2"}});
  Client c(d.socket());
  TempDir dir;
  result_of(
      c.call("service_start",
             {{"name", "steady"},
              {"command", "touch up; i=0; while :; do i=$((i+1)); echo beat $i; sleep 0.05; done"},
              {"working_dir", dir.path()},
              {"readiness", {{"file", {{"path", "up"}}}, {"period_ms", 50}}},
              {"wait_ready", 30}},
             60));
  json::object before = status(c, "steady");
  REQUIRE(str(before, "state") == "ready");
  const int64_t pid = num(before, "pid");

  Client c2 = kill_frontend(d);
  json::object after = result_of(c2.call("service_status", {{"name", "steady"}}));
  CHECK(str(after, "state") == "ready");
  CHECK(num(after, "pid") == pid);
  CHECK(num(after, "generation") == 1);
  CHECK(alive(pid));
  // Its output goes on into the same log, the beats before and after.
  const int beats = count_of(read_log(c2, "steady").text, "beat ");
  REQUIRE(
      wait_until([&] { return count_of(read_log(c2, "steady").text, "beat ") > beats + 3; }, 10));

  // The worker running it dies: the generation is lost, a failure; the
  // policy starts the next one on a worker that lives.
  const pid_t worker = parent_of(pid_t(pid));
  REQUIRE(worker > 0);
  ::kill(worker, SIGKILL);
  REQUIRE(wait_until(
      [&] {
        json::object s = result_of(c2.call("service_status", {{"name", "steady"}}));
        return num(s, "generation") == 2 && str(s, "state") == "ready";
      },
      30));
  json::object s = result_of(c2.call("service_status", {{"name", "steady"}}));
  CHECK(num(s, "pid") != pid);
  CHECK_THAT(str(s, "error"), Contains("lost"));
  CHECK_FALSE(alive(pid));
  stop_cleanly(d);
}

TEST_CASE("a generation queued by a frontend that died before noting it is killed",
          "[daemon][services][crash]") {
  TempDir dir;
  const std::string marker = dir.path() + "/crashed";
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"},
                                .env = {"SHELL_POOL_CRASH_POINT=service_queued",
                                        "SHELL_POOL_CRASH_MARKER=" + marker},
                                .binary = SHELL_POOLD_CRASHPOINTS});
  Client c(d.socket());
  const std::string starts = dir.path() + "/starts";
  // The frontend dies right after queueing the first generation: the call
  // gets no answer, the slot it was filling stays (Live, no generation).
  auto lost = c.try_call("service_start",
                         {{"name", "once"},
                          {"command", "echo $$ >> " + starts + "; exec sleep 600"},
                          {"restart", {{"backoff_ms", 10}}}},
                         10);
  CHECK_FALSE(lost);
  REQUIRE(file_exists(marker));
  Client c2 = Client::connect_retry(d.socket(), 10);
  // The next frontend kills the generation nobody noted, and the service,
  // whose job is gone, starts again: one copy runs, never two.
  REQUIRE(wait_until(
      [&] {
        auto r = c2.try_call("service_status", {{"name", "once"}}, 5);
        return r && r->contains("result") && r->at("result").as_object().at("pid").is_int64();
      },
      20));
  // The running generation writes its pid (the orphan may have written one
  // first, or been killed before it could).
  const int64_t pid = num(status(c2, "once"), "pid");
  REQUIRE(wait_until(
      [&] {
        std::vector<double> seen = numbers_in(starts);
        return !seen.empty() && int64_t(seen.back()) == pid;
      },
      10));
  std::vector<double> pids = numbers_in(starts);
  REQUIRE(pids.size() <= 2);
  CHECK(num(status(c2, "once"), "generation") == 1);
  for (double p : pids)
    if (int64_t(p) != pid) CHECK(wait_until([&] { return !alive(int64_t(p)); }, 10));
  CHECK(alive(pid));
  stop_cleanly(d);
}

TEST_CASE("session services, the bounds, and bad params", "[daemon][services]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--services", "3",
                                          "--services-per-session", "2"}});
  Client c(d.socket());
  const std::string sid =
      str(result_of(c.call("session_create", {{"env_vars", {{"GREETING", "hi"}}}})), "session_id");
  json::object e = error_of(
      c.call("service_start", {{"name", "nosess"}, {"command", "true"}, {"session_id", "nope"}}));
  CHECK(e.at("code").as_int64() == -32001);
  for (const char* name : {"s1", "s2"})
    result_of(c.call(
        "service_start",
        {{"name", name}, {"command", "echo $GREETING; exec sleep 600"}, {"session_id", sid}}));
  e = error_of(
      c.call("service_start", {{"name", "s3"}, {"command", "sleep 600"}, {"session_id", sid}}));
  CHECK(e.at("code").as_int64() == -32002);
  CHECK_THAT(std::string(e.at("message").as_string()), Contains("--services-per-session"));
  result_of(c.call("service_start", {{"name", "d1"}, {"command", "exec sleep 600"}}));
  e = error_of(c.call("service_start", {{"name", "d2"}, {"command", "sleep 600"}}));
  CHECK(e.at("code").as_int64() == -32002);
  CHECK_THAT(std::string(e.at("message").as_string()), Contains("--services"));

  REQUIRE(wait_until([&] { return read_log(c, "s1").text.find("hi\n") != std::string::npos; }, 10));
  const int64_t pid = num(status(c, "s1"), "pid");
  result_of(c.call("session_destroy", {{"session_id", sid}}));
  REQUIRE(wait_until(
      [&] {
        return c.call("service_status", {{"name", "s1"}}).contains("error");
      },
      10));
  CHECK(wait_until([&] { return !alive(pid); }, 5));
  CHECK(wait_until(
      [&] {
        return result_of(c.call("service_list", json::object{})).at("services").as_array().size() ==
               1;
      },
      10));

  for (const json::object& bad :
       {json::object{{"name", "-x"}, {"command", "true"}},
        json::object{{"name", std::string(65, 'a')}, {"command", "true"}},
        json::object{{"name", "a"}, {"command", "true"}, {"restart", {{"policy", "sometimes"}}}},
        json::object{{"name", "a"},
                     {"command", "true"},
                     {"readiness", {{"tcp", {{"port", 1}}}, {"file", {{"path", "x"}}}}}},
        json::object{{"name", "a"}, {"command", "true"}, {"stdin", "x"}},
        json::object{{"name", "a"}, {"command", "true"}, {"log_bytes", 10}}})
    CHECK(error_of(c.call("service_start", bad)).at("code").as_int64() == -32602);
  stop_cleanly(d);
}

TEST_CASE("the daemon's SIGTERM stops services with their stop signal", "[daemon][services]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  TempDir dir;
  const std::string note = dir.path() + "/note";
  result_of(c.call("service_start",
                   {{"name", "graceful"},
                    {"command", "trap 'echo stopped by HUP > " + note +
                                    "; exit 0' HUP; echo armed; while :; do sleep 0.05; done"},
                    {"stop", {{"signal", "HUP"}}}}));
  REQUIRE(wait_until([&] { return count_of(read_log(c, "graceful").text, "armed") == 1; }, 10));
  stop_cleanly(d);
  CHECK(read_file(note) == "stopped by HUP\n");
}

TEST_CASE("the CLI's service commands", "[daemon][services][cli]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  TempDir dir;
  const std::string sock = "--socket=" + d.socket();
  CliRun run = run_cli({sock, "service", "start", "cli", "--wait", "--ready-cmd", "true", "--sh",
                        "echo hello from cli; exec sleep 600"},
                       dir.path());
  INFO(run.err);
  REQUIRE(run.exit_code == 0);
  CHECK_THAT(run.out, Contains("\"state\":\"ready\""));
  REQUIRE(wait_until(
      [&] {
        return run_cli({sock, "service", "logs", "cli"}, dir.path()).out.find("hello from cli") !=
               std::string::npos;
      },
      10));
  run = run_cli({sock, "service", "wait", "cli", "--until", "exited", "--timeout", "0.2"},
                dir.path());
  CHECK(run.exit_code == 1);
  run = run_cli({sock, "service", "stop", "cli"}, dir.path());
  CHECK(run.exit_code == 0);
  CHECK_THAT(run.out, Contains("\"state\":\"stopped\""));
  run = run_cli({sock, "service", "logs", "cli", "-f"}, dir.path());
  CHECK(run.exit_code == 0);
  CHECK_THAT(run.out, Contains("generation 1 ended"));
  run = run_cli({sock, "service", "list"}, dir.path());
  CHECK_THAT(run.out, Contains("\"name\":\"cli\""));
  CHECK(run_cli({sock, "service", "rm", "cli"}, dir.path()).exit_code == 0);
  CHECK(run_cli({sock, "service", "status", "cli"}, dir.path()).exit_code != 0);
  stop_cleanly(d);
}
