// PTY jobs of the real shell-poold: "pty" runs the command as session
// leader on a new terminal of the asked size (stdout and stderr together as
// "stdout"), input goes through job_stdin_write, job_resize changes the
// size, all output is read to the end, and a worker's death ends the job
// lost with its processes killed.
#include <signal.h>

#include <catch2/catch.hpp>
#include <string>

#include "tests/daemon_harness.h"

using namespace sp::test;
using Catch::Contains;

namespace {

json::object pty_job(std::string_view command, json::object pty = {}) {
  return {{"command", command}, {"pty", pty}};
}

}  // namespace

TEST_CASE("a pty job runs on a terminal of the asked size; its output all comes as stdout",
          "[daemon][pty]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  json::object r = execute(
      c, pty_job("[ -t 0 ] && [ -t 1 ] && echo tty; tty; stty size; echo $TERM; echo err >&2",
                 {{"rows", 30}, {"cols", 100}, {"term", "vt100"}}));
  CHECK(num(r, "exit_code") == 0);
  CHECK_THAT(str(r, "stdout"), Contains("tty\r\n/dev/pts/"));
  CHECK_THAT(str(r, "stdout"), Contains("\r\n30 100\r\nvt100\r\nerr\r\n"));
  CHECK(str(r, "stderr").empty());
  // Defaults: 24 x 80, xterm-256color; `true` works as well as an object.
  r = execute(c, {{"command", "stty size; echo $TERM"}, {"pty", true}});
  CHECK(str(r, "stdout") == "24 80\r\nxterm-256color\r\n");
  // Without pty nothing is a terminal.
  CHECK(str(execute(c, sh("[ -t 1 ] && echo tty || echo pipe")), "stdout") == "pipe\n");
  for (const json::value& bad :
       {json::value(json::object{{"rows", 0}}), json::value(json::object{{"cols", 70000}}),
        json::value(json::object{{"term", "a b"}}), json::value("yes")}) {
    INFO(json::serialize(bad));
    json::object e = error_of(c.call("execute", {{"command", "true"}, {"pty", bad}}));
    CHECK(num(e, "code") == -32602);
  }
  stop_cleanly(d);
}

TEST_CASE("a pty job's last output is all read: 100000 bytes and an exit, 50 times",
          "[daemon][pty]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  for (int i = 0; i < 50; ++i) {
    json::object r = execute(c, pty_job("head -c 100000 /dev/zero | tr '\\0' x; exit 3"));
    INFO("run " << i);
    REQUIRE(num(r, "exit_code") == 3);
    REQUIRE(str(r, "stdout") == std::string(100000, 'x'));
  }
  stop_cleanly(d);
}

TEST_CASE("a pty job reads job_stdin_write's input; ^D is its end of input", "[daemon][pty]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  json::object params = pty_job("read line; echo \"got $line\"; cat");
  params["job_id"] = "term";
  params["stdin_open"] = true;
  result_of(c.call("job_submit", params));
  result_of(c.call("job_stdin_write", {{"job_id", "term"}, {"data", "hello\n"}}));
  json::object e = error_of(c.call("job_stdin_close", {{"job_id", "term"}}));
  CHECK(num(e, "code") == -32602);
  CHECK_THAT(str(e, "message"), Contains("\\u0004"));
  result_of(c.call("job_stdin_write", {{"job_id", "term"}, {"data", "more\n\x04"}}));
  json::object r = result_of(c.call("job_wait", {{"job_id", "term"}, {"timeout", 20}}));
  CHECK(str(r, "status") == "exited");
  CHECK_THAT(str(r, "stdout"), Contains("got hello\r\n"));
  CHECK_THAT(str(r, "stdout"), Contains("more\r\n"));
  stop_cleanly(d);
}

TEST_CASE("job_resize sets a pty job's size and it gets SIGWINCH; other jobs are refused",
          "[daemon][pty]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  json::object params = pty_job("trap 'stty size' WINCH; echo ready; while :; do sleep 0.05; done");
  params["job_id"] = "winch";
  result_of(c.call("job_submit", params));
  auto output = [&] { return str(result_of(c.call("job_output", {{"job_id", "winch"}})), "data"); };
  REQUIRE(wait_until([&] { return output().find("ready") != std::string::npos; }, 10));
  json::object r =
      result_of(c.call("job_resize", {{"job_id", "winch"}, {"rows", 50}, {"cols", 132}}));
  CHECK(num(r, "rows") == 50);
  CHECK(wait_until([&] { return output().find("50 132") != std::string::npos; }, 10));
  CHECK(num(error_of(c.call("job_resize", {{"job_id", "winch"}, {"rows", 0}, {"cols", 10}})),
            "code") == -32602);
  result_of(c.call("job_cancel", {{"job_id", "winch"}, {"signal", "KILL"}}));
  result_of(c.call("job_wait", {{"job_id", "winch"}, {"timeout", 20}}));
  CHECK(num(error_of(c.call("job_resize", {{"job_id", "winch"}, {"rows", 5}, {"cols", 5}})),
            "code") == -32005);
  result_of(c.call("job_submit", {{"command", "sleep 30"}, {"job_id", "pipes"}}));
  json::object e = error_of(c.call("job_resize", {{"job_id", "pipes"}, {"rows", 5}, {"cols", 5}}));
  CHECK(num(e, "code") == -32005);
  CHECK_THAT(str(e, "message"), Contains("terminal"));
  result_of(c.call("job_cancel", {{"job_id", "pipes"}}));
  CHECK(num(error_of(c.call("job_resize", {{"job_id", "none"}, {"rows", 5}, {"cols", 5}})),
            "code") == -32001);
  stop_cleanly(d);
}

TEST_CASE("a worker killed while a pty job runs: the job ends lost, its processes killed",
          "[daemon][pty][crash]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  json::object params = pty_job("echo up; sleep 107.3301");
  params["job_id"] = "doomed";
  result_of(c.call("job_submit", params));
  REQUIRE(wait_until([] { return !pids_matching("sleep 107.3301").empty(); }, 10));
  pid_t worker = d.worker_pid(0);
  REQUIRE(worker > 0);
  REQUIRE(::kill(worker, SIGKILL) == 0);
  json::object r = result_of(c.call("job_wait", {{"job_id", "doomed"}, {"timeout", 20}}));
  CHECK(str(r, "status") == "lost");
  CHECK(wait_until([] { return pids_matching("sleep 107.3301").empty(); }, 10));
  REQUIRE(wait_until([&] { return d.worker_pid(0) > 0 && d.worker_pid(0) != worker; }, 15));
  CHECK(str(execute(c, pty_job("echo again")), "stdout") == "again\r\n");
  stop_cleanly(d);
}

TEST_CASE("job_signal to a pty job goes to its terminal's foreground group, not the shell",
          "[daemon][pty]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  json::object params{{"command", "bash"},
                      {"args", json::array{"--norc", "--noprofile", "-i"}},
                      {"pty", true},
                      {"stdin_open", true},
                      {"job_id", "shell"}};
  result_of(c.call("job_submit", params));
  result_of(c.call("job_stdin_write", {{"job_id", "shell"}, {"data", "sleep 108.1\n"}}));
  REQUIRE(wait_until([] { return !pids_matching("sleep 108.1").empty(); }, 10));
  result_of(c.call("job_signal", {{"job_id", "shell"}, {"signal", "INT"}}));
  CHECK(wait_until([] { return pids_matching("sleep 108.1").empty(); }, 10));
  // The shell lived through it and still answers.
  result_of(c.call("job_stdin_write", {{"job_id", "shell"}, {"data", "echo alive-$((40+2))\n"}}));
  auto output = [&] { return str(result_of(c.call("job_output", {{"job_id", "shell"}})), "data"); };
  CHECK(wait_until([&] { return output().find("alive-42") != std::string::npos; }, 10));
  CHECK(str(result_of(c.call("job_status", {{"job_id", "shell"}})), "state") == "running");
  CHECK(num(error_of(c.call("job_signal",
                            {{"job_id", "shell"}, {"signal", "INT"}, {"target", "leader"}})),
            "code") == -32602);
  result_of(c.call("job_stdin_write", {{"job_id", "shell"}, {"data", "exit 7\n"}}));
  json::object r = result_of(c.call("job_wait", {{"job_id", "shell"}, {"timeout", 20}}));
  CHECK(num(r, "exit_code") == 7);
  stop_cleanly(d);
}
