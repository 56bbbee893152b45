// Integration tests: the real shell-poold, driven over its socket and through
// the shell-pool CLI. Each test starts its own daemon on a private socket and
// checks that it leaves nothing behind. Crash and shutdown behaviour is in
// daemon_crash_test.cpp.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include "tests/daemon_harness.h"

using namespace sp::test;
using Catch::Contains;

// ---- execute ----

TEST_CASE("execute returns stdout, stderr, exit code and the full result record",
          "[daemon][execute]") {
  START_DAEMON(d);
  Client c(d.socket());
  REQUIRE(c.connected());
  json::object r = execute(c, sh("echo out; echo err >&2"));
  CHECK(str(r, "stdout") == "out\n");
  CHECK(str(r, "stderr") == "err\n");
  CHECK(num(r, "exit_code") == 0);
  CHECK(num(r, "duration_ms") >= 0);
  CHECK(r.at("timed_out") == false);
  CHECK(r.at("signal").is_null());
  CHECK(r.at("truncated") == false);
  CHECK(std::regex_match(str(r, "job_id"), std::regex("[0-9]+")));
  CHECK(str(r, "status") == "exited");
  CHECK(r.at("error").is_null());
  // Every job gets its own id.
  CHECK(str(execute(c, sh("true")), "job_id") != str(r, "job_id"));
  stop_cleanly(d);
}

TEST_CASE("execute with args runs the program directly, without shell expansion",
          "[daemon][execute]") {
  START_DAEMON(d);
  Client c(d.socket());
  json::object r = execute(c, {{"command", "printf"}, {"args", {"%s", "a b"}}, {"shell", false}});
  CHECK(str(r, "stdout") == "a b");
  r = execute(c,
              {{"command", "printf"}, {"args", {"%s|", "$HOME", "*", "`id`"}}, {"shell", false}});
  CHECK(str(r, "stdout") == "$HOME|*|`id`|");
  // Non-empty args without "shell" mean no shell too.
  r = execute(c, {{"command", "printf"}, {"args", {"%s", "$HOME;x"}}});
  CHECK(str(r, "stdout") == "$HOME;x");
  stop_cleanly(d);
}

TEST_CASE("execute without args runs the command under /bin/sh -c", "[daemon][execute]") {
  START_DAEMON(d);
  Client c(d.socket());
  CHECK(str(execute(c, sh("echo a | tr a b")), "stdout") == "b\n");
  CHECK(str(execute(c, sh("x=5; echo $((x * 2))")), "stdout") == "10\n");
  // shell:true with args: sh -c command sh args..., so $1 is the first arg.
  json::object r = execute(c, {{"command", "printf '%s-%s-%s' \"$0\" \"$1\" \"$2\""},
                               {"args", {"first", "second arg"}},
                               {"shell", true}});
  CHECK(str(r, "stdout") == "sh-first-second arg");
  stop_cleanly(d);
}

TEST_CASE("execute uses working_dir and the request env, never the daemon's own environment",
          "[daemon][execute][env]") {
  START_DAEMON(d, DaemonOptions{.env = {"SP_SECRET=1"}});
  Client c(d.socket());
  std::string sub = d.dir() + "/work dir";
  std::filesystem::create_directory(sub);
  json::object p = sh("pwd");
  p["working_dir"] = sub;
  CHECK(str(execute(c, p), "stdout") == std::filesystem::canonical(sub).string() + "\n");

  p = sh("printf '%s|%s' \"$FOO\" \"$EMPTY\"");
  p["env"] = {{"FOO", "bar baz"}, {"EMPTY", ""}};
  CHECK(str(execute(c, p), "stdout") == "bar baz|");

  CHECK(str(execute(c, sh("echo ${SP_SECRET:-none}")), "stdout") == "none\n");
  json::object r = execute(c, sh("printf %s \"$PATH\""));
  CHECK_FALSE(str(r, "stdout").empty());
  // PATH lookups work for programs given without a slash.
  CHECK(str(execute(c, {{"command", "env"}, {"args", {"printf", "ok"}}}), "stdout") == "ok");
  stop_cleanly(d);
}

TEST_CASE("execute reports non-zero exit codes and deaths by signal", "[daemon][execute]") {
  START_DAEMON(d);
  Client c(d.socket());
  json::object r = execute(c, sh("exit 7"));
  CHECK(num(r, "exit_code") == 7);
  CHECK(str(r, "status") == "exited");
  CHECK(r.at("signal").is_null());

  r = execute(c, sh("kill -9 $$"));
  CHECK(str(r, "signal") == "SIGKILL");
  CHECK(num(r, "exit_code") == -1);
  CHECK(str(r, "status") == "exited");
  CHECK(r.at("timed_out") == false);
  stop_cleanly(d);
}

TEST_CASE("a timeout stops the command with SIGTERM and reports timed_out",
          "[daemon][execute][timeout]") {
  START_DAEMON(d);
  Client c(d.socket());
  json::object p = sh("sleep 10");
  p["timeout"] = 0.3;
  auto start = Clock::now();
  json::object r = execute(c, p);
  CHECK(seconds_since(start) < 5);
  CHECK(r.at("timed_out") == true);
  CHECK(str(r, "status") == "timed_out");
  CHECK(str(r, "signal") == "SIGTERM");
  CHECK(num(r, "duration_ms") >= 250);
  stop_cleanly(d);
}

TEST_CASE("a timeout kills the command's background processes too", "[daemon][execute][timeout]") {
  START_DAEMON(d);
  Client c(d.socket());
  json::object p = sh("sleep 100.123 & sleep 100.123 & sleep 100.123");
  p["timeout"] = 0.5;
  json::object r = execute(c, p);
  CHECK(str(r, "status") == "timed_out");
  CHECK(wait_until([] { return pids_matching("sleep 100.123").empty(); }, 5));
  stop_cleanly(d);
}

TEST_CASE("a command that ignores SIGTERM is killed after the grace period",
          "[daemon][execute][timeout]") {
  START_DAEMON(d, {"--kill-grace-ms", "300"});
  Client c(d.socket());
  json::object p = sh("trap '' TERM; sleep 30.111; echo survived");
  p["timeout"] = 0.3;
  auto start = Clock::now();
  json::object r = execute(c, p);
  CHECK(seconds_since(start) < 10);
  CHECK(str(r, "status") == "timed_out");
  CHECK(str(r, "signal") == "SIGKILL");
  CHECK(str(r, "stdout") == "");
  CHECK(wait_until([] { return pids_matching("sleep 30.111").empty(); }, 5));
  stop_cleanly(d);
}

TEST_CASE("a command that cannot start ends as failed with the reason", "[daemon][execute]") {
  START_DAEMON(d);
  Client c(d.socket());
  json::object r = execute(c, {{"command", "/nonexistent"}, {"shell", false}});
  CHECK(str(r, "status") == "failed");
  CHECK(num(r, "exit_code") == -1);
  CHECK_THAT(str(r, "error"), Contains("/nonexistent"));

  r = execute(c, {{"command", "sp-no-such-program"}, {"args", {"x"}}});
  CHECK(str(r, "status") == "failed");
  CHECK_THAT(str(r, "error"), Contains("sp-no-such-program"));

  json::object p = sh("pwd");
  p["working_dir"] = "/nonexistent-dir-4711";
  r = execute(c, p);
  CHECK(str(r, "status") == "failed");
  CHECK(num(r, "exit_code") == -1);
  CHECK_THAT(str(r, "error"), Contains("/nonexistent-dir-4711"));
  // The worker is fine afterwards.
  CHECK(str(execute(c, sh("echo ok")), "stdout") == "ok\n");
  stop_cleanly(d);
}

// ---- output ----

TEST_CASE("output that is not UTF-8 is replaced in JSON and exact in base64", "[daemon][output]") {
  START_DAEMON(d);
  Client c(d.socket());
  REQUIRE(c.send_line(Client::request(1, "execute", sh("printf '\\377\\376ok'"))));
  auto line = c.read_line();
  REQUIRE(line);
  CHECK(line->find('\xff') == std::string::npos);
  boost::system::error_code ec;
  json::value v = json::parse(*line, ec);  // Boost.JSON rejects invalid UTF-8
  REQUIRE_FALSE(ec);
  CHECK(str(result_of(v.as_object()), "stdout") == "\xEF\xBF\xBD\xEF\xBF\xBDok");

  json::object p = sh("printf '\\377\\376ok\\000\\n\\001'");
  p["output_encoding"] = "base64";
  json::object r = execute(c, p);
  CHECK(base64_decode(str(r, "stdout")) == std::string("\xff\xfeok\0\n\x01", 7));
  CHECK(str(r, "encoding") == "base64");
  stop_cleanly(d);
}

TEST_CASE("output beyond max-output is truncated and the rest is drained", "[daemon][output]") {
  START_DAEMON(d, {"--max-output", "1000000"});
  Client c(d.socket());
  auto start = Clock::now();
  json::object r = execute(c, sh("head -c 50000000 /dev/zero; echo done >&2"), 120);
  INFO("took " << seconds_since(start) << " s");
  CHECK(str(r, "stdout").size() == 1000000);
  CHECK(str(r, "stdout") == std::string(1000000, '\0'));
  CHECK(str(r, "stderr") == "done\n");
  CHECK(r.at("truncated") == true);
  CHECK(str(r, "status") == "exited");
  CHECK(num(r, "exit_code") == 0);
  stop_cleanly(d);
}

TEST_CASE("output written right before exit is never lost and stdout and stderr stay apart",
          "[daemon][output]") {
  START_DAEMON(d);
  Client c(d.socket());
  for (int round = 0; round < 3; ++round) {
    json::object r = execute(c, sh("for i in $(seq 1 2000); do echo line$i; done"));
    std::string out = str(r, "stdout");
    CHECK(std::count(out.begin(), out.end(), '\n') == 2000);
    CHECK(out.rfind("line2000\n") == out.size() - 9);
    CHECK(r.at("truncated") == false);
  }
  json::object r = execute(c, sh("echo o1; echo e1 >&2; echo o2; echo e2 >&2; printf tail"));
  CHECK(str(r, "stdout") == "o1\no2\ntail");
  CHECK(str(r, "stderr") == "e1\ne2\n");
  stop_cleanly(d);
}

// ---- execute_stream ----

TEST_CASE("execute_stream sends chunks with the request id, then an exit record",
          "[daemon][stream]") {
  START_DAEMON(d);
  Client c(d.socket());
  REQUIRE(c.send_line(Client::request("s1", "execute_stream",
                                      sh("echo a; echo b >&2; sleep 0.1; echo c; exit 4"))));
  Streamed s = read_stream(c, "s1", 30);
  INFO(s.problem);
  REQUIRE(s.ok);
  CHECK(s.out == "a\nc\n");
  CHECK(s.err == "b\n");
  CHECK(s.chunks >= 2);
  CHECK(num(s.exit, "exit_code") == 4);
  CHECK(s.exit.at("timed_out") == false);
  CHECK(s.exit.at("signal").is_null());
  CHECK(s.exit.contains("duration_ms"));
  // The connection serves the next request normally.
  CHECK(str(execute(c, sh("echo next")), "stdout") == "next\n");
  stop_cleanly(d);
}

TEST_CASE("execute_stream delivers 10 MB of output without loss", "[daemon][stream]") {
  START_DAEMON(d);
  Client c(d.socket());
  std::string expected;
  for (int i = 1; i <= 1500000; ++i) expected += std::to_string(i) + '\n';
  REQUIRE(c.send_line(Client::request(9, "execute_stream", sh("seq 1 1500000"))));
  Streamed s = read_stream(c, 9, 120);
  INFO(s.problem);
  REQUIRE(s.ok);
  CHECK(s.out.size() == expected.size());
  CHECK(s.out == expected);
  CHECK(num(s.exit, "exit_code") == 0);
  stop_cleanly(d);
}

TEST_CASE("a client that stops reading its stream does not stall other clients",
          "[daemon][stream]") {
  START_DAEMON(d);
  Client a(d.socket());
  REQUIRE(a.send_line(Client::request(1, "execute_stream", sh("yes sp-yes-marker-517"))));
  pid_t yes = 0;
  REQUIRE(wait_until(
      [&] {
        for (pid_t p : pids_matching("sp-yes-marker-517"))
          if (cmdline_of(p).rfind("yes ", 0) == 0) yes = p;
        return yes != 0;
      },
      10));
  // a's buffers fill up: all the way back to `yes`, held on its pipe.
  REQUIRE(wait_until([&] { return held_on_pipe(yes); }, 20));

  Client b(d.socket());
  for (int i = 0; i < 3; ++i) {
    auto start = Clock::now();
    auto r = b.try_call("execute", sh("echo hi"), 10);
    REQUIRE(r);
    CHECK(str(result_of(*r), "stdout") == "hi\n");
    CHECK(seconds_since(start) < 3);
  }
  // The paused `yes` is still there, blocked, until a goes away.
  CHECK_FALSE(pids_matching("sp-yes-marker-517").empty());
  a.close();
  CHECK(wait_until([] { return pids_matching("sp-yes-marker-517").empty(); }, 10));
  stop_cleanly(d);
}

TEST_CASE("closing the connection cancels its running jobs", "[daemon][cancel]") {
  START_DAEMON(d);
  Client c(d.socket());
  REQUIRE(c.send_line(Client::request(1, "execute", sh("sleep 100.456"))));
  REQUIRE(c.send_line(Client::request(2, "execute_stream", sh("sleep 100.456"))));
  REQUIRE(wait_until([] { return pids_matching("sleep 100.456").size() >= 2; }, 10));
  c.close();
  CHECK(wait_until([] { return pids_matching("sleep 100.456").empty(); }, 5));
  // Half-closing (shutdown of the write side) does not cancel: the answer comes.
  Client h(d.socket());
  REQUIRE(h.send_line(Client::request(3, "execute", sh("sleep 0.3; echo half"))));
  h.shutdown_write();
  auto v = h.read_json(10);
  REQUIRE(v);
  CHECK(str(result_of(v->as_object()), "stdout") == "half\n");
  stop_cleanly(d);
}

// ---- JSON-RPC ----

TEST_CASE("malformed requests get the JSON-RPC spec's error codes", "[daemon][jsonrpc]") {
  START_DAEMON(d);
  Client c(d.socket());
  auto error_line = [&](std::string_view line) {
    REQUIRE(c.send_line(line));
    auto v = c.read_json(10);
    INFO("sent " << line << ", got " << c.last_line());
    REQUIRE(v);
    REQUIRE(v->is_object());
    return v->as_object();
  };
  json::object r = error_line("{not json");
  CHECK(num(error_of(r), "code") == -32700);
  CHECK(r.at("id").is_null());

  r = error_line(R"({"jsonrpc":"2.0","id":4,"method":5})");
  CHECK(num(error_of(r), "code") == -32600);
  r = error_line(R"({"id":5,"method":"execute","params":{"command":"echo"}})");
  CHECK(num(error_of(r), "code") == -32600);
  r = error_line(R"("just a string")");
  CHECK(num(error_of(r), "code") == -32600);
  CHECK(r.at("id").is_null());

  r = c.call("no_such_method", json::object{});
  CHECK(num(error_of(r), "code") == -32601);
  CHECK(r.at("id") == c.next_id() - 1);

  json::object p = sh("echo");
  p["timeout"] = "abc";
  json::object e = error_of(c.call("execute", p));
  CHECK(num(e, "code") == -32602);
  CHECK_THAT(str(e, "message"), Contains("timeout"));
  e = error_of(c.call("execute", json::object{{"args", {"x"}}}));
  CHECK(num(e, "code") == -32602);
  CHECK_THAT(str(e, "message"), Contains("command"));
  e = error_of(c.call("execute", {{"command", "echo"}, {"env", {{"A", 1}}}}));
  CHECK(num(e, "code") == -32602);
  CHECK_THAT(str(e, "message"), Contains("env"));
  // The connection survives all of that.
  CHECK(str(execute(c, sh("echo alive")), "stdout") == "alive\n");
  stop_cleanly(d);
}

TEST_CASE("a batch gets one array answer and notifications get none", "[daemon][jsonrpc]") {
  START_DAEMON(d);
  Client c(d.socket());
  REQUIRE(c.send_line(
      R"([{"jsonrpc":"2.0","id":1,"method":"execute","params":{"command":"echo one"}},)"
      R"(5,)"
      R"({"jsonrpc":"2.0","method":"execute","params":{"command":"echo note"}},)"
      R"({"jsonrpc":"2.0","id":"x","method":"nope"},)"
      R"({"jsonrpc":"2.0","id":2,"method":"execute_stream","params":{"command":"echo s"}}])"));
  auto v = c.read_json(30);
  INFO("answer: " << c.last_line());
  REQUIRE(v);
  REQUIRE(v->is_array());
  std::map<std::string, json::object> by_id;
  for (const json::value& item : v->as_array())
    by_id[json::serialize(item.as_object().at("id"))] = item.as_object();
  REQUIRE(by_id.size() == 4);
  CHECK(str(result_of(by_id["1"]), "stdout") == "one\n");
  CHECK(num(error_of(by_id["null"]), "code") == -32600);
  CHECK(num(error_of(by_id["\"x\""]), "code") == -32601);
  CHECK(num(error_of(by_id["2"]), "code") == -32600);  // execute_stream cannot be batched
  CHECK_FALSE(c.read_line(1));                         // the notification is not answered
  CHECK_FALSE(c.eof());

  REQUIRE(c.send_line("[]"));
  v = c.read_json(10);
  REQUIRE(v);
  REQUIRE(v->is_object());
  CHECK(num(error_of(v->as_object()), "code") == -32600);
  CHECK(v->as_object().at("id").is_null());

  // A batch of notifications only: no answer at all.
  REQUIRE(c.send_line(R"([{"jsonrpc":"2.0","method":"session_list"}])"));
  // A notification, then a request: only the request is answered.
  REQUIRE(c.send_raw(
      R"({"jsonrpc":"2.0","method":"execute","params":{"command":"echo quiet"}})"
      "\n"
      R"({"jsonrpc":"2.0","id":77,"method":"execute","params":{"command":"sleep 0.2; echo loud"}})"
      "\n"));
  v = c.read_json(30);
  REQUIRE(v);
  CHECK(v->as_object().at("id") == 77);
  CHECK(str(result_of(v->as_object()), "stdout") == "loud\n");
  CHECK_FALSE(c.read_line(1));
  stop_cleanly(d);
}

TEST_CASE("request ids are echoed exactly", "[daemon][jsonrpc]") {
  START_DAEMON(d);
  Client c(d.socket());
  for (std::string id : {R"("abc")", R"("")", "9007199254740993", "-7", "0", "1.5",
                         "18446744073709551615", R"("q\"\\")"}) {
    REQUIRE(c.send_line(R"({"jsonrpc":"2.0","id":)" + id + R"(,"method":"session_list"})"));
    auto line = c.read_line(10);
    REQUIRE(line);
    INFO("id " << id << ", answer " << *line);
    CHECK(line->rfind(R"({"jsonrpc":"2.0","id":)" + id + ",", 0) == 0);
  }
  // Escapes may be written differently, but the id's value is the same.
  REQUIRE(c.send_line(R"({"jsonrpc":"2.0","id":"\u00e9\u0041","method":"session_list"})"));
  auto echoed = c.read_json(10);
  REQUIRE(echoed);
  CHECK(echoed->as_object().at("id") ==
        "\xC3\xA9"
        "A");
  // Also on job answers, which arrive later.
  REQUIRE(c.send_line(
      R"({"jsonrpc":"2.0","id":9007199254740993,"method":"execute","params":{"command":"echo"}})"));
  auto v = c.read_json(30);
  REQUIRE(v);
  CHECK(v->as_object().at("id").as_int64() == 9007199254740993);
  stop_cleanly(d);
}

TEST_CASE("pipelined requests on one connection are all answered", "[daemon][jsonrpc]") {
  START_DAEMON(d);
  Client c(d.socket());
  std::string lines;
  for (int i = 0; i < 50; ++i)
    lines +=
        Client::request(1000 + i, "execute",
                        sh("sleep 0." + std::to_string(i % 5) + "; echo " + std::to_string(i))) +
        "\n";
  REQUIRE(c.send_raw(lines));
  std::set<int64_t> seen;
  for (int i = 0; i < 50; ++i) {
    auto v = c.read_json(30);
    INFO("answer " << i << ": " << c.last_line());
    REQUIRE(v);
    int64_t id = v->as_object().at("id").as_int64();
    CHECK(seen.insert(id).second);
    CHECK(str(result_of(v->as_object()), "stdout") == std::to_string(id - 1000) + "\n");
  }
  CHECK(seen.size() == 50);
  CHECK(*seen.begin() == 1000);
  CHECK(*seen.rbegin() == 1049);
  stop_cleanly(d);
}

// How many output rings jobs hold, from the metrics (-1: not in them).
static int output_rings_held(Client& m) {
  std::string text = str(result_of(m.call("metrics", nullptr)), "text");
  size_t at = text.find("shell_pool_output_rings{state=\"held\"} ");
  return at == std::string::npos ? -1 : std::atoi(text.c_str() + text.find(' ', at) + 1);
}

TEST_CASE("jobs with output wait for an output ring, silent ones do not, and no byte is lost",
          "[daemon][output]") {
  START_DAEMON(d, {"--workers", "2", "--output-rings", "2", "--output-buffer", "4096"});
  const std::string go = d.dir() + "/go";
  Client c(d.socket()), m(d.socket());
  auto rings_held = [&] { return output_rings_held(m); };
  CHECK(rings_held() == 0);
  // Two jobs print, so each takes a ring, and hold both until `go` exists.
  auto holder = [&](const char* word) {
    return sh(std::string("echo ") + word + "; until [ -e " + go + " ]; do sleep 0.02; done");
  };
  REQUIRE(c.send_raw(Client::request(1, "execute", holder("one")) + "\n" +
                     Client::request(2, "execute", holder("two")) + "\n"));
  REQUIRE(wait_until([&] { return rings_held() == 2; }, 20));
  // A third job with output waits for a ring; a silent one runs and answers.
  REQUIRE(c.send_raw(Client::request(3, "execute", sh("echo three")) + "\n" +
                     Client::request(4, "execute", sh("exit 4")) + "\n"));
  auto v = c.read_json(20);
  INFO("answer: " << c.last_line());
  REQUIRE(v);
  CHECK(v->as_object().at("id").as_int64() == 4);
  CHECK(num(result_of(v->as_object()), "exit_code") == 4);
  CHECK_FALSE(c.read_json(0.3));  // three is still waiting
  { std::ofstream(go).put('x'); }
  std::map<int64_t, std::string> out;
  for (int i = 0; i < 3; ++i) {
    v = c.read_json(20);
    REQUIRE(v);
    out[v->as_object().at("id").as_int64()] = str(result_of(v->as_object()), "stdout");
  }
  CHECK(out == std::map<int64_t, std::string>{{1, "one\n"}, {2, "two\n"}, {3, "three\n"}});
  CHECK(wait_until([&] { return rings_held() == 0; }, 10));  // freed with their slots

  // Six jobs at once through two rings, each 25 rings' worth: every byte arrives.
  std::string lines;
  for (int i = 0; i < 6; ++i)
    lines +=
        Client::request(10 + i, "execute",
                        sh("head -c 100000 /dev/zero | tr '\\0' " + std::string(1, char('a' + i)) +
                           "; echo e" + std::to_string(i) + " >&2")) +
        "\n";
  REQUIRE(c.send_raw(lines));
  for (int i = 0; i < 6; ++i) {
    v = c.read_json(60);
    REQUIRE(v);
    const int64_t k = v->as_object().at("id").as_int64() - 10;
    json::object r = result_of(v->as_object());
    CHECK(str(r, "stdout") == std::string(100000, char('a' + k)));
    CHECK(str(r, "stderr") == "e" + std::to_string(k) + "\n");
  }
  stop_cleanly(d);
}

TEST_CASE("output read while no ring is free shows once one frees, though the job says no more",
          "[daemon][output]") {
  START_DAEMON(d, {"--workers", "1", "--output-rings", "1"});
  const std::string go1 = d.dir() + "/go1", go2 = d.dir() + "/go2", go3 = d.dir() + "/go3";
  const std::string said = d.dir() + "/said";
  auto until = [](const std::string& f) { return "until [ -e " + f + " ]; do sleep 0.02; done"; };
  Client c(d.socket()), st(d.socket()), m(d.socket());
  // Job 1 prints, so it takes the only ring, and keeps it until go1 exists.
  REQUIRE(c.send_line(Client::request(1, "execute", sh("echo one; " + until(go1)))));
  REQUIRE(wait_until([&] { return output_rings_held(m) == 1; }, 20));
  // The streamed job prints once, then goes quiet until go2 exists: its line
  // is read while no ring is free and must not wait for more output.
  REQUIRE(st.send_line(Client::request(
      "q", "execute_stream", sh("echo ready; touch " + said + "; " + until(go2) + "; echo end"))));
  REQUIRE(wait_until([&] { return std::filesystem::exists(said); }, 20));
  CHECK_FALSE(st.read_json(0.3));  // no ring: nothing is shown yet
  { std::ofstream(go1).put('x'); }
  auto one = c.read_json(20);
  REQUIRE(one);
  CHECK(str(result_of(one->as_object()), "stdout") == "one\n");
  auto chunk = st.read_json(20);  // job 1's slot is freed, so the ring is
  INFO("line: " << st.last_line());
  REQUIRE(chunk);
  json::object r = result_of(chunk->as_object());
  CHECK(str(r, "type") == "stdout");
  CHECK(str(r, "data") == "ready\n");
  CHECK_FALSE(std::filesystem::exists(go2));
  { std::ofstream(go2).put('x'); }
  Streamed rest = read_stream(st, "q", 20);
  INFO(rest.problem);
  REQUIRE(rest.ok);
  CHECK(rest.out == "end\n");
  CHECK(num(rest.exit, "exit_code") == 0);

  // Job 5 takes the ring until go3 exists.
  REQUIRE(c.send_line(Client::request(5, "execute", sh("echo five; " + until(go3)))));
  REQUIRE(wait_until([&] { return output_rings_held(m) == 1; }, 20));
  // Job 3 has a secret (its output goes through the redactor) and ends at
  // once; job 4's line is held past the EOF grace while a process that left
  // its group keeps the pipe open. Both wait for the ring, and lose nothing.
  json::object secret = sh("echo hello hunter22");
  secret["secrets"] = json::array{"hunter22"};
  const std::string escaped = "sleep 31.4159", left = d.dir() + "/left";
  struct KillEscaped {
    const std::string& what;
    ~KillEscaped() {
      for (pid_t pid : pids_matching(what)) ::kill(pid, SIGKILL);
    }
  } kill_escaped{escaped};
  REQUIRE(c.send_raw(Client::request(3, "execute", secret) + "\n" +
                     Client::request(4, "execute",
                                     sh("setsid sh -c 'touch " + left + "; exec " + escaped +
                                        "' & " + until(left) + "; echo hi")) +
                     "\n"));
  REQUIRE(wait_until([&] { return !pids_matching(escaped).empty(); }, 20));
  CHECK_FALSE(c.read_json(1.5));  // no ring, and past job 4's EOF grace
  { std::ofstream(go3).put('x'); }
  std::map<int64_t, std::string> out;
  for (int i = 0; i < 3; ++i) {
    auto v = c.read_json(10);  // job 4 within a new EOF grace, not after the sleep
    INFO("answer " << i << ": " << c.last_line());
    REQUIRE(v);
    out[v->as_object().at("id").as_int64()] = str(result_of(v->as_object()), "stdout");
  }
  CHECK(out == std::map<int64_t, std::string>{{5, "five\n"}, {3, "hello ***\n"}, {4, "hi\n"}});
  stop_cleanly(d);
}

TEST_CASE("an over-long request line is rejected and the connection stays usable",
          "[daemon][jsonrpc]") {
  START_DAEMON(d, {"--max-line", "4096"});
  Client c(d.socket());
  REQUIRE(c.send_line(std::string(10000, 'x')));
  auto v = c.read_json(10);
  INFO("answer: " << c.last_line());
  REQUIRE(v);
  CHECK(num(error_of(v->as_object()), "code") == -32002);
  // A line just under the limit still works, on the same connection.
  std::string word(3900, 'a');
  CHECK(str(execute(c, sh("echo " + word)), "stdout") == word + "\n");
  // An over-long line sent in pieces is rejected once, then the next works.
  std::string big = Client::request(5, "execute", sh("echo " + std::string(6000, 'b')));
  REQUIRE(c.send_raw(big.substr(0, 3000)));
  REQUIRE(wait_until([&] { return c.unread_by_peer() == 0; }, 10));  // read as a piece
  REQUIRE(c.send_line(big.substr(3000)));
  v = c.read_json(10);
  REQUIRE(v);
  CHECK(num(error_of(v->as_object()), "code") == -32002);
  CHECK(str(execute(c, sh("echo fine")), "stdout") == "fine\n");
  CHECK_FALSE(c.read_line(0.5));
  stop_cleanly(d);
}

// ---- sessions ----

TEST_CASE("sessions carry their env vars into execute until destroyed", "[daemon][sessions]") {
  START_DAEMON(d);
  Client c(d.socket());
  json::object created = result_of(
      c.call("session_create", {{"name", "build"}, {"env_vars", {{"A", "1"}, {"B", "two"}}}}));
  std::string id = str(created, "session_id");
  CHECK(std::regex_match(
      id, std::regex("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")));

  json::array sessions = result_of(c.call("session_list", nullptr)).at("sessions").as_array();
  bool listed = false;
  for (const json::value& s : sessions) {
    const json::object& o = s.as_object();
    if (str(o, "session_id") != id) continue;
    listed = true;
    CHECK(str(o, "name") == "build");
    CHECK(o.at("env_vars") == json::object{{"A", "1"}, {"B", "two"}});
  }
  CHECK(listed);

  json::object p = sh("printf '%s-%s' \"$A\" \"$B\"");
  p["session_id"] = id;
  CHECK(str(execute(c, p), "stdout") == "1-two");
  p["env"] = {{"B", "request"}};  // the request's env wins over the session's
  CHECK(str(execute(c, p), "stdout") == "1-request");
  // Sessions belong to the daemon, not to the connection that made them.
  Client other(d.socket());
  p.erase("env");
  CHECK(str(execute(other, p), "stdout") == "1-two");

  json::object destroyed = result_of(c.call("session_destroy", {{"session_id", id}}));
  CHECK(destroyed.at("success") == true);
  CHECK(num(error_of(c.call("session_destroy", {{"session_id", id}})), "code") == -32001);
  CHECK(num(error_of(c.call("execute", p)), "code") == -32001);
  p["session_id"] = "00000000-0000-0000-0000-000000000000";
  CHECK(num(error_of(c.call("execute", p)), "code") == -32001);
  json::object remaining = result_of(c.call("session_list", nullptr));
  for (const json::value& s : remaining.at("sessions").as_array())
    CHECK(str(s.as_object(), "session_id") != id);
  stop_cleanly(d);
}

// ---- load ----

TEST_CASE("16 clients with 20 requests each on 2 workers all get their own answers",
          "[daemon][load]") {
  START_DAEMON(d, {"--workers", "2"});
  constexpr int kClients = 16, kRequests = 20;
  std::vector<int> correct(kClients, 0);
  std::vector<std::string> problems(kClients);
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t)
    threads.emplace_back([&, t] {
      Client c(d.socket());
      if (!c.connected()) {
        problems[t] = "cannot connect";
        return;
      }
      std::string lines;
      for (int k = 0; k < kRequests; ++k)
        lines += Client::request(k, "execute",
                                 sh("echo c" + std::to_string(t) + "-r" + std::to_string(k))) +
                 "\n";
      if (!c.send_raw(lines)) {
        problems[t] = "cannot send";
        return;
      }
      for (int k = 0; k < kRequests; ++k) {
        auto v = c.read_json(60);
        if (!v || !v->is_object() || !v->as_object().contains("result")) {
          problems[t] = "bad answer: " + c.last_line();
          return;
        }
        const json::object& o = v->as_object();
        int64_t id = o.at("id").as_int64();
        std::string want = "c" + std::to_string(t) + "-r" + std::to_string(id) + "\n";
        if (o.at("result").as_object().at("stdout") == want.c_str()) {
          ++correct[t];
        } else {
          problems[t] = "wrong answer: " + c.last_line();
        }
      }
    });
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < kClients; ++t) {
    INFO("client " << t << ": " << problems[t]);
    CHECK(correct[t] == kRequests);
  }
  stop_cleanly(d);
}

TEST_CASE("200 connections at once are all served", "[daemon][load]") {
  START_DAEMON(d, {"--workers", "2"});
  std::vector<Client> clients;
  clients.reserve(200);
  for (int i = 0; i < 200; ++i) {
    clients.emplace_back(d.socket());
    INFO("connection " << i << ": errno " << clients.back().connect_errno());
    REQUIRE(clients.back().connected());
  }
  for (int i = 0; i < 200; ++i)
    REQUIRE(clients[i].send_line(
        Client::request(i, "execute", sh("sleep 0.2; echo " + std::to_string(i)))));
  auto start = Clock::now();
  for (int i = 0; i < 200; ++i) {
    auto v = clients[i].read_json(60);
    INFO("connection " << i << ": " << clients[i].last_line());
    REQUIRE(v);
    CHECK(str(result_of(v->as_object()), "stdout") == std::to_string(i) + "\n");
  }
  CHECK(seconds_since(start) < 60);
  stop_cleanly(d);
}

TEST_CASE("a full queue answers a retryable error and nothing hangs", "[daemon][load]") {
  START_DAEMON(d, {"--queue-size", "4", "--max-concurrent", "2"});
  Client c(d.socket());
  // No job ends before the daemon has taken or refused all ten.
  const std::string gate = d.dir() + "/gate";
  std::string lines;
  for (int i = 0; i < 10; ++i) lines += Client::request(i, "execute", sh(until_file(gate))) + "\n";
  REQUIRE(c.send_raw(lines));
  REQUIRE(wait_until([&] { return c.unread_by_peer() == 0; }, 10));
  open_gate(gate);
  int ok = 0, full = 0;
  for (int i = 0; i < 10; ++i) {
    auto v = c.read_json(30);
    INFO("answer " << i << ": " << c.last_line());
    REQUIRE(v);
    const json::object& o = v->as_object();
    if (o.contains("error")) {
      json::object e = error_of(o);
      CHECK(num(e, "code") == -32000);
      REQUIRE(e.contains("data"));
      CHECK(num(e.at("data").as_object(), "retry_after_ms") > 0);
      ++full;
    } else {
      CHECK(str(result_of(o), "status") == "exited");
      ++ok;
    }
  }
  CHECK(ok + full == 10);
  CHECK(ok >= 1);
  CHECK(ok <= 4);
  CHECK(full >= 1);
  // Once the queue drains, jobs are accepted again.
  CHECK(str(execute(c, sh("echo again")), "stdout") == "again\n");
  stop_cleanly(d);
}

// ---- CLI ----

TEST_CASE("the CLI runs shell lines and programs and exits with their codes", "[daemon][cli]") {
  START_DAEMON(d);
  const std::string& s = d.socket();
  CliRun r = run_cli({"--socket", s, "run", "echo hi; exit 3"}, d.dir());
  CHECK(r.exit_code == 3);
  CHECK(r.out == "hi\n");

  r = run_cli({"--socket", s, "exec", "--", "printf", "%s", "a b"}, d.dir());
  CHECK(r.exit_code == 0);
  CHECK(r.out == "a b");

  std::string blob;
  for (int i = 0; i < 256; ++i) blob.push_back(char(i));
  std::string random(1000, '\0');
  std::ifstream("/dev/urandom", std::ios::binary).read(random.data(), 1000);
  blob += random;
  std::string path = d.dir() + "/blob";
  std::ofstream(path, std::ios::binary) << blob;
  r = run_cli({"--socket", s, "exec", "--", "cat", path}, d.dir());
  CHECK(r.exit_code == 0);
  CHECK(r.out.size() == blob.size());
  CHECK(r.out == blob);

  auto start = Clock::now();
  r = run_cli({"--socket", s, "exec", "--timeout", "0.2", "--", "sleep", "5"}, d.dir());
  CHECK(r.exit_code == 124);
  CHECK(seconds_since(start) < 4.5);

  r = run_cli({"--socket", s, "run", "echo err >&2; kill -TERM $$"}, d.dir());
  CHECK(r.err == "err\n");
  CHECK(r.exit_code == 128 + SIGTERM);
  stop_cleanly(d);
}

TEST_CASE("the CLI without a daemon exits 69 naming the socket", "[daemon][cli]") {
  TempDir t;
  std::string s = t.path() + "/no-daemon.sock";
  CliRun r = run_cli({"--socket", s, "run", "echo hi"}, t.path());
  CHECK(r.finished);
  CHECK(r.exit_code == 69);
  CHECK_THAT(r.err, Contains(s));
}

TEST_CASE("the CLI creates sessions whose env applies to later runs", "[daemon][cli]") {
  START_DAEMON(d);
  const std::string& s = d.socket();
  CliRun r = run_cli({"--socket", s, "session", "create", "--name", "x", "--env", "A=1"}, d.dir());
  REQUIRE(r.exit_code == 0);
  std::string id = r.out.substr(0, r.out.find('\n'));
  REQUIRE(id.size() == 36);
  r = run_cli({"--socket", s, "run", "--session", id, "echo $A"}, d.dir());
  CHECK(r.exit_code == 0);
  CHECK(r.out == "1\n");
  r = run_cli({"--socket", s, "session", "destroy", id}, d.dir());
  CHECK(r.exit_code == 0);
  stop_cleanly(d);
}

// ---- security ----

TEST_CASE("--env-pass lets a named daemon variable through and nothing else",
          "[daemon][security]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--env-pass", "SP_PASSED"},
                                .env = {"SP_PASSED=yes", "SP_SECRET=1"}});
  Client c(d.socket());
  CHECK(str(execute(c, sh("echo ${SP_PASSED:-none} ${SP_SECRET:-none}")), "stdout") ==
        "yes none\n");
  stop_cleanly(d);
}

TEST_CASE("peers are checked by uid: others are refused unless allowed", "[daemon][security]") {
  if (::getuid() != 0) {
    WARN("skipped: needs root to connect as another uid");
    return;
  }
  const uid_t nobody = 65534;
  for (bool allow : {false, true}) {
    DaemonOptions options;
    if (allow) options.flags = {"--allow-uid", std::to_string(nobody)};
    START_DAEMON(d, options);
    // Open the file system path to everyone: only the peer check stands in the way.
    REQUIRE(::chmod(d.dir().c_str(), 0755) == 0);
    REQUIRE(::chmod(d.socket().c_str(), 0777) == 0);
    std::string line =
        answer_as_uid(d.socket(), nobody, Client::request(1, "execute", sh("echo hi")));
    INFO("allow=" << allow << " answer: " << line);
    if (allow) {
      CHECK_THAT(line, Contains("\"stdout\":\"hi\\n\""));
    } else {
      CHECK(line.empty());
    }
    stop_cleanly(d);
  }
}

// ---- limits ----

TEST_CASE("per-job limits are what the command sees and what stops it", "[daemon][limits]") {
  START_DAEMON(d);
  Client c(d.socket());
  json::object p = sh("ulimit -n; ulimit -f; ulimit -v");
  p["limits"] = {
      {"open_files", 64}, {"file_size_bytes", 512 * 1024}, {"address_space_bytes", 1 << 30}};
  CHECK(str(execute(c, p), "stdout") == "64\n1024\n1048576\n");  // dash: 512 B blocks, KiB

  json::object spin = sh("while :; do :; done");
  spin["limits"] = {{"cpu_seconds", 1}};
  spin["timeout"] = 60;
  json::object r = execute(c, spin);
  CHECK(str(r, "status") == "exited");
  CHECK(str(r, "signal") == "SIGXCPU");

  json::object big = sh("head -c 100000 /dev/zero > big; echo $?");
  big["limits"] = {{"file_size_bytes", 1000}};
  big["working_dir"] = d.dir();
  CHECK(str(execute(c, big), "stdout") == "153\n");  // head died of SIGXFSZ (128 + 25)

  json::object bad = sh("true");
  bad["limits"] = {{"cpu_secs", 1}};
  json::object e = error_of(c.call("execute", bad));
  CHECK(num(e, "code") == -32602);
  CHECK_THAT(str(e, "message"), Contains("cpu_secs") && Contains("cpu_seconds"));
  bad["limits"] = {{"open_files", 0}};
  CHECK(num(error_of(c.call("execute", bad)), "code") == -32602);
  bad["limits"] = "lots";
  CHECK(num(error_of(c.call("execute", bad)), "code") == -32602);
  stop_cleanly(d);
}

TEST_CASE("kill_grace_ms sets how long a timed-out command has after SIGTERM", "[daemon][limits]") {
  // The daemon's default grace is a minute: a result well before that means
  // the job's own 100 ms grace was used.
  START_DAEMON(d, {"--kill-grace-ms", "60000"});
  Client c(d.socket());
  json::object p = sh("trap '' TERM; sleep 100.913");
  p["timeout"] = 0.2;
  p["kill_grace_ms"] = 100;
  auto v = c.try_call("execute", p, 30);
  REQUIRE(v);
  json::object r = result_of(*v);
  CHECK(str(r, "status") == "timed_out");
  CHECK(str(r, "signal") == "SIGKILL");
  CHECK(wait_until([] { return pids_matching("sleep 100.913").empty(); }, 5));
  stop_cleanly(d);
}

TEST_CASE("output_policy kill stops a job whose output passes the cap", "[daemon][limits]") {
  START_DAEMON(d, {"--kill-grace-ms", "200"});
  Client c(d.socket());
  json::object p = sh("yes sp-flood-381");  // never ends on its own
  p["max_output_bytes"] = 100000;
  p["output_policy"] = "kill";
  auto v = c.try_call("execute", p, 30);
  REQUIRE(v);
  json::object r = result_of(*v);
  CHECK(str(r, "status") == "cancelled");
  CHECK(r.at("truncated") == true);
  CHECK(str(r, "stdout").size() == 100000);
  CHECK_THAT(str(r, "error"), Contains("output exceeded"));
  CHECK(wait_until([] { return pids_matching("sp-flood-381").empty(); }, 5));
  p["output_policy"] = "explode";
  CHECK(num(error_of(c.call("execute", p)), "code") == -32602);
  stop_cleanly(d);
}
