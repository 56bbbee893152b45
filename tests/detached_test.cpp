// Detached jobs against the real shell-poold: job_submit and the methods that
// find a job again (status, wait, output by cursor, cancel, signal, list,
// forget), retention, and their state surviving a frontend crash.
#include <signal.h>

#include <unistd.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "tests/daemon_harness.h"

using namespace sp::test;
using Catch::Contains;

namespace {

std::string submit(Client& c, json::object params) {
  return str(result_of(c.call("job_submit", params)), "job_id");
}

json::object status(Client& c, const std::string& id) {
  return result_of(c.call("job_status", {{"job_id", id}}));
}

json::object wait_job(Client& c, const std::string& id, double timeout_s = 20) {
  json::object r = result_of(c.call("job_wait", {{"job_id", id}, {"timeout", timeout_s}}, 30));
  return r;
}

// Reads a view of a job's output from `cursor` in pieces of `piece` bytes up
// to eof, checking that every answer continues at the cursor it was asked.
// The job is unknown to the daemon (never submitted, forgotten or evicted).
bool unknown(Client& c, const std::string& id) {
  auto r = c.try_call("job_status", {{"job_id", id}});
  return r && r->contains("error") && r->at("error").as_object().at("code") == -32001;
}

std::string read_all(Client& c, const std::string& id, const std::string& stream, size_t piece,
                     bool base64, size_t* calls = nullptr) {
  std::string all;
  uint64_t cursor = 0;
  for (size_t n = 0; n < 1'000'000; ++n) {
    json::object params{
        {"job_id", id}, {"stream", stream}, {"cursor", cursor}, {"max_bytes", piece}, {"wait", 5}};
    if (base64) params["output_encoding"] = "base64";
    json::object r = result_of(c.call("job_output", params));
    REQUIRE(num(r, "cursor") == int64_t(cursor));
    std::string data = str(r, "data");
    all += base64 ? base64_decode(data) : data;
    cursor = uint64_t(num(r, "next_cursor"));
    if (calls) ++*calls;
    if (r.at("eof").as_bool()) return all;
  }
  FAIL("no eof");
  return all;
}

}  // namespace

TEST_CASE("a detached job runs after its client left and is found again by its job_id",
          "[detached]") {
  START_DAEMON(d, {"--workers", "2"});
  std::string id;
  {
    Client c(d.socket());
    id = submit(c, {{"command", "sleep 0.3; echo out; echo err >&2; exit 3"}});
    json::object st = status(c, id);
    CHECK((str(st, "state") == "queued" || str(st, "state") == "running"));
  }  // the client goes away: a detached job is not cancelled
  Client c(d.socket());
  json::object r = wait_job(c, id);
  CHECK(str(r, "state") == "exited");
  CHECK(str(r, "status") == "exited");
  CHECK(num(r, "exit_code") == 3);
  CHECK(str(r, "stdout") == "out\n");
  CHECK(str(r, "stderr") == "err\n");
  CHECK(str(r, "job_id") == id);
  CHECK(r.at("timed_out") == false);
  CHECK(r.at("signal").is_null());
  CHECK(num(r, "duration_ms") >= 250);
  CHECK(num(r, "started_at_ms") >= num(r, "submitted_at_ms"));
  CHECK(num(r, "finished_at_ms") >= num(r, "started_at_ms"));
  json::object st = status(c, id);
  CHECK(str(st, "state") == "exited");
  CHECK(num(st, "stdout_bytes") == 4);
  CHECK(num(st, "stderr_bytes") == 4);
  CHECK(st.at("pid").is_null());
  json::object detached = health(c).at("detached").as_object();
  CHECK(num(detached, "jobs") == 1);
  CHECK(num(detached, "unfinished") == 0);
  CHECK(num(detached, "spool_used_bytes") == 8 + 4 + 8 + 4);  // two records of 4 bytes
  stop_cleanly(d);
}

TEST_CASE("job_status shows a running job's pid and job_wait times out with the status",
          "[detached]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  std::string id = submit(c, {{"command", "sleep 30"}});
  REQUIRE(wait_until([&] { return str(status(c, id), "state") == "running"; }, 10));
  REQUIRE(wait_until([&] { return status(c, id).at("pid").is_int64(); }, 10));
  pid_t pid = pid_t(num(status(c, id), "pid"));
  CHECK_THAT(cmdline_of(pid), Contains("sleep 30"));
  auto t0 = Clock::now();
  json::object r = wait_job(c, id, 0.3);
  CHECK(seconds_since(t0) >= 0.25);
  CHECK(str(r, "state") == "running");
  CHECK(!r.contains("stdout"));
  // timeout 0: the status at once
  CHECK(str(wait_job(c, id, 0), "state") == "running");
  json::object cancelled = result_of(c.call("job_cancel", {{"job_id", id}}));
  CHECK(cancelled.at("cancelled") == true);
  r = wait_job(c, id);
  CHECK(str(r, "state") == "cancelled");
  CHECK(str(r, "signal") == "SIGTERM");
  stop_cleanly(d);
}

TEST_CASE("every end state of a detached job is reported", "[detached]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  std::string timed = submit(c, {{"command", "sleep 30"}, {"timeout", 0.2}});
  std::string failed = submit(c, {{"command", "/no/such/program"}, {"args", json::array{"x"}}});
  std::string cwd = submit(c, {{"command", "true"}, {"working_dir", "/no/such/dir"}});
  CHECK(str(wait_job(c, timed), "state") == "timed_out");
  CHECK(wait_job(c, timed).at("timed_out") == true);
  json::object f = wait_job(c, failed);
  CHECK(str(f, "state") == "failed");
  CHECK_THAT(str(f, "error"), Contains("/no/such/program"));
  CHECK(str(wait_job(c, cwd), "state") == "failed");
  // A queued job cancelled before it started (the only worker slot is busy).
  DaemonOptions one{.flags = {"--workers", "1", "--max-concurrent", "1"}};
  TestDaemon d1(one);
  REQUIRE(d1.ready());
  Client c1(d1.socket());
  std::string busy = submit(c1, {{"command", "sleep 30"}});
  // Running, not just submitted: cancelled still queued, it would end without a signal.
  REQUIRE(wait_until([&] { return str(status(c1, busy), "state") == "running"; }, 10));
  std::string queued = submit(c1, {{"command", "echo never"}});
  CHECK(str(status(c1, queued), "state") == "queued");
  json::object r = result_of(c1.call("job_cancel", {{"job_id", queued}}));
  CHECK(str(r, "state") == "cancelled");
  json::object q = wait_job(c1, queued);
  CHECK(str(q, "state") == "cancelled");
  CHECK(str(q, "stdout") == "");
  CHECK_THAT(str(q, "error"), Contains("before it started"));
  result_of(c1.call("job_cancel", {{"job_id", busy}, {"signal", "KILL"}}));
  CHECK(str(wait_job(c1, busy), "signal") == "SIGKILL");
  stop_cleanly(d1);
  stop_cleanly(d);
}

TEST_CASE("a client-chosen job_id makes a retried submit idempotent", "[detached]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  json::object first = result_of(c.call(
      "job_submit", {{"command", "echo once >> " + d.dir() + "/runs"}, {"job_id", "build-7"}}));
  CHECK(str(first, "job_id") == "build-7");
  json::object again = result_of(c.call(
      "job_submit", {{"command", "echo once >> " + d.dir() + "/runs"}, {"job_id", "build-7"}}));
  CHECK(str(again, "job_id") == "build-7");
  CHECK(again.at("existing") == true);
  wait_job(c, "build-7");
  CHECK(read_file(d.dir() + "/runs") == "once\n");
  SECTION("ids the daemon could generate, or with odd characters, are refused") {
    for (const char* bad : {"123", "a b", "x/y", ""}) {
      json::object e = error_of(c.call("job_submit", {{"command", "true"}, {"job_id", bad}}));
      CHECK(num(e, "code") == -32602);
      CHECK_THAT(str(e, "message"), Contains("job_id"));
    }
    json::object e =
        error_of(c.call("job_submit", {{"command", "true"}, {"job_id", std::string(65, 'a')}}));
    CHECK(num(e, "code") == -32602);
  }
  SECTION("unknown jobs are -32001 for every method") {
    for (const char* m : {"job_status", "job_wait", "job_output", "job_cancel", "job_forget"}) {
      json::object e = error_of(c.call(m, {{"job_id", "nope"}}));
      CHECK(num(e, "code") == -32001);
      CHECK_THAT(str(e, "message"), Contains("nope"));
    }
    json::object e = error_of(c.call("job_signal", {{"job_id", "nope"}, {"signal", "TERM"}}));
    CHECK(num(e, "code") == -32001);
  }
  stop_cleanly(d);
}

TEST_CASE("cursors read in many small pieces reassemble the exact output", "[detached][output]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  // Interleaved stdout/stderr, multi-byte UTF-8 and, separately, raw bytes.
  std::string id = submit(
      c,
      {{"command", "for i in $(seq 1 300); do echo \"line $i é€😀\"; echo \"err $i\" >&2; done"}});
  std::string bin = submit(c, {{"command", "head -c 200000 /dev/urandom > " + d.dir() +
                                               "/bin; cat " + d.dir() + "/bin"}});
  json::object r = wait_job(c, id);
  REQUIRE(str(r, "state") == "exited");
  std::string want_out, want_err;
  for (int i = 1; i <= 300; ++i) {
    want_out += "line " + std::to_string(i) + " é€😀\n";
    want_err += "err " + std::to_string(i) + "\n";
  }
  CHECK(str(r, "stdout") == want_out);
  size_t calls = 0;
  CHECK(read_all(c, id, "stdout", 7, false, &calls) == want_out);
  CHECK(calls > want_out.size() / 7 / 2);
  CHECK(read_all(c, id, "stderr", 5, false) == want_err);
  std::string both = read_all(c, id, "both", 13, false);
  CHECK(both.size() == want_out.size() + want_err.size());
  CHECK(both.find("line 1 ") < both.find("err 300"));
  // Reading again from an earlier cursor gives the same bytes; a piece that
  // ends inside a character stops before it, and the cursor says so.
  json::object again = result_of(c.call(
      "job_output", {{"job_id", id}, {"stream", "stdout"}, {"cursor", 9}, {"max_bytes", 20}}));
  CHECK(str(again, "data") == want_out.substr(9, 20));
  CHECK(num(again, "next_cursor") == 29);
  json::object cut = result_of(c.call(
      "job_output", {{"job_id", id}, {"stream", "stdout"}, {"cursor", 9}, {"max_bytes", 19}}));
  CHECK(str(cut, "data") == want_out.substr(9, 17));
  CHECK(num(cut, "next_cursor") == 26);

  REQUIRE(str(wait_job(c, bin), "state") == "exited");
  std::string raw = read_file(d.dir() + "/bin");
  REQUIRE(raw.size() == 200000);
  CHECK(read_all(c, bin, "stdout", 4093, true) == raw);
  CHECK(read_all(c, bin, "both", 65536, true) == raw);
  // base64 of both streams: "data" is one encoding of what the chunks hold
  // (chunks of 1 byte each: each alone would end in padding).
  std::string ab = submit(
      c, {{"command",
           "for i in $(seq 1 20); do printf a; sleep 0.01; printf b >&2; sleep 0.01; done"}});
  REQUIRE(str(wait_job(c, ab), "state") == "exited");
  json::object mixed = result_of(
      c.call("job_output", {{"job_id", ab}, {"stream", "both"}, {"output_encoding", "base64"}}));
  std::string joined;
  for (const json::value& chunk : mixed.at("chunks").as_array())
    joined += base64_decode(str(chunk.as_object(), "data"));
  CHECK(mixed.at("chunks").as_array().size() >= 2);
  CHECK(joined.size() == 40);
  CHECK(base64_decode(str(mixed, "data")) == joined);
  // Text mode never breaks the JSON, whatever the bytes.
  json::object text = result_of(c.call("job_output", {{"job_id", bin}, {"max_bytes", 1000}}));
  CHECK(!str(text, "data").empty());
  stop_cleanly(d);
}

TEST_CASE("job_output while the job runs returns what exists and can wait for more",
          "[detached][output]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  // Each part of the output waits for a gate the test opens.
  const std::string second = d.dir() + "/second", end = d.dir() + "/end";
  std::string id = submit(
      c, {{"command", "echo first; " + until_file(second) + "; echo second; " + until_file(end)}});
  json::object r;
  REQUIRE(wait_until(
      [&] {
        r = result_of(c.call("job_output", {{"job_id", id}}));
        return !str(r, "data").empty();
      },
      10));
  CHECK(str(r, "data") == "first\n");
  CHECK(r.at("eof") == false);
  uint64_t cursor = uint64_t(num(r, "next_cursor"));
  // Nothing new yet: without "wait" an empty answer at once, with it the next data.
  json::object empty = result_of(c.call("job_output", {{"job_id", id}, {"cursor", cursor}}));
  CHECK(str(empty, "data") == "");
  CHECK(num(empty, "next_cursor") == int64_t(cursor));
  // The wait is parked (the daemon has read it) before the data it waits for exists.
  const int64_t wait_id = c.next_id();
  REQUIRE(c.send_line(
      Client::request(wait_id, "job_output", {{"job_id", id}, {"cursor", cursor}, {"wait", 10}})));
  REQUIRE(wait_until([&] { return c.unread_by_peer() == 0; }, 10));
  auto t0 = Clock::now();
  open_gate(second);
  auto answer = c.read_json(30);
  REQUIRE(answer);
  CHECK(answer->as_object().at("id") == wait_id);
  json::object more = result_of(answer->as_object());
  CHECK(str(more, "data") == "second\n");
  CHECK(seconds_since(t0) < 5);
  cursor = uint64_t(num(more, "next_cursor"));
  open_gate(end);
  json::object last =
      result_of(c.call("job_output", {{"job_id", id}, {"cursor", cursor}, {"wait", 10}}));
  CHECK(str(last, "data") == "");
  CHECK(last.at("eof") == true);
  CHECK(str(last, "state") == "exited");
  stop_cleanly(d);
}

TEST_CASE("job_signal delivers a signal and job_cancel takes a signal and a grace",
          "[detached][signal]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  std::string id = submit(c, {{"command",
                               "trap 'echo got USR1' USR1; trap 'echo got INT; exit 7' INT; "
                               "echo ready; while true; do sleep 0.05; done"}});
  REQUIRE(wait_until(
      [&] {
        return str(result_of(c.call("job_output", {{"job_id", id}})), "data") == "ready\n";
      },
      10));
  json::object sig = result_of(c.call("job_signal", {{"job_id", id}, {"signal", "USR1"}}));
  CHECK(str(sig, "signal") == "SIGUSR1");
  REQUIRE(wait_until(
      [&] {
        // (sleep, in the same group, dies of it: the shell says so on stderr)
        return str(result_of(c.call("job_output", {{"job_id", id}, {"stream", "stdout"}})),
                   "data") == "ready\ngot USR1\n";
      },
      10));
  CHECK(str(status(c, id), "state") == "running");
  result_of(c.call("job_cancel", {{"job_id", id}, {"signal", "SIGINT"}, {"grace_ms", 5000}}));
  json::object r = wait_job(c, id);
  CHECK(str(r, "state") == "cancelled");
  CHECK(num(r, "exit_code") == 7);
  CHECK(str(r, "stdout") == "ready\ngot USR1\ngot INT\n");
  // A finished job takes no signal; a cancel of it changes nothing.
  json::object e = error_of(c.call("job_signal", {{"job_id", id}, {"signal", "TERM"}}));
  CHECK(num(e, "code") == -32005);
  CHECK(str(e.at("data").as_object(), "state") == "cancelled");
  CHECK(result_of(c.call("job_cancel", {{"job_id", id}})).at("cancelled") == false);
  CHECK(num(error_of(c.call("job_signal", {{"job_id", id}, {"signal", "NOPE"}})), "code") ==
        -32602);
  SECTION("a grace of 0 kills at once when the signal is ignored") {
    std::string stubborn = submit(c, {{"command", "trap '' TERM; echo ready; sleep 30"}});
    REQUIRE(wait_until(
        [&] {
          return str(result_of(c.call("job_output", {{"job_id", stubborn}})), "data") == "ready\n";
        },
        10));
    auto t0 = Clock::now();
    result_of(c.call("job_cancel", {{"job_id", stubborn}, {"grace_ms", 0}}));
    CHECK(str(wait_job(c, stubborn), "signal") == "SIGKILL");
    CHECK(seconds_since(t0) < 1.5);
  }
  stop_cleanly(d);
}

TEST_CASE("job_list filters by state and session, and job_forget removes finished jobs",
          "[detached]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  std::string session =
      str(result_of(c.call("session_create", {{"name", "s"}, {"env_vars", {{"V", "1"}}}})),
          "session_id");
  std::string a = submit(c, {{"command", "echo $V"}, {"session_id", session}});
  std::string b = submit(c, {{"command", "sleep 30"}, {"job_id", "long-one"}});
  CHECK(str(wait_job(c, a), "stdout") == "1\n");
  REQUIRE(wait_until([&] { return str(status(c, b), "state") == "running"; }, 10));
  auto ids = [&](json::object params) {
    std::vector<std::string> out;
    json::object listed = result_of(c.call("job_list", params));
    for (auto& j : listed.at("jobs").as_array()) out.push_back(str(j.as_object(), "job_id"));
    return out;
  };
  CHECK(ids({}) == std::vector<std::string>{a, b});
  CHECK(ids({{"state", "running"}}) == std::vector<std::string>{b});
  CHECK(ids({{"state", "exited"}}) == std::vector<std::string>{a});
  CHECK(ids({{"session_id", session}}) == std::vector<std::string>{a});
  CHECK(num(error_of(c.call("job_list", {{"state", "sleeping"}})), "code") == -32602);
  json::object e = error_of(c.call("job_forget", {{"job_id", b}}));
  CHECK(num(e, "code") == -32005);
  CHECK(result_of(c.call("job_forget", {{"job_id", a}})).at("forgotten") == true);
  CHECK(unknown(c, a));
  CHECK(ids({}) == std::vector<std::string>{b});
  stop_cleanly(d);
}

TEST_CASE("finished jobs are kept for a time and a count, and their output is bounded",
          "[detached][retention]") {
  SECTION("--retain-seconds") {
    START_DAEMON(d, {"--workers", "1", "--retain-seconds", "0.5"});
    Client c(d.socket());
    std::string id = submit(c, {{"command", "echo x"}});
    wait_job(c, id);
    CHECK(str(status(c, id), "state") == "exited");
    CHECK(wait_until([&] { return unknown(c, id); }, 5, 0.1));
    stop_cleanly(d);
  }
  SECTION("--retain-jobs: the oldest finished job makes room; unfinished ones are never evicted") {
    START_DAEMON(d, {"--workers", "1", "--retain-jobs", "3"});
    Client c(d.socket());
    std::string first = submit(c, {{"command", "echo 1"}});
    wait_job(c, first);
    std::string busy1 = submit(c, {{"command", "sleep 30"}});
    std::string busy2 = submit(c, {{"command", "sleep 30"}});
    std::string next = submit(c, {{"command", "echo 4"}});  // evicts `first`
    CHECK(unknown(c, first));
    wait_job(c, next);
    // Three records: two running, one finished (evictable).
    std::string more = submit(c, {{"command", "sleep 30"}});
    CHECK(unknown(c, next));
    json::object full = error_of(c.call("job_submit", {{"command", "true"}}));
    CHECK(num(full, "code") == -32002);
    CHECK_THAT(str(full, "message"), Contains("--retain-jobs"));
    for (const std::string& id : {busy1, busy2, more})
      result_of(c.call("job_cancel", {{"job_id", id}, {"signal", "KILL"}}));
    stop_cleanly(d);
  }
  SECTION("--job-output-bytes truncates, output_policy kill stops the job") {
    START_DAEMON(d, {"--workers", "1", "--job-output-bytes", "10000"});
    Client c(d.socket());
    std::string id =
        submit(c, {{"command", "head -c 50000 /dev/zero | tr '\\0' a; echo done >&2"}});
    json::object r = wait_job(c, id);
    CHECK(str(r, "state") == "exited");
    CHECK(r.at("truncated") == true);
    CHECK(num(r, "stdout_bytes") + num(r, "stderr_bytes") == 10000);
    CHECK(str(r, "stdout") == std::string(10000, 'a'));
    std::string small = submit(c, {{"command", "seq 1 100000"}, {"max_output_bytes", 100}});
    CHECK(num(wait_job(c, small), "stdout_bytes") == 100);
    std::string killed = submit(c, {{"command", "yes"}, {"output_policy", "kill"}});
    json::object k = wait_job(c, killed);
    CHECK(str(k, "state") == "cancelled");
    CHECK_THAT(str(k, "error"), Contains("output exceeded"));
    stop_cleanly(d);
  }
  SECTION("--spool-bytes: finished jobs' output is evicted, oldest first, to make room") {
    START_DAEMON(d,
                 {"--workers", "1", "--spool-bytes", "3000000", "--job-output-bytes", "1000000"});
    Client c(d.socket());
    std::vector<std::string> ids;
    for (int i = 0; i < 6; ++i) {
      ids.push_back(submit(c, {{"command", "head -c 900000 /dev/zero"}}));
      json::object r = wait_job(c, ids.back());
      CHECK(num(r, "stdout_bytes") == 900000);  // every job had room for all of its output
    }
    CHECK(unknown(c, ids[0]));
    CHECK(str(status(c, ids[5]), "state") == "exited");
    stop_cleanly(d);
  }
  SECTION("--spool-bytes: room is kept for every unfinished job's whole output") {
    START_DAEMON(d, {"--workers", "2", "--spool-bytes", "6000000", "--job-output-bytes", "1000000",
                     "--hang-timeout", "0.4"});  // a 100 ms tick
    Client c(d.socket());
    std::vector<std::string> old;
    for (int i = 0; i < 4; ++i) {
      old.push_back(submit(c, {{"command", "head -c 1000000 /dev/zero"}}));
      REQUIRE(num(wait_job(c, old.back()), "stdout_bytes") == 1000000);
    }
    // Two jobs that print their whole share at once, after the frontend has
    // seen them unfinished and made room for them (the oldest went): the
    // spool holds both.
    const std::string gate = d.dir() + "/gate";
    std::vector<std::string> fresh;
    for (int i = 0; i < 2; ++i)
      fresh.push_back(submit(c, {{"command", until_file(gate) + "; head -c 1000000 /dev/zero"}}));
    REQUIRE(wait_until([&] { return unknown(c, old[0]); }, 10));
    open_gate(gate);
    for (const std::string& id : fresh) {
      json::object r = wait_job(c, id);
      CHECK(num(r, "stdout_bytes") == 1000000);
      CHECK(r.at("truncated") == false);
    }
    CHECK(unknown(c, old[0]));  // the oldest made room
    CHECK(str(status(c, old[3]), "state") == "exited");
    stop_cleanly(d);
  }
}

TEST_CASE("detached jobs, their output and sessions survive a frontend crash",
          "[detached][crash]") {
  START_DAEMON(d, {"--workers", "2"});
  Client c(d.socket());
  std::string session =
      str(result_of(c.call("session_create", {{"name", "keep"}, {"env_vars", {{"K", "v"}}}})),
          "session_id");
  std::string done = submit(c, {{"command", "seq 1 2000"}});
  wait_job(c, done);
  // Prints while the frontend is dead, and finishes after it is back.
  std::string running =
      submit(c, {{"command", "for i in $(seq 1 30); do echo tick $i; sleep 0.05; done; echo $K"},
                 {"session_id", session},
                 {"job_id", "survivor"}});
  REQUIRE(wait_until([&] { return str(status(c, running), "state") == "running"; }, 10));
  std::string queued_later;
  Client c2 = kill_frontend(d);
  json::object listed = result_of(c2.call("job_list", {}));
  CHECK(listed.at("jobs").as_array().size() == 2);
  std::string seq_out;
  for (int i = 1; i <= 2000; ++i) seq_out += std::to_string(i) + "\n";
  CHECK(read_all(c2, done, "stdout", 1000, false) == seq_out);
  json::object r = wait_job(c2, running);
  CHECK(str(r, "state") == "exited");
  CHECK(num(r, "exit_code") == 0);
  std::string want;
  for (int i = 1; i <= 30; ++i) want += "tick " + std::to_string(i) + "\n";
  want += "v\n";
  CHECK(str(r, "stdout") == want);
  CHECK(read_all(c2, running, "both", 17, false) == want);
  // The session is still there and usable.
  CHECK(str(execute(c2, {{"command", "echo $K"}, {"session_id", session}}), "stdout") == "v\n");
  CHECK(result_of(c2.call("session_list", {})).at("sessions").as_array().size() == 1);
  json::object h = health(c2);
  CHECK(num(h.at("counters").as_object(), "frontend_restarts") == 1);
  stop_cleanly(d);
}

TEST_CASE("a detached job whose worker dies ends lost, with the output it had",
          "[detached][crash]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  std::string id = submit(c, {{"command", "echo before; sleep 30"}});
  REQUIRE(wait_until(
      [&] {
        return str(result_of(c.call("job_output", {{"job_id", id}})), "data") == "before\n";
      },
      10));
  pid_t worker = d.worker_pid(0);
  REQUIRE(worker > 0);
  ::kill(worker, SIGKILL);
  json::object r = wait_job(c, id);
  CHECK(str(r, "state") == "lost");
  CHECK(str(r, "stdout") == "before\n");
  CHECK_THAT(str(r, "error"), Contains("worker"));
  stop_cleanly(d);
}

TEST_CASE("shell-pool logs -f and wait carry on across a frontend crash",
          "[detached][cli][crash]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  // The second half of the output waits for the crash.
  const std::string gate = d.dir() + "/gate";
  std::string id =
      submit(c, {{"command", "for i in $(seq 1 10); do echo tick $i; done; " + until_file(gate) +
                                 "; for i in $(seq 11 20); do echo tick $i; done; "
                                 "exit 3"}});
  std::string first_half, want;
  for (int i = 1; i <= 20; ++i) {
    want += "tick " + std::to_string(i) + "\n";
    if (i == 10) first_half = want;
  }
  CliRun logs, waited;
  std::thread follow([&] { logs = run_cli({"--socket", d.socket(), "logs", "-f", id}, d.dir()); });
  std::thread wait([&] { waited = run_cli({"--socket", d.socket(), "wait", id}, d.dir()); });
  // The crash comes while both follow the job: `logs -f` has printed the
  // first half (it writes unbuffered to its cli*.out) and both are connected.
  // (No REQUIRE while the threads run: it would leave them unjoined.)
  auto logs_printed_first_half = [&] {
    namespace fs = std::filesystem;
    std::error_code ec;
    for (fs::directory_iterator it(d.dir(), ec); !ec && it != fs::directory_iterator();
         it.increment(ec))
      if (it->path().extension() == ".out" && read_file(it->path()) == first_half) return true;
    return false;
  };
  auto connections = [&] {
    auto h = c.try_call("health", nullptr, 5);
    return h && h->contains("result") ? h->at("result").at("connections").to_number<int64_t>() : -1;
  };
  bool following =
      wait_until([&] { return logs_printed_first_half() && connections() == 3; }, 20, 0.05);
  pid_t frontend = following ? d.frontend_pid() : 0;
  if (frontend > 0) ::kill(frontend, SIGKILL);
  open_gate(gate);
  follow.join();
  wait.join();
  REQUIRE(following);
  REQUIRE(frontend > 0);
  INFO("logs: " << logs.err << "wait: " << waited.err);
  CHECK(logs.exit_code == 0);
  CHECK(logs.out == want);  // every byte once: it went on from its cursor
  CHECK(waited.exit_code == 3);
  CHECK(waited.out == want);
  Client after(d.socket());
  CHECK(num(health(after).at("counters").as_object(), "frontend_restarts") == 1);
  stop_cleanly(d);
}

TEST_CASE("the CLI submits, follows, waits for, cancels and lists detached jobs",
          "[detached][cli]") {
  START_DAEMON(d, {"--workers", "1"});
  const std::string& s = d.socket();
  CliRun r = run_cli(
      {"--socket", s, "submit", "--id", "cli-1", "echo one; sleep 0.3; echo two >&2; exit 4"},
      d.dir());
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "cli-1\n");
  // logs -f prints everything up to the end, each stream to its own.
  r = run_cli({"--socket", s, "logs", "-f", "cli-1"}, d.dir());
  CHECK(r.exit_code == 0);
  CHECK(r.out == "one\n");
  CHECK(r.err == "two\n");
  r = run_cli({"--socket", s, "wait", "cli-1"}, d.dir());
  CHECK(r.exit_code == 4);
  CHECK(r.out == "one\n");
  r = run_cli({"--socket", s, "status", "cli-1"}, d.dir());
  CHECK_THAT(r.out, Contains("\"state\":\"exited\""));
  // A program with arguments (no shell), waited for with a timeout.
  r = run_cli({"--socket", s, "submit", "--", "sleep", "30"}, d.dir());
  REQUIRE(r.exit_code == 0);
  std::string id = r.out.substr(0, r.out.size() - 1);
  // Listed below as running: not before it runs.
  Client c(s);
  REQUIRE(wait_until([&] { return str(status(c, id), "state") == "running"; }, 10));
  r = run_cli({"--socket", s, "wait", "--timeout", "0.2", id}, d.dir());
  CHECK(r.exit_code == 75);
  CHECK_THAT(r.err, Contains("still"));
  r = run_cli({"--socket", s, "jobs"}, d.dir());
  CHECK_THAT(r.out, Contains("cli-1"));
  CHECK_THAT(r.out, Contains("sleep 30"));
  r = run_cli({"--socket", s, "jobs", "--state", "running", "--json"}, d.dir());
  CHECK_THAT(r.out, Contains("\"job_id\":\"" + id + "\""));
  CHECK_THAT(r.out, !Contains("cli-1"));
  r = run_cli({"--socket", s, "cancel", "--signal", "KILL", id}, d.dir());
  CHECK(r.exit_code == 0);
  CHECK((r.out == "cancelling\n" || r.out == "cancelled\n"));
  r = run_cli({"--socket", s, "wait", id}, d.dir());
  CHECK(r.exit_code == 125);
  r = run_cli({"--socket", s, "forget", "cli-1"}, d.dir());
  CHECK(r.exit_code == 0);
  r = run_cli({"--socket", s, "status", "cli-1"}, d.dir());
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.err, Contains("no job with job_id cli-1"));
  stop_cleanly(d);
}

TEST_CASE("the spool directory is the daemon's own: other files beside it are left alone",
          "[detached][spool]") {
  TempDir spool;
  std::string mine = spool.path() + "/job-notes.txt";
  { std::ofstream(mine) << "keep me"; }
  START_DAEMON(d, {"--workers", "1", "--spool-dir", spool.path()});
  Client c(d.socket());
  std::string id = submit(c, {{"command", "echo spooled"}});
  CHECK(str(wait_job(c, id), "stdout") == "spooled\n");
  std::string dir = spool.path() + "/" + d.shm_name() + ".spool";
  CHECK(file_exists(dir + "/job-" + id));
  stop_cleanly(d);
  CHECK_FALSE(file_exists(dir));
  CHECK(read_file(mine) == "keep me");
}

TEST_CASE(
    "a plan cancelled and forgotten in one batch does not finish the job that reuses "
    "its record",
    "[detached][plan]") {
  START_DAEMON(d, {"--workers", "1", "--max-concurrent", "1"});
  Client c(d.socket());
  std::string blocker = submit(c, {{"command", "sleep 30"}});
  REQUIRE(wait_until([&] { return str(status(c, blocker), "state") == "running"; }, 10));
  result_of(c.call("job_submit", {{"strategy", "chain"},
                                  {"job_id", "p"},
                                  {"commands", json::array{json::object{{"command", "echo 1"}},
                                                           json::object{{"command", "echo 2"}}}}}));
  REQUIRE(c.send_line(
      "[" + Client::request(1, "job_cancel", {{"job_id", "p"}}) + "," +
      Client::request(2, "job_forget", {{"job_id", "p"}}) + "," +
      Client::request(3, "job_submit", {{"command", "echo real"}, {"job_id", "after"}}) + "]"));
  auto batch = c.read_json(10);
  REQUIRE(batch);
  REQUIRE(batch->is_array());
  for (const json::value& a : batch->as_array()) CHECK(a.as_object().contains("result"));
  // The new job is queued behind the blocker: it must not look finished.
  CHECK(str(status(c, "after"), "state") == "queued");
  result_of(c.call("job_cancel", {{"job_id", blocker}, {"signal", "KILL"}}));
  json::object r = wait_job(c, "after");
  CHECK(str(r, "state") == "exited");
  CHECK(str(r, "stdout") == "real\n");
  stop_cleanly(d);
}

TEST_CASE("a wait whose client left does not keep the frontend busy", "[detached]") {
  START_DAEMON(d, {"--workers", "1"});
  constexpr double kWait = 0.3;
  std::string id;
  Client probe(d.socket());
  {
    Client c(d.socket());
    id = submit(c, {{"command", "sleep 30"}});
    REQUIRE(c.send_line(Client::request(9, "job_wait", {{"job_id", id}, {"timeout", kWait}})));
    REQUIRE(wait_until([&] { return c.unread_by_peer() == 0; }, 10));  // parked
  }  // gone before its wait ran out
  // The frontend saw it leave.
  REQUIRE(wait_until([&] { return num(health(probe), "connections") == 1; }, 10, 0.05));
  // Past the wait's deadline, which came at most kWait after the frontend
  // parked it (before it saw the client leave): what is measured is after it.
  std::this_thread::sleep_for(std::chrono::duration<double>(kWait));
  pid_t frontend = d.frontend_pid();
  auto cpu_ticks = [&] {
    std::string stat = read_file("/proc/" + std::to_string(frontend) + "/stat");
    std::istringstream in(stat.substr(stat.rfind(')') + 2));
    std::string field;
    long ticks = 0;
    for (int i = 3; i <= 15 && in >> field; ++i)
      if (i == 14 || i == 15) ticks += std::stol(field);  // utime + stime
    return ticks;
  };
  long before = cpu_ticks();
  ::usleep(1'000'000);  // the window measured, not a wait for something
  // An idle loop uses next to nothing; a spinning one a whole core (100 ticks).
  CHECK(cpu_ticks() - before < 30);
  result_of(probe.call("job_cancel", {{"job_id", id}, {"signal", "KILL"}}));
  stop_cleanly(d);
}

TEST_CASE("queued detached jobs survive repeated frontend crashes without extra ring cells",
          "[detached][crash]") {
  START_DAEMON(d, {"--workers", "1", "--max-concurrent", "1", "--queue-size", "8"});
  Client c(d.socket());
  std::string blocker = submit(c, {{"command", "sleep 30"}});
  REQUIRE(wait_until([&] { return str(status(c, blocker), "state") == "running"; }, 10));
  std::vector<std::string> queued;
  for (int i = 0; i < 6; ++i)
    queued.push_back(submit(c, {{"command", "echo q" + std::to_string(i)}}));
  for (int crash = 0; crash < 3; ++crash) {
    pid_t frontend = 0;  // the next one may still be on its restart backoff
    REQUIRE(wait_until([&] { return (frontend = d.frontend_pid()) > 0; }, 10));
    ::kill(frontend, SIGKILL);
    REQUIRE(wait_until([&] { return d.frontend_pid() != 0 && d.frontend_pid() != frontend; }, 10));
  }
  Client c2 = Client::connect_retry(d.socket(), 10);
  result_of(c2.call("job_cancel", {{"job_id", blocker}, {"signal", "KILL"}}));
  for (int i = 0; i < 6; ++i) {
    json::object r = wait_job(c2, queued[size_t(i)]);
    CHECK(str(r, "state") == "exited");
    CHECK(str(r, "stdout") == "q" + std::to_string(i) + "\n");
  }
  stop_cleanly(d);
}
