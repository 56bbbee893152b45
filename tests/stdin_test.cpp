// A job's stdin through the real shell-poold: "stdin" (utf8 or base64) is
// written to the command through the job's input ring, then EOF, for
// execute, execute_stream, job_submit and plan steps; without it stdin is
// /dev/null. Input larger than the ring passes whole; a command that stops
// reading early ends normally and the daemon serves on. With "stdin_open",
// job_stdin_write and job_stdin_close stream it, in order by offset, with
// backpressure.
#include <catch2/catch.hpp>
#include <string>
#include <thread>

#include "tests/daemon_harness.h"

using namespace sp::test;
using Catch::Contains;

namespace {

// `command` with `bytes` as its stdin (sent as base64), output asked as base64.
json::object with_stdin(std::string_view command, std::string_view bytes) {
  return {{"command", command},
          {"stdin", base64(bytes)},
          {"stdin_encoding", "base64"},
          {"output_encoding", "base64"}};
}

std::string stdout_of(const json::object& result) {
  return base64_decode(str(result, "stdout"));
}

}  // namespace

TEST_CASE("stdin is written to the command, then EOF; without it stdin is /dev/null",
          "[daemon][stdin]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  json::object r = execute(c, {{"command", "cat"}, {"stdin", "hello\nworld"}});
  CHECK(str(r, "stdout") == "hello\nworld");
  CHECK(num(r, "exit_code") == 0);
  // No stdin: /dev/null, so cat ends at once (it would wait forever on a pipe).
  r = execute(c,
              {{"command", "cat; [ -p /dev/stdin ] && echo pipe || echo other"}, {"timeout", 10}});
  CHECK(str(r, "stdout") == "other\n");
  CHECK(str(execute(c, {{"command", "[ -p /dev/stdin ] && echo pipe"}, {"stdin", "x"}}),
            "stdout") == "pipe\n");
  // Exact bytes, NULs and invalid UTF-8 included.
  const std::string binary = std::string("\0\xff\xfe\x80zz\n\0", 8);
  CHECK(stdout_of(execute(c, with_stdin("cat", binary))) == binary);
  CHECK(str(execute(c, {{"command", "wc -c"}, {"stdin", ""}}), "stdout") == "0\n");

  json::object e = error_of(c.call(
      "execute", {{"command", "cat"}, {"stdin", "not base64!"}, {"stdin_encoding", "base64"}}));
  CHECK(num(e, "code") == -32602);
  CHECK_THAT(str(e, "message"), Contains("stdin"));
  e = error_of(c.call("execute", {{"command", "cat"}, {"stdin", 5}}));
  CHECK(num(e, "code") == -32602);
  e = error_of(c.call("execute", {{"command", "cat"}, {"stdin_open", true}}));
  CHECK(num(e, "code") == -32602);
  CHECK_THAT(str(e, "message"), Contains("stdin_open"));
  e = error_of(c.call("execute_chain",
                      {{"commands", json::array{{{"command", "cat"}, {"stdin_open", true}}}}}));
  CHECK(num(e, "code") == -32602);
  stop_cleanly(d);
}

TEST_CASE("stdin larger than the input ring passes whole to every kind of job", "[daemon][stdin]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "2", "--input-buffer", "4096"}});
  Client c(d.socket());
  const std::string big = random_bytes(600 * 1024, 1);  // many rings' worth
  SECTION("execute") {
    json::object r = execute(c, with_stdin("cat", big));
    CHECK(num(r, "exit_code") == 0);
    CHECK(stdout_of(r) == big);
  }
  SECTION("execute_stream") {
    // Text, so the chunks' data concatenate (base64 chunks are each padded).
    std::string text = big;
    for (char& ch : text) ch = char('a' + (unsigned char)ch % 26);
    REQUIRE(
        c.send_line(Client::request(7, "execute_stream", {{"command", "cat"}, {"stdin", text}})));
    Streamed s = read_stream(c, 7, 30);
    REQUIRE(s.ok);
    CHECK(s.out == text);
  }
  SECTION("job_submit, read with job_wait") {
    json::object params = with_stdin("cat", big);
    params["job_id"] = "big-cat";
    result_of(c.call("job_submit", params));
    json::object r =
        result_of(c.call("job_wait", {{"job_id", "big-cat"}, {"output_encoding", "base64"}}));
    CHECK(str(r, "status") == "exited");
    CHECK(stdout_of(r) == big);
  }
  SECTION("plan steps, each with its own stdin") {
    const std::string second = random_bytes(20 * 1024, 2);
    json::object r = result_of(
        c.call("execute_chain",
               {{"commands", json::array{with_stdin("cat", big), with_stdin("wc -c", second)}},
                {"output_encoding", "base64"}}));
    const json::array& results = r.at("results").as_array();
    REQUIRE(results.size() == 2);
    CHECK(stdout_of(results[0].as_object()) == big);
    CHECK(stdout_of(results[1].as_object()) == std::to_string(second.size()) + "\n");
  }
  stop_cleanly(d);
}

TEST_CASE("a command that stops reading its stdin ends normally and the daemon serves on",
          "[daemon][stdin]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--input-buffer", "4096"}});
  Client c(d.socket());
  const std::vector<pid_t> roles = role_pids(d);
  // It reads 3 bytes of 900 KiB and exits: the rest is dropped, not waited for.
  json::object r = execute(c, {{"command", "head -c 3; sleep 0.2; echo done"},
                               {"stdin", std::string(900 * 1024, 'y')},
                               {"timeout", 20}});
  CHECK(str(r, "stdout") == "yyydone\n");
  CHECK(str(r, "status") == "exited");
  // A command that never reads it at all, and exits.
  r = execute(c, {{"command", "true"}, {"stdin", std::string(900 * 1024, 'z')}, {"timeout", 20}});
  CHECK(num(r, "exit_code") == 0);
  // The command's writer side gets SIGPIPE as usual (default disposition).
  r = execute(c, {{"command", "bash -c 'yes | head -c 1 >/dev/null; echo ${PIPESTATUS[0]}'"}});
  CHECK(str(r, "stdout") == "141\n");
  check_same_roles(d, c, roles);  // no worker died of a SIGPIPE of its own
  stop_cleanly(d);
}

namespace {

json::object write_stdin(Client& c, const std::string& id, std::string_view data,
                         std::optional<uint64_t> offset = std::nullopt) {
  json::object p{{"job_id", id}, {"data", base64(data)}, {"encoding", "base64"}};
  if (offset) p["offset"] = *offset;
  return c.call("job_stdin_write", p, 30);
}

}  // namespace

TEST_CASE("job_stdin_write streams a detached job's stdin in order; offsets make retries safe",
          "[daemon][stdin]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  // After EOF it waits at a gate: closes and writes then meet a running job.
  const std::string gate = d.dir() + "/gate";
  result_of(c.call("job_submit", {{"command", "cat; " + until_file(gate)},
                                  {"job_id", "feed"},
                                  {"stdin", "one "},
                                  {"stdin_open", true}}));
  CHECK(num(result_of(write_stdin(c, "feed", "two ", 4)), "stdin_bytes") == 8);
  // The same write again (a retry after a lost answer): skipped, same answer.
  CHECK(num(result_of(write_stdin(c, "feed", "two ", 4)), "stdin_bytes") == 8);
  // Overlapping: only the new tail is taken.
  CHECK(num(result_of(write_stdin(c, "feed", "o three ", 6)), "stdin_bytes") == 14);
  json::object gap = error_of(write_stdin(c, "feed", "x", 99));
  CHECK(num(gap, "code") == -32602);
  CHECK_THAT(str(gap, "message"), Contains("offset"));
  CHECK(num(result_of(write_stdin(c, "feed", std::string("\0\xff", 2))), "stdin_bytes") == 16);
  CHECK(num(result_of(c.call("job_stdin_close", {{"job_id", "feed"}})), "stdin_bytes") == 16);
  CHECK(num(result_of(c.call("job_stdin_close", {{"job_id", "feed"}})), "stdin_bytes") == 16);
  json::object closed = error_of(write_stdin(c, "feed", "late"));
  CHECK(num(closed, "code") == -32005);
  CHECK_THAT(str(closed, "message"), Contains("closed"));
  open_gate(gate);
  json::object r =
      result_of(c.call("job_wait", {{"job_id", "feed"}, {"output_encoding", "base64"}}));
  CHECK(base64_decode(str(r, "stdout")) == std::string("one two three \0\xff", 16));
  json::object ended = error_of(write_stdin(c, "feed", "late"));
  CHECK(num(ended, "code") == -32005);
  CHECK_THAT(str(ended, "message"), Contains("exited"));

  // Errors name the reason: no such job, stdin not open, a plan.
  CHECK(num(error_of(write_stdin(c, "nope", "x")), "code") == -32001);
  result_of(c.call("job_submit", {{"command", "sleep 30"}, {"job_id", "shut"}}));
  json::object not_open = error_of(write_stdin(c, "shut", "x"));
  CHECK(num(not_open, "code") == -32005);
  CHECK_THAT(str(not_open, "message"), Contains("stdin_open"));
  result_of(c.call("job_cancel", {{"job_id", "shut"}}));
  // A command that exits without reading: its stdin is closed, writes say so.
  result_of(c.call("job_submit",
                   {{"command", "exec 0<&-; sleep 30"}, {"job_id", "deaf"}, {"stdin_open", true}}));
  json::object deaf;
  CHECK(wait_until(
      [&] {
        deaf = write_stdin(c, "deaf", "x");
        return deaf.contains("error");
      },
      10, 0.05));
  CHECK(num(deaf.at("error").as_object(), "code") == -32005);
  result_of(c.call("job_cancel", {{"job_id", "deaf"}}));
  stop_cleanly(d);
}

TEST_CASE("8 MiB through cat on execute_stream with stdin_open, read while written, exact",
          "[daemon][stdin]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  std::string text = random_bytes(8 << 20, 3);
  for (char& ch : text) ch = char('a' + (unsigned char)ch % 26);
  REQUIRE(c.send_line(
      Client::request(1, "execute_stream", {{"command", "cat"}, {"stdin_open", true}})));
  auto started = c.read_json(10);
  REQUIRE(started);
  const json::object& first = started->as_object().at("result").as_object();
  REQUIRE(str(first, "type") == "started");
  const std::string id = str(first, "job_id");
  // A writer on its own connection, 256 KiB a call, each waiting for room.
  std::string writer_problem;
  std::thread writer([&] {
    Client w(d.socket());
    for (size_t at = 0; at < text.size(); at += 256 << 10) {
      json::object p{{"job_id", id},
                     {"data", text.substr(at, 256 << 10)},
                     {"offset", at},
                     {"eof", at + (256 << 10) >= text.size()}};
      auto r = w.try_call("job_stdin_write", p, 30);
      if (!r || !r->contains("result")) {
        writer_problem = r ? json::serialize(*r) : "no answer";
        return;
      }
    }
  });
  Streamed s = read_stream(c, 1, 120);
  writer.join();
  CHECK(writer_problem.empty());
  REQUIRE(s.ok);
  CHECK(num(s.exit, "exit_code") == 0);
  CHECK(s.out.size() == text.size());
  CHECK(s.out == text);
  stop_cleanly(d);
}

TEST_CASE("a full stdin buffer makes a write wait, then answer a retryable error; nothing is lost",
          "[daemon][stdin]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}});
  Client c(d.socket());
  // It reads nothing until the gate opens, then counts what it got.
  const std::string gate = d.dir() + "/gate";
  result_of(c.call(
      "job_submit",
      {{"command", until_file(gate) + "; wc -c"}, {"job_id", "slow"}, {"stdin_open", true}}));
  const std::string data(512 << 10, 'q');  // more than the ring and the pipe hold
  const auto start = Clock::now();
  json::object full = error_of(write_stdin(c, "slow", data, 0));
  CHECK(seconds_since(start) >= 4);  // it waited for room first
  CHECK(num(full, "code") == -32000);
  const json::object& info = full.at("data").as_object();
  const int64_t taken = num(info, "stdin_bytes");
  CHECK(taken > 0);  // the ring and the pipe took some
  CHECK(taken < int64_t(data.size()));
  CHECK(num(info, "retry_after_ms") > 0);
  // Retried from where it stopped, once the command reads: all of it arrives.
  open_gate(gate);
  json::object more =
      result_of(write_stdin(c, "slow", data.substr(size_t(taken)), uint64_t(taken)));
  CHECK(num(more, "stdin_bytes") == int64_t(data.size()));
  result_of(c.call("job_stdin_close", {{"job_id", "slow"}}));
  json::object r = result_of(c.call("job_wait", {{"job_id", "slow"}}));
  CHECK(str(r, "stdout") == std::to_string(data.size()) + "\n");
  stop_cleanly(d);
}
