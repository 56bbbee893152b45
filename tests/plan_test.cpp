// Strategies against the real shell-poold: execute_chain, execute_parallel
// and execute_dag, attached and detached (job_submit with "strategy"), with
// per-step specs, bounds, failures, cancels and a frontend crash.
#include <signal.h>

#include <catch2/catch.hpp>
#include <string>

#include "tests/daemon_harness.h"

using namespace sp::test;
using Catch::Contains;

namespace {

json::object run_plan(Client& c, std::string_view method, const json::object& params) {
  return result_of(c.call(method, params, 60));
}

json::object step(const json::object& plan, size_t i) {
  return plan.at("results").as_array().at(i).as_object();
}

json::object node(const json::object& plan, std::string_view name) {
  return plan.at("results").as_object().at(name).as_object();
}

// A shell line that waits (up to 10 s) until `path` exists, then prints `word`.
std::string after_file(const std::string& path, const std::string& word) {
  return "for i in $(seq 1 1000); do [ -e " + path + " ] && break; sleep 0.01; done; [ -e " + path +
         " ] && echo " + word;
}

}  // namespace

TEST_CASE("execute_chain runs steps in order and skips the rest after a failure", "[plan][chain]") {
  START_DAEMON(d, {"--workers", "2"});
  Client c(d.socket());
  std::string session = str(
      result_of(c.call("session_create", {{"name", "s"}, {"env_vars", {{"S", "from-session"}}}})),
      "session_id");
  json::array commands{
      json::object{{"command", "pwd"}, {"working_dir", "/tmp"}},
      json::object{{"command", "echo $A $S"}, {"env", {{"A", "own-env"}}}, {"session_id", session}},
      json::object{{"command", "sleep 5"}, {"timeout", 0.2}},
      json::object{{"command", "echo never"}}};
  json::object r = run_plan(c, "execute_chain", {{"commands", commands}});
  CHECK(r.at("success") == false);
  CHECK(str(r, "strategy") == "chain");
  CHECK(str(step(r, 0), "stdout") == "/tmp\n");
  CHECK(str(step(r, 1), "stdout") == "own-env from-session\n");
  CHECK(str(step(r, 2), "status") == "timed_out");
  CHECK(str(step(r, 3), "status") == "skipped");
  CHECK(str(step(r, 3), "stdout") == "");
  CHECK_THAT(str(step(r, 3), "error"), Contains("failed"));
  CHECK_THAT(str(r, "error"), Contains("failed: 2"));
  CHECK_THAT(str(r, "error"), Contains("skipped: 3"));
  for (size_t i = 0; i < 4; ++i) CHECK(str(step(r, i), "name") == std::to_string(i));

  // stop_on_error false: every step runs, in order.
  json::object all = run_plan(
      c, "execute_chain",
      {{"commands", json::array{json::object{{"command", "echo 1 > " + d.dir() + "/order"}},
                                json::object{{"command", "exit 3"}},
                                json::object{{"command", "echo 3 >> " + d.dir() + "/order"}}}},
       {"stop_on_error", false}});
  CHECK(num(step(all, 1), "exit_code") == 3);
  CHECK(str(step(all, 2), "status") == "exited");
  CHECK(read_file(d.dir() + "/order") == "1\n3\n");
  CHECK(all.at("success") == false);
  json::object ok =
      run_plan(c, "execute_chain", {{"commands", json::array{json::object{{"command", "true"}}}}});
  CHECK(ok.at("success") == true);
  CHECK(num(ok, "exit_code") == 0);
  // Attached plans are gone once answered.
  CHECK(result_of(c.call("job_list", {})).at("jobs").as_array().empty());
  stop_cleanly(d);
}

TEST_CASE("execute_parallel answers in input order and keeps to max_parallel", "[plan][parallel]") {
  START_DAEMON(d, {"--workers", "2"});
  Client c(d.socket());
  std::string dir = d.dir() + "/running";
  json::array commands;
  // Each step marks itself running, looks how many are, and unmarks.
  for (int i = 0; i < 6; ++i)
    commands.push_back(json::object{
        {"command", "mkdir -p " + dir + " && touch " + dir + "/" + std::to_string(i) +
                        " && sleep 0.2 && ls " + dir + " | wc -l && rm " + dir + "/" +
                        std::to_string(i) + " && echo step " + std::to_string(i) + " >&2"}});
  json::object r = run_plan(c, "execute_parallel", {{"commands", commands}, {"max_parallel", 2}});
  CHECK(r.at("success") == true);
  REQUIRE(r.at("results").as_array().size() == 6);
  for (int i = 0; i < 6; ++i) {
    json::object s = step(r, size_t(i));
    CHECK(str(s, "stderr") == "step " + std::to_string(i) + "\n");
    CHECK(std::stoi(str(s, "stdout")) <= 2);
  }
  // Without a bound all run at once: the last one to start lets the first go.
  json::object together = run_plan(
      c, "execute_parallel",
      {{"commands", json::array{json::object{{"command", after_file(d.dir() + "/go", "first")}},
                                json::object{{"command", "sleep 0.1; touch " + d.dir() +
                                                             "/go; echo second"}}}}});
  CHECK(str(step(together, 0), "stdout") == "first\n");
  CHECK(str(step(together, 1), "stdout") == "second\n");
  CHECK(num(error_of(c.call("execute_parallel", {{"commands", commands}, {"max_parallel", 0}})),
            "code") == -32602);
  // fail_fast: after a failure no further step starts.
  json::object fast = run_plan(c, "execute_parallel",
                               {{"commands", json::array{json::object{{"command", "exit 5"}},
                                                         json::object{{"command", "echo never"}}}},
                                {"max_parallel", 1},
                                {"fail_fast", true}});
  CHECK(fast.at("success") == false);
  CHECK(num(step(fast, 0), "exit_code") == 5);
  CHECK(str(step(fast, 1), "status") == "skipped");
  // depends_on belongs to DAG nodes: in a parallel or chain step it is refused.
  json::object e = error_of(
      c.call("execute_chain",
             {{"commands",
               json::array{json::object{{"command", "true"}},
                           json::object{{"command", "true"}, {"depends_on", json::array{"0"}}}}}}));
  CHECK(num(e, "code") == -32602);
  CHECK_THAT(str(e, "message"), Contains("\"commands\"[1]"));
  stop_cleanly(d);
}

TEST_CASE("execute_dag runs independent nodes together and each node after its dependencies",
          "[plan][dag]") {
  START_DAEMON(d, {"--workers", "2"});
  Client c(d.socket());
  std::string a = d.dir() + "/a", b = d.dir() + "/b";
  json::object nodes{
      // a and b each wait for the other's file: they finish only if they run together.
      {"a", {{"command", "touch " + a + "; " + after_file(b, "a")}}},
      {"b", {{"command", "touch " + b + "; " + after_file(a, "b")}}},
      {"both", {{"command", "cat " + a + " " + b + " && echo both"}, {"depends_on", {"a", "b"}}}},
      {"fails", {{"command", "exit 9"}}},
      {"after_fail", {{"command", "echo never"}, {"depends_on", {"fails"}}}},
      {"after_skip", {{"command", "echo never"}, {"depends_on", {"after_fail", "both"}}}}};
  json::object r = run_plan(c, "execute_dag", {{"nodes", nodes}});
  CHECK(str(node(r, "a"), "stdout") == "a\n");
  CHECK(str(node(r, "b"), "stdout") == "b\n");
  CHECK(str(node(r, "both"), "stdout") == "both\n");
  CHECK(num(node(r, "both"), "started_at_ms") >= num(node(r, "a"), "finished_at_ms"));
  CHECK(num(node(r, "fails"), "exit_code") == 9);
  CHECK(str(node(r, "after_fail"), "status") == "skipped");
  CHECK_THAT(str(node(r, "after_fail"), "error"), Contains("step fails failed"));
  CHECK(str(node(r, "after_skip"), "status") == "skipped");
  CHECK_THAT(str(node(r, "after_skip"), "error"), Contains("after_fail was skipped"));
  CHECK(r.at("success") == false);

  SECTION("fail_fast starts no node after a failure") {
    // `slow` ends only after `later` was skipped: its end cannot come first.
    const std::string gate = d.dir() + "/gate";
    REQUIRE(c.send_line(
        Client::request("ff", "execute_dag",
                        {{"nodes",
                          {{"bad", {{"command", "exit 1"}}},
                           {"later", {{"command", "echo never"}, {"depends_on", {"slow"}}}},
                           {"slow", {{"command", until_file(gate)}}}}},
                         {"fail_fast", true}})));
    Client other(d.socket());
    auto later_skipped = [&] {
      json::object listed = result_of(other.call("job_list", {}));
      for (const json::value& job : listed.at("jobs").as_array())
        if (const json::value* steps = job.as_object().if_contains("steps"))
          for (const json::value& s : steps->as_array())
            if (s.at("name") == "later" && s.at("state") == "skipped") return true;
      return false;
    };
    CHECK(wait_until(later_skipped, 10, 0.02));
    open_gate(gate);
    auto answer = c.read_json(60);
    REQUIRE(answer);
    json::object ff = result_of(answer->as_object());
    CHECK(str(node(ff, "bad"), "status") == "exited");
    CHECK(str(node(ff, "slow"), "status") == "exited");  // already running: not stopped
    CHECK(str(node(ff, "later"), "status") == "skipped");
  }
  SECTION("a cycle, an unknown dependency or a duplicate name is -32602 naming the culprit") {
    json::object e =
        error_of(c.call("execute_dag", {{"nodes",
                                         {{"x", {{"command", "true"}, {"depends_on", {"y"}}}},
                                          {"y", {{"command", "true"}, {"depends_on", {"z"}}}},
                                          {"z", {{"command", "true"}, {"depends_on", {"x"}}}}}}}));
    CHECK(num(e, "code") == -32602);
    CHECK_THAT(str(e, "message"), Contains("cycle") && Contains("x -> y -> z -> x"));
    e = error_of(
        c.call("execute_dag", {{"nodes", {{"x", {{"command", "true"}, {"depends_on", {"x"}}}}}}}));
    CHECK_THAT(str(e, "message"), Contains("cycle: x -> x"));
    e = error_of(c.call("execute_dag",
                        {{"nodes", {{"x", {{"command", "true"}, {"depends_on", {"ghost"}}}}}}}));
    CHECK(num(e, "code") == -32602);
    CHECK_THAT(str(e, "message"), Contains("\"ghost\""));
    REQUIRE(c.send_line(R"({"jsonrpc":"2.0","id":"dup","method":"execute_dag","params":)"
                        R"({"nodes":{"n1":{"command":"true"},"n1":{"command":"false"}}}})"));
    auto dup = c.read_json(10);
    REQUIRE(dup);
    json::object de = error_of(dup->as_object());
    CHECK(num(de, "code") == -32602);
    CHECK_THAT(str(de, "message"), Contains("\"n1\" is given twice"));
    e = error_of(c.call("execute_dag", {{"nodes", {{"bad name", {{"command", "true"}}}}}}));
    CHECK_THAT(str(e, "message"), Contains("bad name"));
    e = error_of(c.call("execute_dag", {{"nodes", {{"x", {{"command", 5}}}}}}));
    CHECK_THAT(str(e, "message"), Contains("node \"x\"") && Contains("\"command\""));
    json::object many;
    for (int i = 0; i < 65; ++i) many["n" + std::to_string(i)] = {{"command", "true"}};
    e = error_of(c.call("execute_dag", {{"nodes", many}}));
    CHECK_THAT(str(e, "message"), Contains("at most 64"));
    e = error_of(c.call("execute_chain", {{"commands", json::array{}}}));
    CHECK_THAT(str(e, "message"), Contains("\"commands\""));
    e = error_of(c.call("execute_chain", {{"commands", json::array{json::object{}}}}));
    CHECK_THAT(str(e, "message"), Contains("\"commands\"[0]") && Contains("\"command\""));
  }
  stop_cleanly(d);
}

TEST_CASE("a detached plan shows per-step status and can be waited for, read and cancelled",
          "[plan][detached]") {
  START_DAEMON(d, {"--workers", "2"});
  Client c(d.socket());
  json::object sub = result_of(c.call(
      "job_submit", {{"strategy", "chain"},
                     {"job_id", "deploy"},
                     {"commands", json::array{json::object{{"command", "echo build"}},
                                              json::object{{"command", "echo test; sleep 0.3"}},
                                              json::object{{"command", "echo ship"}}}}}));
  CHECK(str(sub, "job_id") == "deploy");
  CHECK(sub.at("steps") == json::array{"deploy/0", "deploy/1", "deploy/2"});
  json::object st = result_of(c.call("job_status", {{"job_id", "deploy"}}));
  CHECK(str(st, "strategy") == "chain");
  CHECK(st.at("steps").as_array().size() == 3);
  json::object done = result_of(c.call("job_wait", {{"job_id", "deploy"}, {"timeout", 20}}));
  CHECK(str(done, "state") == "exited");
  CHECK(done.at("success") == true);
  CHECK(str(step(done, 2), "stdout") == "ship\n");
  json::object out = result_of(c.call("job_output", {{"job_id", "deploy/1"}}));
  CHECK(str(out, "data") == "test\n");
  json::object e = error_of(c.call("job_output", {{"job_id", "deploy"}}));
  CHECK_THAT(str(e, "message"), Contains("deploy/0"));
  CHECK(num(error_of(c.call("job_forget", {{"job_id", "deploy/0"}})), "code") == -32005);

  // Cancel: the running step is stopped, the waiting ones are skipped.
  result_of(
      c.call("job_submit", {{"strategy", "dag"},
                            {"job_id", "long"},
                            {"nodes",
                             {{"first", {{"command", "sleep 30"}}},
                              {"second", {{"command", "echo x"}, {"depends_on", {"first"}}}}}}}));
  REQUIRE(wait_until(
      [&] {
        json::object s = result_of(c.call("job_status", {{"job_id", "long/first"}}));
        return str(s, "state") == "running";
      },
      10));
  json::object cancel = result_of(c.call("job_cancel", {{"job_id", "long"}}));
  CHECK(cancel.at("cancelled") == true);
  json::object cancelled = result_of(c.call("job_wait", {{"job_id", "long"}, {"timeout", 20}}));
  CHECK(str(cancelled, "state") == "cancelled");
  CHECK(str(node(cancelled, "first"), "status") == "cancelled");
  CHECK(str(node(cancelled, "second"), "status") == "skipped");
  // Forgetting a plan forgets its steps.
  CHECK(result_of(c.call("job_forget", {{"job_id", "deploy"}})).at("forgotten") == true);
  json::object listed = result_of(c.call("job_list", {}));
  for (const json::value& j : listed.at("jobs").as_array())
    CHECK_THAT(str(j.as_object(), "job_id"), !Contains("deploy"));
  stop_cleanly(d);
}

TEST_CASE("steps of a plan with the longest id and names are found by their ids",
          "[plan][detached]") {
  START_DAEMON(d, {"--workers", "1", "--max-timeout", "5"});
  Client c(d.socket());
  const std::string plan(64, 'p'), name(64, 'n');
  json::object sub = result_of(
      c.call("job_submit",
             {{"strategy", "dag"},
              {"job_id", plan},
              {"nodes", {{name, {{"command", "echo long"}}}, {"b", {{"command", "true"}}}}}}));
  const std::string step_id = plan + "/" + name;  // 129 bytes
  CHECK(sub.at("steps").as_array().front() == json::value(step_id));
  json::object done = result_of(c.call("job_wait", {{"job_id", step_id}, {"timeout", 20}}));
  CHECK(str(done, "stdout") == "long\n");
  CHECK(str(result_of(c.call("job_output", {{"job_id", step_id}})), "data") == "long\n");
  // A client's own id stays at most 64 bytes.
  json::object e = error_of(c.call("job_submit", {{"command", "true"}, {"job_id", plan + "p"}}));
  CHECK(num(e, "code") == -32602);
  CHECK_THAT(str(e, "message"), Contains("64 bytes"));
  // A step refused at submission is named.
  json::object refused = error_of(
      c.call("execute_chain",
             {{"commands", json::array{json::object{{"command", "true"}},
                                       json::object{{"command", "true"}, {"timeout", 9}}}}}));
  CHECK(num(refused, "code") == -32602);
  CHECK_THAT(str(refused, "message"), Contains("step 1"));
  stop_cleanly(d);
}

TEST_CASE("an attached plan is cancelled when its client leaves", "[plan][cancel]") {
  START_DAEMON(d, {"--workers", "1"});
  {
    Client c(d.socket());
    REQUIRE(c.send_line(Client::request(
        1, "execute_chain",
        {{"commands", json::array{json::object{{"command", "sleep 30 # plan-marker"}},
                                  json::object{{"command", "echo never"}}}}})));
    REQUIRE(wait_until([&] { return !pids_matching("plan-marker").empty(); }, 10));
  }
  CHECK(wait_until([&] { return pids_matching("plan-marker").empty(); }, 10));
  Client c(d.socket());
  CHECK(wait_until([&] { return result_of(c.call("job_list", {})).at("jobs").as_array().empty(); },
                   10));
  stop_cleanly(d);
}

TEST_CASE("a detached plan goes on after a frontend crash", "[plan][crash]") {
  START_DAEMON(d, {"--workers", "2"});
  Client c(d.socket());
  std::string gate = d.dir() + "/gate";
  result_of(
      c.call("job_submit", {{"strategy", "dag"},
                            {"job_id", "survive"},
                            {"nodes",
                             {{"wait", {{"command", after_file(gate, "opened")}}},
                              {"then", {{"command", "echo then"}, {"depends_on", {"wait"}}}}}}}));
  REQUIRE(wait_until(
      [&] {
        return str(result_of(c.call("job_status", {{"job_id", "survive/wait"}})), "state") ==
               "running";
      },
      10));
  pid_t frontend = d.frontend_pid();
  ::kill(frontend, SIGKILL);
  Client c2 = Client::connect_retry(d.socket(), 10);
  REQUIRE(wait_until([&] { return d.frontend_pid() != 0 && d.frontend_pid() != frontend; }, 10));
  json::object st = result_of(c2.call("job_status", {{"job_id", "survive/then"}}));
  CHECK(str(st, "state") == "waiting");
  execute(c2, {{"command", "touch " + gate}});
  json::object r = result_of(c2.call("job_wait", {{"job_id", "survive"}, {"timeout", 20}}));
  CHECK(str(r, "state") == "exited");
  CHECK(str(node(r, "wait"), "stdout") == "opened\n");
  CHECK(str(node(r, "then"), "stdout") == "then\n");
  stop_cleanly(d);
}

TEST_CASE("a plan refused part-way leaves nothing behind that a later plan could inherit",
          "[plan]") {
  START_DAEMON(d, {"--workers", "2"});
  Client c(d.socket());
  // The second step names no session: refused after the first step was written.
  json::object e = error_of(c.call(
      "execute_chain",
      {{"commands", json::array{json::object{{"command", "echo one"}},
                                json::object{{"command", "echo two"}, {"session_id", "nope"}}}}}));
  CHECK(num(e, "code") == -32001);
  CHECK(result_of(c.call("job_list", {})).at("jobs").as_array().empty());
  // The next plan (same record indices) runs in its own order, with its own steps only.
  json::object r =
      run_plan(c, "execute_dag",
               {{"nodes",
                 {{"late", {{"command", "cat " + d.dir() + "/early"}, {"depends_on", {"early"}}}},
                  {"early", {{"command", "echo first > " + d.dir() + "/early"}}}}}});
  CHECK(r.at("success") == true);
  CHECK(str(node(r, "late"), "stdout") == "first\n");
  CHECK(r.at("results").as_object().size() == 2);
  stop_cleanly(d);
}

TEST_CASE("with --retain-seconds 0 strategies and job_wait still get their answers",
          "[plan][retention]") {
  START_DAEMON(d, {"--workers", "2", "--retain-seconds", "0"});
  Client c(d.socket());
  json::object r = run_plan(c, "execute_chain",
                            {{"commands", json::array{json::object{{"command", "echo a"}},
                                                      json::object{{"command", "echo b"}}}}});
  CHECK(str(step(r, 1), "stdout") == "b\n");
  Client w(d.socket());
  // The job ends only once the wait is parked (the daemon has read it).
  const std::string gate = d.dir() + "/gate";
  REQUIRE(w.send_line(Client::request(
      1, "job_submit", {{"command", until_file(gate) + "; echo late"}, {"job_id", "gone-soon"}})));
  REQUIRE(w.read_json(10));
  REQUIRE(w.send_line(Client::request(2, "job_wait", {{"job_id", "gone-soon"}, {"timeout", 10}})));
  REQUIRE(wait_until([&] { return w.unread_by_peer() == 0; }, 10));
  open_gate(gate);
  auto answer = w.read_json(30);
  REQUIRE(answer);
  CHECK(answer->as_object().at("id") == 2);
  json::object waited = result_of(answer->as_object());
  CHECK(str(waited, "stdout") == "late\n");
  stop_cleanly(d);
}

TEST_CASE("SIGTERM during a chain answers it, the steps not yet started skipped",
          "[plan][shutdown]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  // The first step ends only once the daemon drains.
  const std::string gate = d.dir() + "/gate";
  REQUIRE(c.send_line(
      Client::request(7, "execute_chain",
                      {{"commands", json::array{json::object{{"command", after_file(gate, "one")}},
                                                json::object{{"command", "echo two"}}}}})));
  REQUIRE(wait_until([&] { return !pids_matching(gate).empty(); }, 10));
  ::kill(d.pid(), SIGTERM);
  REQUIRE(wait_until([&] { return !file_exists(d.socket()); }, 10));  // it drains
  open_gate(gate);
  auto answer = c.read_json(20);
  REQUIRE(answer);
  json::object r = result_of(answer->as_object());
  CHECK(str(step(r, 0), "stdout") == "one\n");
  CHECK(str(step(r, 1), "status") == "skipped");
  CHECK_THAT(str(step(r, 1), "error"), Contains("shutting down"));
  CHECK(d.wait_exit(20) == 0);
}

TEST_CASE("shell-pool wait on a plan prints every step's output and exits with its status",
          "[plan][cli]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  result_of(c.call("job_submit",
                   {{"strategy", "chain"},
                    {"job_id", "cli-plan"},
                    {"commands", json::array{json::object{{"command", "echo one"}},
                                             json::object{{"command", "echo two >&2; exit 3"}}}}}));
  CliRun r = run_cli({"--socket", d.socket(), "wait", "cli-plan"}, d.dir());
  CHECK(r.exit_code == 1);
  CHECK(r.out == "one\n");
  CHECK_THAT(r.err, Contains("two\n") && Contains("step 1: exited"));
  stop_cleanly(d);
}
