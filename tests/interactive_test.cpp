// Interactive use of the real shell-poold: shells (shell_open, job_interact,
// shell_close), secret redaction, execute_stream heartbeats, pipelined
// stdin writes, a large paste into a raw-mode terminal, a frontend killed
// while a shell is open, and the CLI (stdin passed on, -t, and `shell`
// driven through a real terminal).
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/daemon_harness.h"

using namespace sp::test;
using Catch::Contains;

namespace {

// job_interact calls on `id` from `cursor` (moved on) until the output read
// by them holds `needle` (or, for "", the job ended); `input` goes with
// the first. Returns all the
// output read and the last answer.
struct Interacted {
  std::string data;
  json::object last;
};
Interacted interact_until(Client& c, const std::string& id, uint64_t& cursor,
                          const std::string& needle, const std::string& input = "",
                          double timeout_s = 20) {
  Interacted got;
  const auto start = Clock::now();
  bool first = true;
  // An empty needle: until the job ends.
  auto found = [&] { return !needle.empty() && got.data.find(needle) != std::string::npos; };
  while (!found() && seconds_since(start) < timeout_s) {
    json::object p{{"job_id", id}, {"cursor", cursor}, {"idle_ms", 200}, {"wait_ms", 5000}};
    if (first && !input.empty()) p["input"] = input;
    first = false;
    got.last = result_of(c.call("job_interact", p));
    got.data += str(got.last, "data");
    cursor = uint64_t(num(got.last, "next_cursor"));
    if (str(got.last, "reason") == "exited") break;
  }
  return got;
}

json::object open_sh(Client& c, const std::string& id, json::object extra = {}) {
  json::object p{{"job_id", id}, {"shell", "/bin/sh"}, {"env", {{"PS1", "prompt> "}}}};
  for (const auto& kv : extra) p[kv.key()] = kv.value();
  return result_of(c.call("shell_open", p));
}

}  // namespace

TEST_CASE("shell_open: a shell on a terminal driven by job_interact; shell_close hangs it up",
          "[daemon][interactive]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  CHECK(str(open_sh(c, "sh1"), "job_id") == "sh1");
  uint64_t cursor = 0;
  Interacted r = interact_until(c, "sh1", cursor, "prompt> ");
  CHECK(str(r.last, "state") == "running");
  CHECK(r.last.at("exit_code").is_null());
  // A command and its output, read back by cursor; the terminal echoes it.
  r = interact_until(c, "sh1", cursor, "42 ok\r\n", "tty; echo $((6*7)) ok\n");
  CHECK_THAT(r.data, Contains("/dev/pts/"));
  // Quiet: answered after idle_ms with nothing new.
  json::object quiet =
      result_of(c.call("job_interact", {{"job_id", "sh1"}, {"cursor", cursor}, {"idle_ms", 100}}));
  CHECK(str(quiet, "reason") == "idle");
  cursor = uint64_t(num(quiet, "next_cursor"));
  // INT goes to the terminal's foreground process, not to the shell.
  interact_until(c, "sh1", cursor, "sleep 98765", "sleep 98765\n");
  REQUIRE(wait_until([] { return !pids_matching("sleep 98765").empty(); }, 10));
  result_of(c.call("job_signal", {{"job_id", "sh1"}, {"signal", "INT"}}));
  r = interact_until(c, "sh1", cursor, "status 130", "echo status $?\n");
  CHECK(str(r.last, "state") == "running");
  // The job's end: reason "exited", its exit code.
  r = interact_until(c, "sh1", cursor, "", "exit 3\n");
  CHECK(str(r.last, "reason") == "exited");
  CHECK(str(r.last, "state") == "exited");
  CHECK(num(r.last, "exit_code") == 3);
  // The whole output is still there from cursor 0.
  json::object all =
      result_of(c.call("job_output", {{"job_id", "sh1"}, {"cursor", 0}, {"max_bytes", 1 << 20}}));
  CHECK_THAT(str(all, "data"), Contains("42 ok\r\n"));

  // shell_close: SIGHUP to a shell that runs a command, SIGKILL after the grace.
  open_sh(c, "sh2");
  cursor = 0;
  interact_until(c, "sh2", cursor, "prompt> ");
  interact_until(c, "sh2", cursor, "sleep 87654", "sleep 87654\n");
  REQUIRE(wait_until([] { return !pids_matching("sleep 87654").empty(); }, 10));
  json::object closed = result_of(c.call("shell_close", {{"job_id", "sh2"}}));
  CHECK(closed.at("closed") == true);
  json::object done = result_of(c.call("job_wait", {{"job_id", "sh2"}, {"timeout", 20}}));
  CHECK(str(done, "state") == "cancelled");
  CHECK(wait_until([] { return pids_matching("sleep 87654").empty(); }, 10));
  // Closing a shell that ended is no error; nor is an unknown one silent.
  CHECK(result_of(c.call("shell_close", {{"job_id", "sh2"}})).at("closed") == false);
  CHECK(num(error_of(c.call("shell_close", {{"job_id", "nope"}})), "code") == -32001);
  stop_cleanly(d);
}

TEST_CASE("shell_open picks $SHELL, else bash, else sh; its params are checked",
          "[daemon][interactive]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  result_of(c.call("shell_open", {{"job_id", "fallback"},
                                  {"env", {{"SHELL", "/nonexistent/shell"}}},
                                  {"rows", 33},
                                  {"cols", 111}}));
  json::object st = result_of(c.call("job_status", {{"job_id", "fallback"}}));
  CHECK_THAT(str(st, "command"), Contains("bash -i"));
  uint64_t cursor = 0;
  interact_until(c, "fallback", cursor, "33 111", "stty size\n");
  result_of(c.call("shell_close", {{"job_id", "fallback"}}));
  result_of(c.call("shell_open", {{"job_id", "chosen"}, {"env", {{"SHELL", "/bin/sh"}}}}));
  CHECK(str(result_of(c.call("job_status", {{"job_id", "chosen"}})), "command") == "/bin/sh -i");
  result_of(c.call("shell_close", {{"job_id", "chosen"}}));
  for (const json::object& bad :
       {json::object{{"rows", 0}}, json::object{{"shell", 3}}, json::object{{"job_id", "123"}},
        json::object{{"secrets", json::array{"abc"}}}}) {
    INFO(json::serialize(bad));
    CHECK(num(error_of(c.call("shell_open", bad)), "code") == -32602);
  }
  CHECK(num(error_of(c.call("job_interact", {{"job_id", "chosen"}})), "code") == -32602);
  stop_cleanly(d);
}

TEST_CASE("job_interact answers when output is quiet, the job ended, max_bytes or wait_ms",
          "[daemon][interactive]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  // Output every 50 ms never goes quiet for a second: wait_ms decides.
  result_of(c.call("job_submit",
                   {{"command", "while :; do echo tick; sleep 0.05; done"}, {"job_id", "ticks"}}));
  json::object r = result_of(c.call(
      "job_interact", {{"job_id", "ticks"}, {"cursor", 0}, {"idle_ms", 1000}, {"wait_ms", 400}}));
  CHECK(str(r, "reason") == "timeout");
  CHECK_THAT(str(r, "data"), Contains("tick\n"));
  result_of(c.call("job_cancel", {{"job_id", "ticks"}}));
  // More than max_bytes waiting: answered at once with max_bytes.
  result_of(c.call("job_submit", {{"command", "head -c 100000 /dev/zero | tr '\\0' x; sleep 30"},
                                  {"job_id", "lots"}}));
  r = result_of(c.call("job_interact", {{"job_id", "lots"},
                                        {"cursor", 0},
                                        {"idle_ms", 20000},
                                        {"wait_ms", 20000},
                                        {"max_bytes", 1000}}));
  CHECK(str(r, "reason") == "max_bytes");
  CHECK(str(r, "data").size() >= 997);
  result_of(c.call("job_cancel", {{"job_id", "lots"}}));
  // Input to a job whose stdin is not open: the stdin error.
  result_of(c.call("job_submit", {{"command", "sleep 30"}, {"job_id", "shut"}}));
  CHECK(num(error_of(c.call("job_interact", {{"job_id", "shut"}, {"cursor", 0}, {"input", "x"}})),
            "code") == -32005);
  result_of(c.call("job_cancel", {{"job_id", "shut"}}));
  // A pipe job with stdin_open works too: input in, its answer out.
  result_of(c.call("job_submit",
                   {{"command", "read a; echo got-$a"}, {"job_id", "pipe"}, {"stdin_open", true}}));
  r = result_of(c.call("job_interact",
                       {{"job_id", "pipe"}, {"cursor", 0}, {"input", "one\n"}, {"idle_ms", 5000}}));
  CHECK(str(r, "data") == "got-one\n");
  CHECK(str(r, "reason") == "exited");
  CHECK(num(r, "exit_code") == 0);
  stop_cleanly(d);
}

TEST_CASE("secrets are redacted before output is stored; values are never shown",
          "[daemon][redaction]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  // Split in two halves 300 ms apart, on both streams, attached and detached.
  json::object job{{"command",
                    "printf 'a=hunt'; sleep 0.3; echo 'er22 b'; "
                    "printf 'hunt' >&2; sleep 0.3; echo 'er22' >&2; printf 'hun'; "
                    "sleep 0.3; echo ger"},
                   {"secrets", json::array{"hunter22"}}};
  json::object r = execute(c, job);
  CHECK(str(r, "stdout") == "a=*** b\nhunger\n");
  CHECK(str(r, "stderr") == "***\n");
  job["job_id"] = "det";
  result_of(c.call("job_submit", job));
  r = result_of(c.call("job_wait", {{"job_id", "det"}, {"timeout", 20}}));
  CHECK(str(r, "stdout") == "a=*** b\nhunger\n");
  json::object st = result_of(c.call("job_status", {{"job_id", "det"}}));
  CHECK(num(st, "stdout_bytes") == 15);  // byte counts are of the redacted output
  // secret_env: in the environment, redacted in the output and the command.
  r = execute(
      c, {{"command", "echo $TOKEN; echo tok-12345"}, {"secret_env", {{"TOKEN", "tok-12345"}}}});
  CHECK(str(r, "stdout") == "***\n***\n");
  result_of(c.call(
      "job_submit",
      {{"command", "echo tok-12345"}, {"job_id", "cmd"}, {"secrets", json::array{"tok-12345"}}}));
  st = result_of(c.call("job_status", {{"job_id", "cmd"}}));
  CHECK(str(st, "command") == "echo ***");
  // A session's secrets apply to all its jobs; session_list never shows them.
  json::object s = result_of(c.call("session_create", {{"secret_env", {{"PASS", "sess-pass-1"}}},
                                                       {"secrets", json::array{"other-2222"}}}));
  r = execute(c, {{"command", "echo $PASS other-2222 free"}, {"session_id", str(s, "session_id")}});
  CHECK(str(r, "stdout") == "*** *** free\n");
  result_of(c.call("job_submit", {{"command", "echo other-2222"},
                                  {"job_id", "sess-cmd"},
                                  {"session_id", str(s, "session_id")}}));
  CHECK(str(result_of(c.call("job_status", {{"job_id", "sess-cmd"}})), "command") == "echo ***");
  json::object list = result_of(c.call("session_list", nullptr));
  CHECK_THAT(json::serialize(list), !Contains("sess-pass-1") && !Contains("other-2222"));
  // Overlapping and adjacent occurrences are one ***.
  r = execute(c, {{"command", "echo xx-abcabcab-yy-secretsecret-zz"},
                  {"secrets", json::array{"abcab", "secret"}}});
  CHECK(str(r, "stdout") == "xx-***-yy-***-zz\n");
  // A PTY writes a multi-line secret with \r\n: that form is redacted too.
  r = execute(c, {{"command", "printf 'l1-secret\\nl2-secret\\n'"},
                  {"pty", true},
                  {"secrets", json::array{"l1-secret\nl2-secret"}}});
  CHECK(str(r, "stdout") == "***\r\n");
  // Too short, too many, wrong type: -32602 naming the field, never the value.
  json::object e =
      error_of(c.call("execute", {{"command", "true"}, {"secrets", json::array{"abc"}}}));
  CHECK(num(e, "code") == -32602);
  CHECK_THAT(str(e, "message"), Contains("\"secrets\"[0]") && !Contains("abc\""));
  e = error_of(c.call("execute", {{"command", "true"}, {"secret_env", {{"K", "xyz"}}}}));
  CHECK(num(e, "code") == -32602);
  json::array many;
  for (int i = 0; i < 65; ++i) many.emplace_back("secret-" + std::to_string(i));
  CHECK(num(error_of(c.call("execute", {{"command", "true"}, {"secrets", many}})), "code") ==
        -32602);
  // Nothing of it reached the log or health.
  CHECK_THAT(json::serialize(health(c)), !Contains("hunter22") && !Contains("tok-12345"));
  stop_cleanly(d);
  CHECK_THAT(d.log(), !Contains("hunter22") && !Contains("tok-12345") && !Contains("sess-pass-1"));
}

TEST_CASE("with a secret configured, output that cannot be one shows at once",
          "[daemon][redaction]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  // The prompt comes as a chunk of its own, before the job goes on; a
  // prefix of the secret ("hun") waits, and goes when it cannot become one.
  const std::string gate = d.dir() + "/gate";
  json::value id = c.next_id();
  REQUIRE(c.send_line(Client::request(
      id, "execute_stream",
      json::object{
          {"command", "printf '$ '; " + until_file(gate) + "; printf 'hun'; sleep 0.3; echo dreds"},
          {"secrets", json::array{"hunter22"}}})));
  auto first = c.read_json(20);
  REQUIRE(first);
  CHECK(first->at("result").at("type") == "stdout");
  CHECK(first->at("result").at("data") == "$ ");
  open_gate(gate);
  Streamed s = read_stream(c, id, 20);
  REQUIRE(s.ok);
  CHECK(s.out == "hundreds\n");
  stop_cleanly(d);
}

TEST_CASE("execute_stream heartbeats tell a silent job from a dead connection",
          "[daemon][interactive]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  json::value id = c.next_id();
  REQUIRE(c.send_line(
      Client::request(id, "execute_stream",
                      json::object{{"command", "sleep 0.7; echo hi"}, {"heartbeat_ms", 100}})));
  int beats = 0;
  int64_t last_elapsed = -1;
  for (;;) {
    auto m = c.read_json(20);
    REQUIRE(m);
    const json::object& r = m->at("result").as_object();
    if (r.at("type") == "heartbeat") {
      ++beats;
      CHECK(num(r, "elapsed_ms") > last_elapsed);
      last_elapsed = num(r, "elapsed_ms");
      continue;
    }
    if (r.at("type") == "exit") break;
  }
  CHECK(beats >= 3);
  // Off by default: the original chunk types only.
  id = c.next_id();
  REQUIRE(
      c.send_line(Client::request(id, "execute_stream", json::object{{"command", "sleep 0.3"}})));
  Streamed s = read_stream(c, id, 20);
  CHECK(s.ok);
  CHECK(s.chunks == 0);
  stop_cleanly(d);
}

TEST_CASE("pipelined stdin writes with offsets out of order: the gap is refused, nothing lost",
          "[daemon][stdin]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  result_of(c.call("job_submit", {{"command", "cat"}, {"job_id", "ooo"}, {"stdin_open", true}}));
  // Sent together, the second part first: it is a gap (-32602); the first
  // part goes in; the second, sent again, then goes in; a third copy of
  // the first is an overlap and skipped.
  auto write = [](int64_t id, const char* data, int offset) {
    return Client::request(id, "job_stdin_write",
                           json::object{{"job_id", "ooo"}, {"data", data}, {"offset", offset}});
  };
  REQUIRE(c.send_line(write(101, "world\n", 6) + "\n" + write(102, "hello ", 0)));
  auto a = c.read_json(20), b = c.read_json(20);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->at("id") == 101);
  CHECK(a->at("error").at("code") == -32602);
  CHECK(b->at("result").at("stdin_bytes") == 6);
  CHECK(num(result_of(
                c.call("job_stdin_write", {{"job_id", "ooo"}, {"data", "world\n"}, {"offset", 6}})),
            "stdin_bytes") == 12);
  CHECK(num(result_of(
                c.call("job_stdin_write", {{"job_id", "ooo"}, {"data", "hello "}, {"offset", 0}})),
            "stdin_bytes") == 12);
  result_of(c.call("job_stdin_close", {{"job_id", "ooo"}}));
  json::object r = result_of(c.call("job_wait", {{"job_id", "ooo"}, {"timeout", 20}}));
  CHECK(str(r, "stdout") == "hello world\n");
  stop_cleanly(d);
}

TEST_CASE("a large paste into a raw-mode terminal with echo on completes, exact", "[daemon][pty]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  std::string alphabet = "abcdefghijklmnopqrstuvwxyz";
  std::string paste;
  while (paste.size() < 600'000) paste += alphabet;
  result_of(c.call("job_submit",
                   {{"command", "stty raw; echo raw-now; head -c " + std::to_string(paste.size()) +
                                    " > paste; stty sane; wc -c < paste; tail -c 26 paste; echo"},
                    {"job_id", "paste"},
                    {"working_dir", d.dir()},
                    {"pty", true},
                    {"stdin_open", true}}));
  // In canonical mode a line of more than 4095 bytes would be cut: wait for raw.
  REQUIRE(wait_until(
      [&] {
        json::object o = result_of(c.call("job_output", {{"job_id", "paste"}, {"cursor", 0}}));
        return str(o, "data").find("raw-now") != std::string::npos;
      },
      20, 0.02));
  // The terminal echoes every byte back while it is written: the daemon
  // reads that echo while it writes, or both would block.
  for (size_t at = 0; at < paste.size(); at += 200'000)
    result_of(
        c.call("job_stdin_write", {{"job_id", "paste"}, {"data", paste.substr(at, 200'000)}}, 60));
  json::object r = result_of(c.call(
      "job_wait", {{"job_id", "paste"}, {"timeout", 60}, {"max_output_bytes", 2 << 20}}, 90));
  CHECK(str(r, "status") == "exited");
  CHECK_THAT(str(r, "stdout"), Contains(std::to_string(paste.size()) + "\r\n" + alphabet));
  stop_cleanly(d);
}

TEST_CASE("a frontend killed while a shell is open: the shell goes on, readable from cursor 0",
          "[daemon][interactive][crash]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  std::string before;
  {
    Client c(d.socket());
    open_sh(c, "kept");
    uint64_t cursor = 0;
    before = interact_until(c, "kept", cursor, "first-11\r\n", "echo first-$((5+6))\n").data;
  }
  Client c = kill_frontend(d);
  REQUIRE(c.connected());
  json::object all;
  REQUIRE(wait_until(
      [&] {
        auto r =
            c.try_call("job_output", {{"job_id", "kept"}, {"cursor", 0}, {"max_bytes", 1 << 20}});
        if (!r || !r->contains("result")) return false;
        all = r->at("result").as_object();
        return true;
      },
      20));
  CHECK(str(all, "state") == "running");
  CHECK(str(all, "data").substr(0, before.size()) == before);
  uint64_t cursor = uint64_t(num(all, "next_cursor"));
  interact_until(c, "kept", cursor, "second-22\r\n", "echo second-$((11+11))\n");
  result_of(c.call("shell_close", {{"job_id", "kept"}}));
  result_of(c.call("job_wait", {{"job_id", "kept"}, {"timeout", 20}}));
  stop_cleanly(d);
}

TEST_CASE("the CLI passes its stdin on when it is not a terminal; -t runs on a PTY",
          "[daemon][cli]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  const std::vector<std::string> s{"--socket", d.socket()};
  auto cli = [&](std::vector<std::string> args, const std::optional<std::string>& in) {
    args.insert(args.begin(), s.begin(), s.end());
    return run_cli(args, d.dir(), 60, in);
  };
  std::string big;
  for (int i = 0; big.size() < 300'000; ++i) big += std::to_string(i) + "\n";
  CliRun r = cli({"exec", "--", "cat"}, big);
  CHECK(r.exit_code == 0);
  CHECK(r.out == big);
  r = cli({"run", "read x; echo got $x >&2; exit $x"}, std::string("7\n"));
  CHECK(r.exit_code == 7);
  CHECK(r.err == "got 7\n");
  r = cli({"run", "-n", "cat; echo end"}, std::string("not passed\n"));
  CHECK(r.out == "end\n");
  r = cli({"run", "-t", "read x; [ -t 0 ] && tty && echo \"on a terminal: $x\""},
          std::string("typed\n"));
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("/dev/pts/") && Contains("on a terminal: typed\r\n"));
  // Nothing is left behind: the CLI forgets the jobs it attached to.
  Client c(d.socket());
  CHECK(result_of(c.call("job_list", nullptr)).at("jobs").as_array().empty());
  stop_cleanly(d);
}

TEST_CASE("the CLI's shell through a real terminal: raw keys, Ctrl-C, resize, exit code",
          "[daemon][cli]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  winsize ws{30, 100, 0, 0};
  int master = -1;
  const std::vector<std::string> args{SHELL_POOL_CLI, "--socket", d.socket(), "shell",
                                      "--shell",      "/bin/sh",  "--env",    "PS1=cli> "};
  pid_t pid = ::forkpty(&master, nullptr, nullptr, &ws);
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  sp::UniqueFd term(master);
  std::string screen;
  // Reads the terminal until `needle` shows up after `from`.
  auto until = [&](const std::string& needle, size_t from = 0) {
    return wait_until(
        [&] {
          char buf[4096];
          pollfd p{term.get(), POLLIN, 0};
          if (::poll(&p, 1, 10) > 0) {
            ssize_t n = ::read(term.get(), buf, sizeof buf);
            if (n > 0) screen.append(buf, size_t(n));
          }
          return screen.find(needle, from) != std::string::npos;
        },
        20, 0);
  };
  auto type = [&](const std::string& keys) {
    REQUIRE(::write(term.get(), keys.data(), keys.size()) == ssize_t(keys.size()));
  };
  // Shows the terminal when a check fails.
#define CHECK_SCREEN(ok)          \
  do {                            \
    const bool shown = (ok);      \
    INFO("terminal: " << screen); \
    REQUIRE(shown);               \
  } while (false)
  CHECK_SCREEN(until("cli> "));
  type("stty size\r");
  CHECK_SCREEN(until("30 100"));
  size_t mark = screen.size();
  type("sleep 76543\r");
  REQUIRE(wait_until([] { return !pids_matching("sleep 76543").empty(); }, 20));
  type("\x03");  // raw mode: a byte to the remote terminal, whose INT stops sleep
  CHECK_SCREEN(until("cli> ", mark));
  CHECK(wait_until([] { return pids_matching("sleep 76543").empty(); }, 20));
  winsize bigger{40, 120, 0, 0};
  ::ioctl(term.get(), TIOCSWINSZ, &bigger);  // the CLI gets SIGWINCH
  mark = screen.size();
  // Once SIGWINCH was passed on, stty shows the new size.
  CHECK_SCREEN(wait_until(
      [&] {
        mark = screen.size();
        type("stty size\r");
        return until("cli> ", mark) && screen.find("40 120", mark) != std::string::npos;
      },
      20, 0.2));
  type("exit 7\r");
  int status = 0;
  REQUIRE(wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 20));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 7);
  stop_cleanly(d);
}

TEST_CASE("a secret as large as the output ring: redacted output waits for room, never stalls",
          "[daemon][redaction]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--output-buffer", "4096"}});
  Client c(d.socket());
  // A 4000-byte secret of many lines, printed 20 times between ordinary
  // output: what the redactor holds is near the ring's size.
  std::string secret;
  for (int i = 0; secret.size() < 4000; ++i) secret += "key-line-" + std::to_string(i) + "\n";
  secret.resize(4000);
  const std::string file = d.dir() + "/secret";
  {
    std::FILE* f = std::fopen(file.c_str(), "w");
    REQUIRE(f);
    std::fwrite(secret.data(), 1, secret.size(), f);
    std::fclose(f);
  }
  const std::string cmd = "for i in $(seq 20); do echo before-$i; cat " + file +
                          "; echo; head -c 3000 /dev/zero | tr '\\0' y; echo; done";
  std::string expected;
  for (int i = 1; i <= 20; ++i)
    expected += "before-" + std::to_string(i) + "\n***\n" + std::string(3000, 'y') + "\n";
  json::object r = execute(c, {{"command", cmd}, {"secrets", json::array{secret}}});
  CHECK(num(r, "exit_code") == 0);
  CHECK(str(r, "stdout") == expected);
  // On a terminal, \r\n: its own form of the secret.
  r = execute(c, {{"command", cmd}, {"pty", true}, {"secrets", json::array{secret}}});
  CHECK(num(r, "exit_code") == 0);
  std::string crlf;
  for (char ch : expected) crlf += ch == '\n' ? std::string("\r\n") : std::string(1, ch);
  CHECK(str(r, "stdout") == crlf);
  stop_cleanly(d);
}

TEST_CASE("the CLI passes a pipe's stdin whole, also when the writer closes it early",
          "[daemon][cli]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  // The pipe's writer is done (HUP) while writes are still in flight.
  const std::string out = d.dir() + "/piped.out";
  const std::string line = "head -c 1000000 /dev/zero | tr '\\0' x | timeout 60 " +
                           std::string(SHELL_POOL_CLI) + " --socket " + d.socket() +
                           " run 'wc -c' > " + out + " 2>&1";
  CHECK(std::system(line.c_str()) == 0);
  CHECK(read_file(out) == "1000000\n");
  stop_cleanly(d);
}

TEST_CASE("job_signal and job_cancel reach an execute_stream job by the id it was told",
          "[daemon][interactive]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  // On a terminal INT goes to the foreground group: sleep dies, sh (trapping it) goes on.
  json::value id = c.next_id();
  REQUIRE(c.send_line(Client::request(
      id, "execute_stream",
      json::object{{"command", "trap 'echo trapped' INT; sleep 54321; echo after-$?"},
                   {"pty", true},
                   {"stdin_open", true}})));
  auto started = c.read_json(20);
  REQUIRE(started);
  const std::string job_id(started->at("result").at("job_id").as_string());
  // The sleep itself (not the shell, whose command line holds its text
  // too): INT before the shell forked it would leave it sleeping.
  auto runs = [](const std::string& line) {
    for (pid_t pid : pids_matching(line))
      if (cmdline_of(pid) == line) return true;
    return false;
  };
  REQUIRE(wait_until([&] { return runs("sleep 54321"); }, 20));
  Client other(d.socket());
  json::object r = result_of(other.call("job_signal", {{"job_id", job_id}, {"signal", "INT"}}));
  CHECK(str(r, "signal") == "SIGINT");
  Streamed s = read_stream(c, id, 20);
  REQUIRE(s.ok);
  CHECK_THAT(s.out, Contains("after-130"));
  CHECK(num(error_of(other.call("job_signal", {{"job_id", job_id}, {"signal", "INT"}})), "code") ==
        -32001);  // it ended: no such job any more
  // job_cancel stops one.
  id = c.next_id();
  REQUIRE(c.send_line(Client::request(
      id, "execute_stream", json::object{{"command", "sleep 65432"}, {"stdin_open", true}})));
  started = c.read_json(20);
  REQUIRE(started);
  const std::string second(started->at("result").at("job_id").as_string());
  REQUIRE(wait_until([&] { return runs("sleep 65432"); }, 20));
  r = result_of(other.call("job_cancel", {{"job_id", second}}));
  CHECK(r.at("cancelled") == true);
  s = read_stream(c, id, 20);
  REQUIRE(s.ok);
  CHECK(str(s.exit, "status") == "cancelled");
  stop_cleanly(d);
}
