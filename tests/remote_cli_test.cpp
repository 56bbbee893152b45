// The CLI's remote side against the real shell-poold and real OpenSSH servers
// (tests/sshd_fixture.h): host add (USER@ADDRESS:PORT, a passphrase from
// stdin, refusals), host list, host check of a good and a refused host, host
// rm with and without --force; run and exec --host with the command's exit
// status, and 127 where it cannot start; fan-out with --hosts to two servers:
// host-prefixed whole lines, the summary, exit statuses, --max-parallel with
// --fail-fast, and submit.
#include <catch2/catch.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/daemon_harness.h"
#include "tests/sshd_fixture.h"

using namespace sp::test;
using Catch::Contains;
using Catch::StartsWith;

namespace {

// The daemon's flags: its own known_hosts in `dir`, and no user's file
// (root's ~/.ssh/known_hosts is not the test's).
std::vector<std::string> remote_flags(const std::string& dir) {
  return {"--workers", "1", "--known-hosts", dir + "/known_hosts", "--user-known-hosts", "none"};
}

// `shell-pool --socket=... args...`, its streams shown when a check fails.
struct Cli {
  std::string socket, dir;
  CliRun operator()(std::vector<std::string> args,
                    const std::optional<std::string>& stdin_data = std::nullopt) const {
    args.insert(args.begin(), "--socket=" + socket);
    return run_cli(args, dir, 60, stdin_data);
  }
};

std::string shown(const CliRun& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

// host add NAME at the sshd with `key`, learning its host key.
CliRun add_host(const Cli& cli, const std::string& name, const Sshd& s, const SshKeyPair& key) {
  return cli({"host", "add", name, "root@" + s.address() + ":" + std::to_string(s.port()), "--key",
              key.private_path, "--host-key", "accept-new", "--connect-timeout-ms", "5000"});
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

TEST_CASE("the CLI's host add and host list, and run and exec on one host", "[remote][cli]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "id");
  SshKeyPair locked = make_key(dir.path(), "locked", "ed25519", "a passphrase, 42");
  Sshd s({.address = "127.0.0.20"}, {key.public_line, locked.public_line});
  START_DAEMON(d, remote_flags(dir.path()));
  const Cli cli{d.socket(), dir.path()};

  CliRun r = add_host(cli, "web1", s, key);
  INFO(shown(r));
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("\"name\":\"web1\""));
  CHECK_THAT(r.out, Contains("\"user\":\"root\""));
  CHECK_THAT(r.out, Contains("\"port\":" + std::to_string(s.port())));
  CHECK_THAT(r.out, Contains("\"policy\":\"accept-new\""));

  // The passphrase comes from stdin, and the answer only says there is one.
  r = cli({"host", "add", "web2", s.address(), "--port", std::to_string(s.port()), "--user", "root",
           "--key", locked.private_path, "--passphrase-file", "-", "--host-key", "accept-new"},
          locked.passphrase + "\n");
  INFO(shown(r));
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("\"passphrase\":true"));
  CHECK_THAT(r.out, !Contains(locked.passphrase));

  // Refusals: a name taken (the daemon's), no user, no way to log in (ours).
  r = add_host(cli, "web1", s, key);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("exists"));
  CHECK(cli({"host", "add", "x", s.address(), "--agent"}).exit_code == 2);
  CHECK(cli({"host", "add", "x", "root@" + s.address()}).exit_code == 2);

  // run: output and exit status as a local job's (stdin passed: an attached job).
  r = cli({"run", "--host", "web1", "echo out; echo err >&2; exit 3"});
  CHECK(r.exit_code == 3);
  CHECK(r.out == "out\n");
  CHECK(r.err == "err\n");
  // exec without stdin: execute_stream. And the key with its passphrase.
  r = cli({"exec", "--host", "web2", "-n", "--", "printf", "%s|", "a b", "$HOME"});
  CHECK(r.exit_code == 0);
  CHECK(r.out == "a b|$HOME|");

  r = cli({"host", "list"});
  INFO(shown(r));
  CHECK(r.exit_code == 0);
  std::vector<std::string> rows = lines_of(r.out);
  REQUIRE(rows.size() == 3);
  CHECK_THAT(rows[0], StartsWith("NAME"));
  CHECK_THAT(rows[0], Contains("LAST-ERROR"));
  CHECK_THAT(rows[1], StartsWith("web1 "));
  CHECK_THAT(rows[1], Contains(s.address() + ":" + std::to_string(s.port())));
  CHECK_THAT(rows[1], Contains(" key "));
  CHECK_THAT(rows[1], Contains("accept-new"));
  CHECK_THAT(cli({"host", "list", "--json"}).out, Contains("\"hosts\":[{"));
}

TEST_CASE("the CLI's host check and host rm", "[remote][cli]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "id");
  Sshd s({.address = "127.0.0.20"}, {key.public_line});
  START_DAEMON(d, remote_flags(dir.path()));
  const Cli cli{d.socket(), dir.path()};
  REQUIRE(add_host(cli, "web1", s, key).exit_code == 0);

  CliRun r = cli({"host", "check", "web1"});
  INFO(shown(r));
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("host web1: ok"));
  CHECK_THAT(r.out, Contains(s.host_key_fingerprint()));
  CHECK_THAT(r.out, Contains("ssh-ed25519"));
  CHECK_THAT(r.out, Contains("OpenSSH"));
  CHECK_THAT(r.out, Contains("publickey"));
  CHECK_THAT(r.out, Contains(" ms"));
  CHECK_THAT(cli({"host", "check", "web1", "--json"}).out, Contains("\"ok\":true"));

  // A port nobody listens on: check fails with the error's code and phase.
  r = cli({"host", "add", "down",
           "root@" + s.address() + ":" + std::to_string(free_port(s.address())), "--key",
           key.private_path, "--connect-timeout-ms", "3000"});
  REQUIRE(r.exit_code == 0);
  r = cli({"host", "check", "down"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.out, Contains("host down: failed"));
  CHECK_THAT(r.err, Contains("connect_refused (phase connect)"));
  CHECK(cli({"host", "check", "nope"}).exit_code == 1);
  // A job there could not start, as a local one that cannot: 127 and why.
  r = cli({"run", "--host", "down", "true"});
  CHECK(r.exit_code == 127);
  CHECK_THAT(r.err, Contains("refused"));
  r = cli({"run", "--host", "down", "-n", "true"});
  CHECK(r.exit_code == 127);
  CHECK_THAT(r.err, Contains("refused"));

  // rm: refused while a job runs there, unless --force, which ends it.
  r = cli({"submit", "--host", "web1", "exec sleep 313"});
  REQUIRE(r.exit_code == 0);
  r = cli({"host", "rm", "web1"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("force"));
  r = cli({"host", "rm", "web1", "--force"});
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("\"removed\":true"));
  CHECK_THAT(r.out, Contains("\"jobs_ended\":1"));
  CHECK(wait_until([] { return pids_matching("sleep 313").empty(); }, 10, 0.05));
  CHECK(cli({"host", "rm", "down"}).exit_code == 0);
  CHECK(cli({"host", "rm", "down"}).exit_code == 1);
  CHECK(lines_of(cli({"host", "list"}).out).size() == 1);  // the header only
}

TEST_CASE("the CLI fans a command out with each line prefixed by its host", "[remote][cli]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "id");
  Sshd a({.address = "127.0.0.20"}, {key.public_line});
  Sshd b({.address = "127.0.0.21"}, {key.public_line});
  START_DAEMON(d, remote_flags(dir.path()));
  const Cli cli{d.socket(), dir.path()};
  REQUIRE(add_host(cli, "a", a, key).exit_code == 0);
  REQUIRE(add_host(cli, "b", b, key).exit_code == 0);

  // Lines written in pieces on both hosts at once come whole; a last line
  // without its end comes too; stderr's lines go to stderr.
  CliRun r =
      cli({"run", "--hosts", "a,b",
           "echo at $(echo $SSH_CONNECTION | cut -d' ' -f3); for i in 1 2 3 4; do printf $i; "
           "sleep 0.05; done; echo; echo oops >&2; printf last"});
  INFO(shown(r));
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("a: at 127.0.0.20\n"));
  CHECK_THAT(r.out, Contains("b: at 127.0.0.21\n"));
  CHECK(count_of(r.out, "a: 1234\n") == 1);
  CHECK(count_of(r.out, "b: 1234\n") == 1);
  CHECK(count_of(r.out, "a: last\n") == 1);
  CHECK(count_of(r.out, "b: last\n") == 1);
  CHECK(lines_of(r.out).size() == 6);
  CHECK_THAT(r.err, Contains("a: oops\n"));
  CHECK_THAT(r.err, Contains("b: oops\n"));
  CHECK_THAT(r.err, Contains("2 hosts: 2 ok, 0 failed, 0 errors"));

  // One host fails: the worst exit code, and a line for it.
  r = cli({"exec", "--hosts", "a", "--hosts", "b", "--", "sh", "-c",
           "case $SSH_CONNECTION in *127.0.0.20*) exit 3;; esac; echo fine"});
  INFO(shown(r));
  CHECK(r.exit_code == 3);
  CHECK(r.out == "b: fine\n");
  CHECK_THAT(r.err, Contains("2 hosts: 1 ok, 1 failed, 0 errors"));
  CHECK_THAT(r.err, Contains("a: exit code 3"));

  // A host that cannot be reached: 255 when no host that ran failed, else
  // the worst exit code.
  REQUIRE(cli({"host", "add", "down", "root@127.0.0.20:" + std::to_string(free_port("127.0.0.20")),
               "--key", key.private_path, "--connect-timeout-ms", "3000"})
              .exit_code == 0);
  r = cli({"run", "--hosts", "a,down,b", "true"});
  INFO(shown(r));
  CHECK(r.exit_code == 255);
  CHECK_THAT(r.err, Contains("3 hosts: 2 ok, 0 failed, 1 errors"));
  CHECK_THAT(r.err, Contains("down: connect_refused (phase connect)"));
  r = cli({"run", "--hosts", "down,a", "exit 2"});
  CHECK(r.exit_code == 2);

  // --fail-fast, one at a time: the first host fails, the second never starts.
  r = cli({"run", "--hosts", "a,b", "--max-parallel", "1", "--fail-fast", "echo ran; exit 4"});
  INFO(shown(r));
  CHECK(r.exit_code == 4);
  CHECK(r.out == "a: ran\n");
  CHECK_THAT(r.err, Contains("2 hosts: 0 ok, 1 failed, 0 errors, 1 skipped"));
  CHECK_THAT(r.err, Contains("b: skipped"));
  CHECK(cli({"run", "-t", "--hosts", "a,b", "true"}).exit_code == 2);
  CHECK(cli({"run", "--hosts", "a,nope", "true"}).exit_code != 0);

  // submit: one job per host, each waited for by its own id.
  r = cli({"submit", "--hosts", "a,b", "echo detached"});
  INFO(shown(r));
  REQUIRE(r.exit_code == 0);
  json::object sub = json::parse(r.out).as_object();
  json::array jobs = sub.at("jobs").as_array();
  REQUIRE(jobs.size() == 2);
  for (const json::value& j : jobs) {
    CliRun w = cli({"wait", str(j.as_object(), "job_id")});
    CHECK(w.exit_code == 0);
    CHECK(w.out == "detached\n");
  }
  r = cli({"submit", "--host", "b", "exit 6"});
  REQUIRE(r.exit_code == 0);
  CHECK(cli({"wait", r.out.substr(0, r.out.find('\n'))}).exit_code == 6);
}
