// Remote hosts through the real shell-poold and real OpenSSH servers (one
// sshd per loopback address, each with its own host key, started by
// tests/sshd_fixture.h): key, agent and password logins; every host-key
// policy, a changed key among them; jobs with the fields of local ones
// (args, env, working_dir, stdin, timeout, cancel, output caps, detached
// jobs); fan-out with a refused port; a host that accepts TCP and never
// speaks; a killed and a stopped sshd; 20 MB on both streams; stdin through
// a rekey; a MaxSessions 2 server under 6 jobs; connection reuse from the
// sshd log; host_remove; the remote worker's death; kills on a full host and
// after a lost connection; an agent that never answers.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "tests/daemon_harness.h"
#include "tests/sshd_fixture.h"

using namespace sp::test;
using Catch::Contains;

namespace {

// The daemon's flags for these tests: its own known_hosts in `dir`, and no
// user's file (root's ~/.ssh/known_hosts is not the test's). Debug logs: a
// failure shows each job's steps on the host.
std::vector<std::string> remote_flags(const std::string& dir, std::vector<std::string> more = {}) {
  std::vector<std::string> f{"--workers",          "1",    "--known-hosts", dir + "/known_hosts",
                             "--user-known-hosts", "none", "--log-level",   "debug"};
  f.insert(f.end(), more.begin(), more.end());
  return f;
}

json::object host_params(const std::string& name, const Sshd& s, const SshKeyPair& key,
                         const std::string& policy = "accept-new") {
  return {{"name", name},
          {"address", s.address()},
          {"port", s.port()},
          {"user", "root"},
          {"auth", {{"key_file", key.private_path}}},
          {"host_key", {{"policy", policy}}},
          {"connect_timeout_ms", 5000},
          {"keepalive_ms", 1000}};
}

json::object run_on(Client& c, const std::string& host, const std::string& line,
                    json::object more = {}) {
  json::object p{{"command", line}, {"host", host}};
  for (auto& [k, v] : more) p[k] = v;
  return execute(c, p);
}

json::object error_object(const json::object& result) {
  REQUIRE(result.contains("error"));
  REQUIRE(result.at("error").is_object());
  return result.at("error").as_object();
}

// The live processes whose command line holds `marker` (remote commands run
// on this machine, under the test's sshd).
bool none_left(const std::string& marker, double timeout_s = 10) {
  return wait_until([&] { return pids_matching(marker).empty(); }, timeout_s, 0.05);
}

}  // namespace

TEST_CASE("a key login runs jobs with the fields of local ones and reuses its connection",
          "[remote]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "id");
  Sshd s({.address = "127.0.0.2"}, {key.public_line});
  START_DAEMON(d, remote_flags(dir.path()));
  Client c(d.socket());
  json::object added = result_of(c.call("host_add", host_params("web1", s, key)));
  CHECK(str(added, "name") == "web1");
  CHECK(str(added.at("auth").as_object(), "key_file") == key.private_path);

  json::object r = run_on(c, "web1", "echo out; echo err >&2; exit 3");
  CHECK(str(r, "stdout") == "out\n");
  CHECK(str(r, "stderr") == "err\n");
  CHECK(num(r, "exit_code") == 3);
  CHECK(str(r, "status") == "exited");
  CHECK(str(r, "host") == "web1");
  CHECK(r.at("error").is_null());

  // args without a shell, env, working_dir, stdin.
  json::object a = execute(
      c, {{"command", "printf"}, {"args", json::array{"%s|%s", "a b", "$HOME"}}, {"host", "web1"}});
  CHECK(str(a, "stdout") == "a b|$HOME");
  json::object e = run_on(c, "web1", "echo \"$GREETING\"; pwd; cat",
                          {{"env", {{"GREETING", "hi 'there'"}}},
                           {"working_dir", dir.path()},
                           {"stdin", "from stdin"}});
  CHECK(str(e, "stdout") == "hi 'there'\n" + dir.path() + "\nfrom stdin");
  json::object missing = run_on(c, "web1", "true", {{"working_dir", "/nonexistent-sp"}});
  CHECK(num(missing, "exit_code") == 127);
  // An output cap, as for local jobs.
  json::object big =
      run_on(c, "web1", "head -c 100000 /dev/zero | tr '\\0' x", {{"max_output_bytes", 1000}});
  CHECK(str(big, "stdout").size() == 1000);
  CHECK(big.at("truncated") == true);

  // Every job went over one connection: sshd saw one login.
  for (int i = 0; i < 5; ++i) CHECK(str(run_on(c, "web1", "echo $i"), "status") == "exited");
  CHECK(s.count_in_log("Accepted publickey") == 1);

  json::object listed = result_of(c.call("host_list", json::object{}));
  REQUIRE(listed.at("hosts").as_array().size() == 1);
  json::object h = listed.at("hosts").as_array()[0].as_object();
  CHECK(num(h, "connections") == 1);
  CHECK(str(h, "fingerprint") == s.host_key_fingerprint());
  CHECK(str(h, "key_type") == "ssh-ed25519");
  CHECK(num(h, "jobs_started") >= 10);

  json::object check = result_of(c.call("host_check", json::object{{"name", "web1"}}));
  CHECK(check.at("ok") == true);
  CHECK(str(check, "fingerprint") == s.host_key_fingerprint());
  CHECK_THAT(str(check, "banner"), Contains("OpenSSH"));
  CHECK(check.at("auth_methods").as_array() == json::array{"publickey"});
  CHECK(check.at("latency_ms").as_double() > 0);

  // A command that closes its output and runs on past connect_timeout_ms:
  // the close waits for its exit, which is no stalled step. (2 s: the login,
  // which it also bounds, must fit in it on a loaded sanitizer run.)
  json::object quick = host_params("web1-quick", s, key);
  quick["connect_timeout_ms"] = 2000;
  REQUIRE(c.call("host_add", quick).contains("result"));
  json::object quiet =
      run_on(c, "web1-quick", "exec >/dev/null 2>&1 </dev/null; sleep 2.6322; exit 4");
  CHECK(str(quiet, "status") == "exited");
  CHECK(num(quiet, "exit_code") == 4);
  REQUIRE(c.call("host_remove", json::object{{"name", "web1-quick"}}).contains("result"));
}

TEST_CASE("agent and password logins work, and no secret reaches an answer or the log",
          "[remote]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "agentkey", "ed25519", "agent-pass-phrase");
  SshAgent agent;
  agent.add(key);
  Sshd s({.address = "127.0.0.3", .password_auth = true}, {key.public_line});
  START_DAEMON(d, remote_flags(dir.path()));
  Client c(d.socket());

  json::object p = host_params("viaagent", s, key);
  p["auth"] = {{"agent_socket", agent.socket_path()}};
  result_of(c.call("host_add", p));
  CHECK(str(run_on(c, "viaagent", "echo agent"), "stdout") == "agent\n");

  // A passphrase-protected key file, given its passphrase.
  json::object k = host_params("withpass", s, key);
  k["auth"] = {{"key_file", key.private_path}, {"passphrase", "agent-pass-phrase"}};
  result_of(c.call("host_add", k));
  CHECK(str(run_on(c, "withpass", "echo key"), "stdout") == "key\n");

  // A wrong passphrase: the key cannot be loaded.
  k["name"] = "badpass";
  k["auth"] = {{"key_file", key.private_path}, {"passphrase", "wrong-phrase-42"}};
  result_of(c.call("host_add", k));
  json::object bad = run_on(c, "badpass", "echo never");
  CHECK(str(bad, "status") == "failed");
  CHECK(str(bad, "error_code") == "key_load_failed");
  CHECK(str(bad, "error_phase") == "auth");

  if (!SystemUser::available()) {
    WARN("not root: the password login is not tested");
    return;
  }
  SystemUser user;
  json::object pw = host_params("withpassword", s, key);
  pw["user"] = user.name();
  pw["auth"] = {{"password", user.password()}};
  result_of(c.call("host_add", pw));
  CHECK(str(run_on(c, "withpassword", "id -un"), "stdout") == user.name() + "\n");
  pw["name"] = "wrongpassword";
  pw["auth"] = {{"password", "not-the-password"}};
  result_of(c.call("host_add", pw));
  json::object denied = run_on(c, "wrongpassword", "id -un");
  CHECK(str(denied, "error_code") == "auth_failed");
  CHECK_THAT(str(denied, "error"), Contains("tried password"));
  CHECK_THAT(str(denied, "error"), Contains("publickey,password"));

  const std::string listed = json::serialize(c.call("host_list", json::object{}));
  for (const std::string& secret : {user.password(), std::string("agent-pass-phrase")}) {
    CHECK_THAT(listed, !Contains(secret));
    CHECK_THAT(d.log(), !Contains(secret));
  }
}

TEST_CASE("host keys: strict, accept-new, pinned and insecure, and a changed key", "[remote]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "id");
  Sshd s({.address = "127.0.0.4"}, {key.public_line});
  START_DAEMON(d, remote_flags(dir.path()));
  Client c(d.socket());
  const std::string marker = dir.path() + "/ran";

  // strict, unknown: refused with the key's fingerprint; nothing ran.
  result_of(c.call("host_add", host_params("strict", s, key, "strict")));
  json::object unknown = run_on(c, "strict", "touch " + marker);
  CHECK(str(unknown, "status") == "failed");
  CHECK(str(unknown, "error_code") == "hostkey_unknown");
  CHECK(str(unknown, "error_phase") == "hostkey");
  CHECK_THAT(str(unknown, "error"), Contains(s.host_key_fingerprint()));
  CHECK(!file_exists(marker));

  // pinned: the right fingerprint runs, another is refused.
  json::object pinned = host_params("pinned", s, key, "pinned");
  pinned["host_key"] = {{"policy", "pinned"}, {"fingerprint", s.host_key_fingerprint()}};
  result_of(c.call("host_add", pinned));
  CHECK(str(run_on(c, "pinned", "echo ok"), "stdout") == "ok\n");
  pinned["name"] = "mispinned";
  pinned["host_key"] = {{"policy", "pinned"},
                        {"fingerprint", "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}};
  result_of(c.call("host_add", pinned));
  CHECK(str(run_on(c, "mispinned", "touch " + marker), "error_code") == "hostkey_mismatch");

  // accept-new records the key; strict then trusts it.
  result_of(c.call("host_add", host_params("tofu", s, key, "accept-new")));
  CHECK(str(run_on(c, "tofu", "echo first"), "stdout") == "first\n");
  CHECK_THAT(read_file(dir.path() + "/known_hosts"),
             Contains(s.known_hosts_line().substr(0, s.known_hosts_line().rfind(' '))));
  CHECK(str(run_on(c, "strict", "echo now"), "stdout") == "now\n");

  // The server's key changes: accept-new and strict refuse it, the command
  // never runs; insecure runs (and logs that it did not check).
  s.restart_with_new_host_key();
  result_of(c.call("host_remove", json::object{{"name", "tofu"}}));  // drop its pooled connection
  result_of(c.call("host_add", host_params("tofu", s, key, "accept-new")));
  json::object changed = run_on(c, "tofu", "touch " + marker);
  CHECK(str(changed, "error_code") == "hostkey_mismatch");
  CHECK_THAT(str(changed, "error"), Contains(s.host_key_fingerprint()));
  CHECK(!file_exists(marker));
  result_of(c.call("host_add", host_params("loose", s, key, "insecure")));
  CHECK(str(run_on(c, "loose", "echo unchecked"), "stdout") == "unchecked\n");
  CHECK_THAT(d.log(), Contains("not checked"));

  // A user's known_hosts file is consulted (read only).
  TempDir dir2;
  const std::string user_file = dir2.path() + "/user_known_hosts";
  { std::ofstream(user_file) << s.known_hosts_line() << "\n"; }
  TestDaemon d2(std::vector<std::string>{"--workers", "1", "--known-hosts", dir2.path() + "/own",
                                         "--user-known-hosts", user_file});
  REQUIRE(d2.ready());
  Client c2(d2.socket());
  result_of(c2.call("host_add", host_params("fromuser", s, key, "strict")));
  CHECK(str(run_on(c2, "fromuser", "echo known"), "stdout") == "known\n");
  CHECK(!file_exists(dir2.path() + "/own"));
}

TEST_CASE("fan-out to three hosts and a refused port keeps request order", "[remote]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "id");
  Sshd a({.address = "127.0.0.5"}, {key.public_line});
  Sshd b({.address = "127.0.0.6"}, {key.public_line});
  Sshd e({.address = "127.0.0.7"}, {key.public_line});
  START_DAEMON(d, remote_flags(dir.path()));
  Client c(d.socket());
  result_of(c.call("host_add", host_params("a", a, key)));
  result_of(c.call("host_add", host_params("b", b, key)));
  result_of(c.call("host_add", host_params("c", e, key)));
  json::object refused = host_params("down", a, key);
  refused["port"] = free_port("127.0.0.5");
  result_of(c.call("host_add", refused));

  json::object r = execute(c, {{"command", "echo $SSH_CONNECTION | cut -d' ' -f3; exit 0"},
                               {"hosts", json::array{"c", "down", "a", "b"}},
                               {"max_parallel", 2}});
  json::array results = r.at("results").as_array();
  REQUIRE(results.size() == 4);
  CHECK(str(results[0].as_object(), "stdout") == "127.0.0.7\n");
  CHECK(str(results[2].as_object(), "stdout") == "127.0.0.5\n");
  CHECK(str(results[3].as_object(), "stdout") == "127.0.0.6\n");
  json::object down = results[1].as_object();
  CHECK(str(down, "host") == "down");
  CHECK(str(down, "status") == "failed");
  json::object err = error_object(down);
  CHECK(str(err, "code") == "connect_refused");
  CHECK(str(err, "phase") == "connect");
  json::object summary = r.at("summary").as_object();
  CHECK(num(summary, "total") == 4);
  CHECK(num(summary, "succeeded") == 3);
  CHECK(num(summary, "errors") == 1);
  CHECK(num(summary, "worst_exit_code") == 0);

  // Streaming: every chunk names its host; the end has the summary.
  json::value id = c.next_id();
  c.send_line(Client::request(
      id, "execute_stream",
      json::object{{"command", "echo from-$(hostname)"}, {"hosts", json::array{"a", "b"}}}));
  Streamed st = read_stream(c, id, 30);
  REQUIRE(st.ok);
  CHECK(count_of(st.out, "from-") == 2);
  CHECK(num(st.exit.at("summary").as_object(), "succeeded") == 2);

  // fail_fast: after the failed host, no other starts.
  json::object ff = execute(c, {{"command", "exit 4"},
                                {"hosts", json::array{"a", "b", "c"}},
                                {"max_parallel", 1},
                                {"fail_fast", true}});
  json::array fr = ff.at("results").as_array();
  CHECK(num(fr[0].as_object(), "exit_code") == 4);
  CHECK(str(fr[1].as_object(), "status") == "skipped");
  CHECK(str(fr[2].as_object(), "status") == "skipped");

  // Detached: one job per host, under one id.
  json::object sub = result_of(c.call(
      "job_submit", json::object{{"command", "echo detached"}, {"hosts", json::array{"a", "b"}}}));
  json::array jobs = sub.at("jobs").as_array();
  REQUIRE(jobs.size() == 2);
  for (const auto& j : jobs) {
    json::object w = result_of(c.call(
        "job_wait", json::object{{"job_id", str(j.as_object(), "job_id")}, {"timeout", 20}}));
    CHECK(str(w, "stdout") == "detached\n");
  }

  // An unknown host is the whole call's error.
  json::object unknown =
      c.call("execute", json::object{{"command", "true"}, {"hosts", json::array{"a", "nope"}}});
  CHECK(num(error_of(unknown), "code") == -32001);
}

TEST_CASE("a silent host, a killed sshd and a stopped sshd end with their own errors", "[remote]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "id");
  START_DAEMON(d, remote_flags(dir.path()));
  Client c(d.socket());

  // A host that accepts TCP and never speaks: login_timeout at connect_timeout_ms.
  RawTcpSilent silent("127.0.0.8");
  json::object p{{"name", "silent"},
                 {"address", silent.address()},
                 {"port", silent.port()},
                 {"user", "root"},
                 {"auth", {{"key_file", key.private_path}}},
                 {"connect_timeout_ms", 700}};
  result_of(c.call("host_add", p));
  auto start = Clock::now();
  json::object quiet = run_on(c, "silent", "true");
  CHECK(str(quiet, "error_code") == "login_timeout");
  CHECK(str(quiet, "error_phase") == "handshake");
  CHECK(seconds_since(start) < 5);  // 700 ms, once retried

  // sshd killed under a running command: the job ends lost, connection_lost.
  Sshd s({.address = "127.0.0.9"}, {key.public_line});
  // Keepalives far apart: kill_all() stops sshd's processes before it kills
  // them, which may take seconds on a loaded machine; a keepalive_timeout
  // then would be right, but is not what this case checks.
  json::object dying = host_params("dying", s, key);
  dying["keepalive_ms"] = 20000;
  result_of(c.call("host_add", dying));
  const std::string gate = dir.path() + "/started";
  json::value id = c.next_id();
  c.send_line(Client::request(
      id, "execute",
      json::object{{"command", "touch " + gate + "; sleep 60 # sp-dying"}, {"host", "dying"}}));
  REQUIRE(wait_until([&] { return file_exists(gate); }, 20));
  s.kill_all();
  auto lost = c.read_json(20);
  REQUIRE(lost);
  json::object lr = result_of(lost->as_object());
  CHECK(str(lr, "status") == "lost");
  CHECK(str(lr, "error_code") == "connection_lost");
  CHECK(str(lr, "error_phase") == "run");

  // A stopped sshd (its TCP still ACKs): keepalives find it.
  Sshd t({.address = "127.0.0.10"}, {key.public_line});
  result_of(c.call("host_add", host_params("frozen", t, key)));
  const std::string gate2 = dir.path() + "/started2";
  json::value id2 = c.next_id();
  c.send_line(Client::request(
      id2, "execute",
      json::object{{"command", "touch " + gate2 + "; sleep 60 # sp-frozen"}, {"host", "frozen"}}));
  REQUIRE(wait_until([&] { return file_exists(gate2); }, 20));
  t.stop();
  auto hung = c.read_json(20);
  REQUIRE(hung);
  json::object hr = result_of(hung->as_object());
  CHECK(str(hr, "status") == "lost");
  CHECK(str(hr, "error_code") == "keepalive_timeout");
  t.cont();
}

TEST_CASE("timeout and cancel kill the remote process group and free the channel", "[remote]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "id");
  Sshd s({.address = "127.0.0.11"}, {key.public_line});
  START_DAEMON(d, remote_flags(dir.path()));
  Client c(d.socket());
  result_of(c.call("host_add", host_params("h", s, key)));

  // The command and a child of its own, both gone after the timeout.
  json::object t = run_on(c, "h", "sleep 4300 & sleep 4301 # sp-timeout-marker; wait",
                          {{"timeout", 1}, {"kill_grace_ms", 500}});
  CHECK(str(t, "status") == "timed_out");
  CHECK(t.at("timed_out") == true);
  CHECK(none_left("sleep 430"));

  // A detached job, cancelled.
  json::object sub = result_of(c.call(
      "job_submit", json::object{{"command", "echo started; exec sleep 4302"}, {"host", "h"}}));
  const std::string job = str(sub, "job_id");
  REQUIRE(wait_until(
      [&] {
        json::object o = result_of(c.call("job_output", json::object{{"job_id", job}}));
        return str(o, "data").find("started") != std::string::npos;
      },
      20, 0.05));
  // A signal without a name (a real-time one) goes by number; USR1 by name.
  const pid_t remote = d.remote_worker_pid();
  result_of(c.call("job_signal", json::object{{"job_id", job}, {"signal", 40}}));
  result_of(c.call("job_cancel", json::object{{"job_id", job}}));
  json::object w = result_of(c.call("job_wait", json::object{{"job_id", job}, {"timeout", 20}}));
  CHECK(str(w, "state") == "cancelled");
  CHECK(none_left("sleep 4302"));
  CHECK(d.remote_worker_pid() == remote);

  // The freed channels serve the next jobs on the same connection.
  CHECK(str(run_on(c, "h", "echo again"), "stdout") == "again\n");
  CHECK(s.count_in_log("Accepted publickey") == 1);
  json::object h =
      result_of(c.call("host_list", json::object{})).at("hosts").as_array()[0].as_object();
  CHECK(wait_until(
      [&] {
        json::object now =
            result_of(c.call("host_list", json::object{})).at("hosts").as_array()[0].as_object();
        return num(now, "busy_channels") == 0;
      },
      10));
}

TEST_CASE("remote output read while no ring is free waits for one and is all shown",
          "[remote][output]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "id");
  Sshd s({.address = "127.0.0.28"}, {key.public_line});
  START_DAEMON(d, remote_flags(dir.path(), {"--output-rings", "1"}));
  const std::string go1 = dir.path() + "/go1", go2 = dir.path() + "/go2";
  const std::string said = dir.path() + "/said";
  auto until = [](const std::string& f) { return "until [ -e " + f + " ]; do sleep 0.02; done"; };
  Client c(d.socket()), st(d.socket()), m(d.socket());
  result_of(c.call("host_add", host_params("h", s, key)));
  // A local job prints, so it takes the only ring, until go1 exists.
  REQUIRE(c.send_line(
      Client::request(1, "execute", json::object{{"command", "echo one; " + until(go1)}})));
  REQUIRE(wait_until(
      [&] {
        std::string text = str(result_of(m.call("metrics", nullptr)), "text");
        return text.find("shell_pool_output_rings{state=\"held\"} 1") != std::string::npos;
      },
      20));
  // A short remote job: its output is read, held, and then its channel
  // ends; the answer waits for a ring rather than lose the held bytes. Its
  // command is over, so its timeout, which passes meanwhile, stops nothing.
  const std::string three = dir.path() + "/three";
  REQUIRE(c.send_line(Client::request(2, "execute",
                                      json::object{{"command", "echo three; touch " + three},
                                                   {"host", "h"},
                                                   {"timeout", 3},
                                                   {"kill_grace_ms", 200}})));
  // A streamed remote job prints once and goes quiet until go2 exists.
  REQUIRE(st.send_line(Client::request(
      "q", "execute_stream",
      json::object{{"command", "echo ready; touch " + said + "; " + until(go2) + "; echo end"},
                   {"host", "h"}})));
  REQUIRE(wait_until([&] { return file_exists(said) && file_exists(three); }, 20));
  // Job 2 waits for a ring, past its timeout (which began before `three`).
  CHECK_FALSE(c.read_json(3.2));
  { std::ofstream(go1).put('x'); }
  // Job 1 ends; the ring goes to job 2 or to the streamed job first. Either
  // way "ready" shows before go2 exists (the streamed job says no more), and
  // job 2's answer has its line.
  auto chunk = st.read_json(20);
  INFO("line: " << st.last_line());
  REQUIRE(chunk);
  json::object r = result_of(chunk->as_object());
  CHECK(str(r, "type") == "stdout");
  CHECK(str(r, "data") == "ready\n");
  { std::ofstream(go2).put('x'); }
  Streamed rest = read_stream(st, "q", 20);
  INFO(rest.problem);
  REQUIRE(rest.ok);
  CHECK(rest.out == "end\n");
  std::map<int64_t, std::string> out;
  for (int i = 0; i < 2; ++i) {
    auto v = c.read_json(20);
    REQUIRE(v);
    json::object answer = result_of(v->as_object());
    CHECK(str(answer, "status") == "exited");
    out[v->as_object().at("id").as_int64()] = str(answer, "stdout");
  }
  CHECK(out == std::map<int64_t, std::string>{{1, "one\n"}, {2, "three\n"}});
}

TEST_CASE("20 MB on both streams at once, and stdin through a rekey", "[remote]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "id");
  Sshd s({.address = "127.0.0.12", .rekey_limit = "1M"}, {key.public_line});
  START_DAEMON(d, remote_flags(dir.path(), {"--max-output", "33554432", "--max-line", "16777216"}));
  Client c(d.socket());
  result_of(c.call("host_add", host_params("bulk", s, key)));

  json::object both = run_on(
      c, "bulk",
      "head -c 20000000 /dev/zero | tr '\\0' o & head -c 20000000 /dev/zero | tr '\\0' e >&2; wait",
      {});
  CHECK(str(both, "status") == "exited");
  CHECK(str(both, "stdout").size() == 20000000);
  CHECK(str(both, "stderr").size() == 20000000);
  CHECK(both.at("truncated") == false);

  // 6 MB of stdin across several key re-exchanges (RekeyLimit 1M).
  const std::string input = random_bytes(6 << 20, 7);
  json::object in =
      run_on(c, "bulk", "cksum", {{"stdin", base64(input)}, {"stdin_encoding", "base64"}});
  ToolRun local = run_tool({"/usr/bin/cksum"}, dir.path(), {}, 30, input);
  CHECK(str(in, "stdout") == local.out);
  CHECK(s.count_in_log("Accepted publickey") == 1);
}

TEST_CASE("a MaxSessions 2 server takes 6 concurrent jobs over more connections", "[remote]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "id");
  Sshd s({.address = "127.0.0.13", .max_sessions = 2}, {key.public_line});
  START_DAEMON(d, remote_flags(dir.path()));
  Client c(d.socket());
  json::object p = host_params("narrow", s, key);
  p["max_connections"] = 4;
  result_of(c.call("host_add", p));
  const std::string gate = dir.path() + "/go";
  std::vector<json::value> ids;
  for (int i = 0; i < 6; ++i) {
    ids.push_back(c.next_id());
    c.send_line(Client::request(
        ids.back(), "execute",
        json::object{{"command", until_file(gate, 30, 0.05) + "; echo done"}, {"host", "narrow"}}));
  }
  // All six run at once (3 connections of 2 channels), then end well.
  REQUIRE(wait_until(
      [&] {
        json::object h =
            result_of(c.call("host_list", json::object{})).at("hosts").as_array()[0].as_object();
        return num(h, "busy_channels") == 6;
      },
      30, 0.05));
  json::object h =
      result_of(c.call("host_list", json::object{})).at("hosts").as_array()[0].as_object();
  CHECK(num(h, "channel_cap") == 2);
  CHECK(num(h, "connections") == 3);
  open_gate(gate);
  int done = 0;
  for (int i = 0; i < 6; ++i) {
    auto got = c.read_json(30);
    REQUIRE(got);
    json::object r = result_of(got->as_object());
    done += str(r, "stdout") == "done\n";
  }
  CHECK(done == 6);
}

TEST_CASE(
    "host_remove waits for force under running jobs; the remote worker's death loses its jobs",
    "[remote]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "id");
  Sshd s({.address = "127.0.0.14"}, {key.public_line});
  START_DAEMON(d, remote_flags(dir.path()));
  Client c(d.socket());
  result_of(c.call("host_add", host_params("h", s, key)));
  const std::string gate = dir.path() + "/started";
  json::value id = c.next_id();
  c.send_line(Client::request(
      id, "execute",
      json::object{{"command", "touch " + gate + "; exec sleep 4303"}, {"host", "h"}}));
  REQUIRE(wait_until([&] { return file_exists(gate); }, 20));
  json::object busy = c.call("host_remove", json::object{{"name", "h"}});
  CHECK(num(error_of(busy), "code") == -32005);
  json::object forced =
      result_of(c.call("host_remove", json::object{{"name", "h"}, {"force", true}}));
  CHECK(num(forced, "jobs_ended") == 1);
  auto ended = c.read_json(20);
  REQUIRE(ended);
  CHECK(str(result_of(ended->as_object()), "error_code") == "host_removed");
  CHECK(none_left("sleep 4303"));
  CHECK(result_of(c.call("host_list", json::object{})).at("hosts").as_array().empty());

  // The remote worker killed under a running job: it ends lost, the worker
  // comes back and serves the next job; the local workers never noticed.
  result_of(c.call("host_add", host_params("h", s, key)));
  const std::string gate2 = dir.path() + "/started2";
  json::value id2 = c.next_id();
  c.send_line(Client::request(
      id2, "execute",
      json::object{{"command", "touch " + gate2 + "; exec sleep 4304"}, {"host", "h"}}));
  REQUIRE(wait_until([&] { return file_exists(gate2); }, 20));
  const std::vector<pid_t> workers = d.worker_pids();
  pid_t remote = d.remote_worker_pid();
  REQUIRE(remote > 0);
  ::kill(remote, SIGKILL);
  auto lost = c.read_json(20);
  REQUIRE(lost);
  CHECK(str(result_of(lost->as_object()), "status") == "lost");
  REQUIRE(
      wait_until([&] { return d.remote_worker_pid() > 0 && d.remote_worker_pid() != remote; }, 20));
  CHECK(str(run_on(c, "h", "echo back"), "stdout") == "back\n");
  CHECK(d.worker_pids() == workers);
}

TEST_CASE("host methods refuse bad params clearly", "[remote]") {
  TempDir dir;
  Sshd s({.address = "127.0.0.15"});
  START_DAEMON(d, remote_flags(dir.path()));
  Client c(d.socket());
  auto code = [&](std::string_view method, json::object params) {
    return num(error_of(c.call(method, params)), "code");
  };
  json::object base{{"name", "x"},
                    {"address", s.address()},
                    {"port", s.port()},
                    {"user", "root"},
                    {"host_key", {{"policy", "accept-new"}}},
                    {"auth", {{"key_file", "/nonexistent/key"}}}};
  auto with = [&](std::string_view k, json::value v) {
    json::object p = base;
    p[k] = v;
    return p;
  };
  CHECK(code("host_add", with("name", "bad name")) == -32602);
  CHECK(code("host_add", with("port", 70000)) == -32602);
  CHECK(code("host_add", with("auth", json::object{{"key_file", "relative"}})) == -32602);
  CHECK(code("host_add", with("auth", json::object{{"password", "p"}, {"key_file", "/k"}})) ==
        -32602);
  CHECK(code("host_add", with("host_key", json::object{{"policy", "trusting"}})) == -32602);
  CHECK(code("host_add", with("host_key", json::object{{"policy", "pinned"}})) == -32602);
  CHECK(code("host_add", with("keepalive_ms", 10)) == -32602);
  CHECK(code("execute", json::object{{"command", "true"}, {"host", "nope"}}) == -32001);
  CHECK(code("host_remove", json::object{{"name", "nope"}}) == -32001);
  CHECK(code("host_check", json::object{{"name", "nope"}}) == -32001);
  result_of(c.call("host_add", base));
  CHECK(code("host_add", base) == -32005);
  CHECK(code("execute", json::object{{"command", "true"}, {"host", "x"}, {"pty", true}}) == -32602);
  CHECK(code("execute",
             json::object{{"command", "true"}, {"host", "x"}, {"hosts", json::array{"x"}}}) ==
        -32602);
  // A missing key file: key_load_failed, and host_check says so too.
  json::object r = execute(c, {{"command", "true"}, {"host", "x"}});
  CHECK(str(r, "error_code") == "key_load_failed");
  json::object check = result_of(c.call("host_check", json::object{{"name", "x"}}));
  CHECK(check.at("ok") == false);
  CHECK(str(check.at("error").as_object(), "code") == "key_load_failed");
}

TEST_CASE("RSA keys get a clear error with a hint, never a hang", "[remote]") {
  TempDir dir;
  SshKeyPair rsa = make_key(dir.path(), "rsa", "rsa");
  SshKeyPair ed = make_key(dir.path(), "ed");
  Sshd s({.address = "127.0.0.16"}, {rsa.public_line, ed.public_line});
  Sshd rsa_host({.address = "127.0.0.17", .host_key_type = "rsa"}, {ed.public_line});
  START_DAEMON(d, remote_flags(dir.path()));
  Client c(d.socket());

  // An RSA user key: libssh2 1.10 signs with ssh-rsa (SHA-1), which OpenSSH refuses.
  result_of(c.call("host_add", host_params("rsauser", s, rsa)));
  auto start = Clock::now();
  json::object user = run_on(c, "rsauser", "true");
  CHECK(str(user, "error_code") == "auth_failed");
  CHECK_THAT(str(user, "error"), Contains("ed25519"));
  CHECK_THAT(str(user, "error"), Contains("ssh-rsa"));

  // A server with only an RSA host key: no host key algorithm in common.
  result_of(c.call("host_add", host_params("rsahost", rsa_host, ed)));
  json::object host = run_on(c, "rsahost", "true");
  CHECK(str(host, "status") == "failed");
  CHECK(str(host, "error_code") == "protocol_error");
  CHECK_THAT(str(host, "error"), Contains("RSA host key"));
  CHECK(seconds_since(start) < 10);
}

TEST_CASE(
    "secrets are redacted from remote output, and a frontend or daemon stop kills remote jobs",
    "[remote]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "id");
  Sshd s({.address = "127.0.0.18"}, {key.public_line});
  START_DAEMON(d, remote_flags(dir.path()));
  Client c(d.socket());
  result_of(c.call("host_add", host_params("h", s, key)));
  json::object r = run_on(c, "h", "echo the-token-12345 is here; echo the-token-12345 >&2",
                          {{"secrets", json::array{"the-token-12345"}}});
  CHECK(str(r, "stdout") == "*** is here\n");
  CHECK(str(r, "stderr") == "***\n");

  // The frontend dies under an attached remote job: the job is cancelled
  // as on any disconnect, and its remote process goes.
  const std::string gate = dir.path() + "/started";
  Client watcher(d.socket());
  json::value id = watcher.next_id();
  watcher.send_line(Client::request(
      id, "execute",
      json::object{{"command", "touch " + gate + "; exec sleep 4305"}, {"host", "h"}}));
  REQUIRE(wait_until([&] { return file_exists(gate); }, 20));
  Client again = kill_frontend(d);
  CHECK(none_left("sleep 4305"));

  // The daemon's SIGTERM: a running remote job is killed there too.
  const std::string gate2 = dir.path() + "/started2";
  json::value id2 = again.next_id();
  again.send_line(Client::request(
      id2, "execute",
      json::object{{"command", "touch " + gate2 + "; exec sleep 4306"}, {"host", "h"}}));
  REQUIRE(wait_until([&] { return file_exists(gate2); }, 20));
  stop_cleanly(d);
  CHECK(none_left("sleep 4306"));
}

TEST_CASE("hosts from the configuration, applied again by a reload", "[remote]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "id", "ed25519", "config-pass-phrase");
  Sshd s({.address = "127.0.0.19"}, {key.public_line});
  const std::string pass = dir.path() + "/passphrase";
  std::ofstream(pass) << "config-pass-phrase\n";
  const std::string config = dir.path() + "/shell-pool.toml";
  auto write_config = [&](const std::vector<std::string>& names) {
    std::ofstream out(config);
    out << "host = [";
    for (size_t i = 0; i < names.size(); ++i)
      out << (i ? ", " : "") << "\"" << names[i] << " root@" << s.address() << ":" << s.port()
          << " key_file=" << key.private_path << " passphrase_file=" << pass
          << " host_key=accept-new keepalive_ms=2000\"";
    out << "]\n";
  };
  write_config({"cfg1", "cfg2"});
  START_DAEMON(d, remote_flags(dir.path(), {"--config", config}));
  Client c(d.socket());
  auto names = [&] {
    std::vector<std::string> out;
    json::object listed = result_of(c.call("host_list", json::object{}));
    for (const auto& h : listed.at("hosts").as_array()) {
      CHECK(h.as_object().at("from_config") == true);
      CHECK(num(h.as_object(), "keepalive_ms") == 2000);
      out.push_back(str(h.as_object(), "name"));
    }
    return out;
  };
  CHECK(names() == std::vector<std::string>{"cfg1", "cfg2"});
  CHECK(str(run_on(c, "cfg1", "echo from config"), "stdout") == "from config\n");

  write_config({"cfg2", "cfg3"});
  result_of(c.call("reload", nullptr));
  CHECK(names() == std::vector<std::string>{"cfg2", "cfg3"});
  CHECK(str(run_on(c, "cfg3", "echo reloaded"), "stdout") == "reloaded\n");
  CHECK_THAT(d.log(), !Contains("config-pass-phrase"));

  // A bad host spec is refused at reload; the hosts in use stay.
  std::ofstream(config) << "host = [\"bad spec-without-user-and-key\"]\n";
  CHECK(num(error_of(c.call("reload", nullptr)), "code") == -32007);
  CHECK(names() == std::vector<std::string>{"cfg2", "cfg3"});
}

TEST_CASE("more errors: connect timeout, no agent, no sessions; signals; idle connections; plans",
          "[remote]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "id");
  Sshd s({.address = "127.0.0.22"}, {key.public_line});
  Sshd none({.address = "127.0.0.23", .max_sessions = 0}, {key.public_line});
  START_DAEMON(d, remote_flags(dir.path()));
  Client c(d.socket());

  // A listener whose backlog is full drops new SYNs: the connect hangs.
  sp::UniqueFd full(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(0x7f000018);  // 127.0.0.24
  REQUIRE(::bind(full.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(full.get(), 0) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(full.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0);
  std::vector<sp::UniqueFd> fillers;
  for (int i = 0; i < 4; ++i) {
    fillers.emplace_back(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    ::connect(fillers.back().get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  }
  json::object t{{"name", "blackhole"},
                 {"address", "127.0.0.24"},
                 {"port", ntohs(a.sin_port)},
                 {"user", "root"},
                 {"auth", {{"key_file", key.private_path}}},
                 {"connect_timeout_ms", 500}};
  result_of(c.call("host_add", t));
  json::object timed = run_on(c, "blackhole", "true");
  CHECK(str(timed, "error_code") == "connect_timeout");
  CHECK(str(timed, "error_phase") == "connect");

  // A name: looked up off the remote worker's loop. One that does not
  // resolve (in time) is dns_failed.
  Sshd local({.address = "127.0.0.1"}, {key.public_line});
  json::object named = host_params("byname", local, key);
  named["address"] = "localhost";
  result_of(c.call("host_add", named));
  CHECK(str(run_on(c, "byname", "echo named"), "stdout") == "named\n");
  json::object nowhere = host_params("nowhere", s, key);
  nowhere["address"] = "no-such-host.invalid";
  nowhere["connect_timeout_ms"] = 1000;
  result_of(c.call("host_add", nowhere));
  json::object unresolved = run_on(c, "nowhere", "true");
  CHECK(str(unresolved, "error_code") == "dns_failed");
  CHECK(str(unresolved, "error_phase") == "dns");

  // An agent socket nobody listens on.
  json::object ag = host_params("noagent", s, key);
  ag["auth"] = {{"agent_socket", dir.path() + "/no-agent.sock"}};
  result_of(c.call("host_add", ag));
  CHECK(str(run_on(c, "noagent", "true"), "error_code") == "agent_unavailable");

  // MaxSessions 0: the server opens no channel at all.
  result_of(c.call("host_add", host_params("nosessions", none, key)));
  json::object refused = run_on(c, "nosessions", "true");
  CHECK(str(refused, "status") == "failed");
  CHECK(str(refused, "error_code") == "channel_open_failed");
  CHECK(str(refused, "error_phase") == "channel");

  // A command killed by a signal on the host: signal, not exit_code.
  json::object p = host_params("h", s, key);
  p["idle_timeout_ms"] = 1000;
  result_of(c.call("host_add", p));
  json::object killed = run_on(c, "h", "kill -USR1 $$");
  CHECK(killed.at("signal") == "SIGUSR1");
  CHECK(num(killed, "exit_code") == -1);

  // A plan's steps on the host.
  json::object chain = result_of(
      c.call("execute_chain",
             json::object{
                 {"commands", json::array{json::object{{"command", "echo one"}, {"host", "h"}},
                                          json::object{{"command", "echo two"}, {"host", "h"}}}}}));
  CHECK_THAT(json::serialize(chain), Contains("one\\n"));
  CHECK_THAT(json::serialize(chain), Contains("two\\n"));

  // Idle for idle_timeout_ms: the connection closes; the next job opens another.
  CHECK(wait_until(
      [&] {
        json::object listed = result_of(c.call("host_list", json::object{}));
        for (const auto& h : listed.at("hosts").as_array())
          if (str(h.as_object(), "name") == "h") return num(h.as_object(), "connections") == 0;
        return false;
      },
      10, 0.1));
  CHECK(str(run_on(c, "h", "echo again"), "stdout") == "again\n");
  CHECK(s.count_in_log("Accepted publickey") == 2);
}

TEST_CASE("kills get through a host whose channels are all taken, and after a lost connection",
          "[remote]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "id");
  Sshd narrow({.address = "127.0.0.25", .max_sessions = 2}, {key.public_line});
  Sshd s({.address = "127.0.0.26"}, {key.public_line});
  START_DAEMON(d, remote_flags(dir.path()));
  Client c(d.socket());
  auto submit = [&](const std::string& host, const std::string& line) {
    std::string job = str(
        result_of(c.call("job_submit", json::object{{"command", line}, {"host", host}})), "job_id");
    REQUIRE(wait_until(
        [&] {
          json::object o = result_of(c.call("job_output", json::object{{"job_id", job}}));
          return str(o, "data").find("started") != std::string::npos;
        },
        20, 0.05));
    return job;
  };
  auto wait_job = [&](const std::string& job) {
    return result_of(c.call("job_wait", json::object{{"job_id", job}, {"timeout", 20}}));
  };

  // Every channel the host allows runs a job: the cancels' kills go over a
  // connection of their own, not after the jobs' give-up.
  json::object p = host_params("narrow", narrow, key);
  p["max_connections"] = 1;
  result_of(c.call("host_add", p));
  const std::string a = submit("narrow", "echo started; exec sleep 4310");
  const std::string b = submit("narrow", "echo started; exec sleep 4311");
  for (const std::string& job : {a, b})
    result_of(c.call("job_cancel", json::object{{"job_id", job}, {"grace_ms", 0}}));
  for (const std::string& job : {a, b}) {
    json::object w = wait_job(job);
    CHECK(str(w, "state") == "cancelled");
    CHECK_THAT(json::serialize(w), !Contains("left behind"));
  }
  CHECK(none_left("sleep 431"));
  CHECK(narrow.count_in_log("Accepted publickey") == 2);  // the jobs' connection, the kills'

  // A connection lost under a running command: the job is lost, and its
  // process, which nothing reads any more, is killed over a new connection.
  result_of(c.call("host_add", host_params("h", s, key)));
  const std::string lost = submit("h", "echo started; exec sleep 4312");
  std::vector<pid_t> sleeping = pids_matching("sleep 4312");
  REQUIRE(sleeping.size() == 1);
  std::ifstream stat("/proc/" + std::to_string(sleeping[0]) + "/stat");
  std::string field;
  for (int i = 0; i < 4 && stat >> field; ++i) {
  }
  const pid_t session = pid_t(std::stol(field));  // its sshd, which holds the connection
  REQUIRE(::kill(session, SIGKILL) == 0);
  json::object w = wait_job(lost);
  CHECK(str(w, "state") == "lost");
  CHECK(none_left("sleep 4312"));
}

TEST_CASE("an agent that never answers holds up no other host", "[remote]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "id");
  Sshd s({.address = "127.0.0.27"}, {key.public_line});
  START_DAEMON(d, remote_flags(dir.path()));
  Client c(d.socket());
  result_of(c.call("host_add", host_params("h", s, key)));
  // It takes the connection and never answers: that login waits (to
  // connect_timeout_ms), while another host's job runs meanwhile.
  const std::string agent_path = dir.path() + "/hung-agent.sock";
  sp::UniqueFd hung(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un au{};
  au.sun_family = AF_UNIX;
  std::snprintf(au.sun_path, sizeof au.sun_path, "%s", agent_path.c_str());
  REQUIRE(::bind(hung.get(), reinterpret_cast<sockaddr*>(&au), sizeof au) == 0);
  REQUIRE(::listen(hung.get(), 4) == 0);
  json::object ag = host_params("hungagent", s, key);
  ag["auth"] = {{"agent_socket", agent_path}};
  ag["connect_timeout_ms"] = 3000;
  result_of(c.call("host_add", ag));
  json::value waiting = c.next_id();
  c.send_line(Client::request(waiting, "execute",
                              json::object{{"command", "echo never"}, {"host", "hungagent"}}));
  json::value other = c.next_id();
  c.send_line(Client::request(other, "execute",
                              json::object{{"command", "echo meanwhile"}, {"host", "h"}}));
  auto first = c.read_json(20);
  REQUIRE(first);
  CHECK(first->as_object().at("id") == other);
  CHECK(str(result_of(first->as_object()), "stdout") == "meanwhile\n");
  auto second = c.read_json(20);
  REQUIRE(second);
  json::object r = result_of(second->as_object());
  CHECK(str(r, "error_code") == "agent_unavailable");
  CHECK_THAT(str(r, "error"), Contains("did not answer"));
}
