// The sshd fixture (tests/sshd_fixture.h) against the real OpenSSH programs:
// a server the ssh client logs in to with a key file, an agent's key or a
// throwaway user's password; a stopped server that accepts TCP but sends no
// banner until continued; a restart with a new host key on the same port;
// a silent TCP peer; and no process left behind, neither the sessions in
// the listener's tree nor a command a session left running in the
// background.
#include "tests/sshd_fixture.h"

#include <pwd.h>
#include <shadow.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/daemon_harness.h"

using namespace sp::test;
using Catch::Contains;
using Catch::StartsWith;

namespace {

constexpr const char* kSsh = "/usr/bin/ssh";

// A known_hosts file in `dir` that holds `s`'s host key only.
std::string known_hosts_of(const Sshd& s, const std::string& dir, const std::string& name) {
  std::string path = dir + "/" + name;
  std::ofstream(path) << s.known_hosts_line() << "\n";
  return path;
}

// ssh to `user`@s running `command`, trusting only the keys in
// `known_hosts` and reading no ssh config file.
std::vector<std::string> ssh_argv(const Sshd& s, const std::string& known_hosts,
                                  const std::vector<std::string>& options,
                                  const std::string& command, const std::string& user = "root") {
  std::vector<std::string> argv{kSsh, "-F", "/dev/null", "-p", std::to_string(s.port())};
  for (const std::string& option :
       std::vector<std::string>{"StrictHostKeyChecking=yes", "LogLevel=ERROR", "ConnectTimeout=5",
                                "UserKnownHostsFile=" + known_hosts})
    argv.insert(argv.end(), {"-o", option});
  argv.insert(argv.end(), options.begin(), options.end());
  argv.insert(argv.end(), {user + "@" + s.address(), command});
  return argv;
}

// Logs in with key file `key` only, without any agent.
ToolRun ssh_with_key(const Sshd& s, const std::string& known_hosts, const SshKeyPair& key,
                     const std::string& command, double timeout_s = 20) {
  return run_tool(
      ssh_argv(s, known_hosts,
               {"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", key.private_path},
               command),
      s.dir(), {"SSH_AUTH_SOCK"}, timeout_s);
}

}  // namespace

TEST_CASE("sshd: a key file logs in, the log shows it, the config is what was asked for",
          "[sshd]") {
  TempDir tmp;
  SshKeyPair key = make_key(tmp.path(), "client");
  CHECK_THAT(key.public_line, StartsWith("ssh-ed25519 "));
  CHECK_THAT(fingerprint_of(key.public_path), StartsWith("SHA256:"));
  Sshd s({.rekey_limit = "1M", .extra_config = {"ClientAliveInterval 30"}}, {key.public_line});
  INFO("sshd log:\n" << s.log());
  CHECK(s.address() == "127.0.0.2");
  CHECK_THAT(s.known_hosts_line(),
             StartsWith("[127.0.0.2]:" + std::to_string(s.port()) + " ssh-ed25519 "));
  CHECK_THAT(s.host_key_fingerprint(), StartsWith("SHA256:"));

  ToolRun run = ssh_with_key(s, known_hosts_of(s, tmp.path(), "known_hosts"), key, "echo hi");
  INFO(run.describe());
  CHECK(run.exit_code == 0);
  CHECK(run.out == "hi\n");
  // The readiness probe's connection is not counted: one connection, one login.
  CHECK(wait_until([&] { return s.count_in_log("Accepted publickey") == 1; }, 5));
  CHECK(s.count_in_log("Connection from") == 1);
  CHECK_THAT(s.log(), Contains(fingerprint_of(key.public_path)));

  ToolRun effective = run_tool({"/usr/sbin/sshd", "-T", "-f", s.config_path()}, tmp.path());
  INFO(effective.describe());
  CHECK(effective.exit_code == 0);
  CHECK_THAT(effective.out, Contains("rekeylimit 1048576 0"));
  CHECK_THAT(effective.out, Contains("maxsessions 10"));
  CHECK_THAT(effective.out, Contains("clientaliveinterval 30"));
  struct stat st {};
  REQUIRE(::stat((s.dir() + "/authorized_keys").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
}

TEST_CASE("sshd: an agent's key logs in, also one added with its passphrase", "[sshd]") {
  TempDir tmp;
  SshKeyPair plain = make_key(tmp.path(), "plain");
  SshKeyPair locked = make_key(tmp.path(), "locked", "ed25519", "it's secret");
  Sshd s({}, {locked.public_line});
  SshAgent agent;
  agent.add(plain);
  agent.add(locked);
  ToolRun list = run_tool({"/usr/bin/ssh-add", "-l"}, tmp.path(), {agent.env()});
  INFO(list.describe());
  CHECK_THAT(list.out, Contains(fingerprint_of(plain.public_path)));
  CHECK_THAT(list.out, Contains(fingerprint_of(locked.public_path)));

  ToolRun run = run_tool(ssh_argv(s, known_hosts_of(s, tmp.path(), "known_hosts"),
                                  {"-o", "BatchMode=yes", "-o", "IdentitiesOnly=no"}, "echo hi"),
                         tmp.path(), {agent.env()});
  INFO(run.describe() << "\nsshd log:\n" << s.log());
  CHECK(run.out == "hi\n");
  CHECK(s.count_in_log("Accepted publickey for root") == 1);
}

TEST_CASE("sshd: a throwaway user logs in with its password where password_auth is on",
          "[sshd][user]") {
  if (!SystemUser::available()) {
    WARN("not root or no useradd: the user test is skipped");
    return;
  }
  TempDir tmp;
  std::string name;
  uid_t uid = 0;
  {
    SystemUser user;
    name = user.name();
    uid = user.uid();
    CHECK(name.size() == 9);
    const passwd* pw = ::getpwnam(name.c_str());
    REQUIRE(pw != nullptr);
    CHECK(std::string(pw->pw_dir) == user.home());
    const spwd* sp = ::getspnam(name.c_str());
    REQUIRE(sp != nullptr);
    CHECK_THAT(sp->sp_pwdp, StartsWith("$"));  // a hash, not the locked "!"

    Sshd with_password({.password_auth = true});
    Sshd keys_only;
    std::string askpass = tmp.path() + "/askpass";
    std::ofstream(askpass) << "#!/bin/sh\necho '" << user.password() << "'\n";
    REQUIRE(::chmod(askpass.c_str(), 0700) == 0);
    auto login = [&](const Sshd& s) {
      return run_tool(
          ssh_argv(s, known_hosts_of(s, tmp.path(), std::to_string(s.port())),
                   {"-o", "PreferredAuthentications=password", "-o", "NumberOfPasswordPrompts=1"},
                   "id -un; pwd", name),
          tmp.path(), {"SSH_AUTH_SOCK", "SSH_ASKPASS=" + askpass, "SSH_ASKPASS_REQUIRE=force"});
    };
    ToolRun in = login(with_password);
    INFO(in.describe() << "\nsshd log:\n" << with_password.log());
    CHECK(in.out == name + "\n" + user.home() + "\n");
    ToolRun refused = login(keys_only);
    INFO(refused.describe());
    CHECK(refused.exit_code == 255);
    CHECK_THAT(refused.err, Contains("Permission denied (publickey)"));
  }
  CHECK(::getpwnam(name.c_str()) == nullptr);
  CHECK(pids_of_uid(uid).empty());
}

TEST_CASE("sshd: a stopped server completes TCP handshakes but sends no banner until continued",
          "[sshd]") {
  TempDir tmp;
  SshKeyPair key = make_key(tmp.path(), "client");
  Sshd s({}, {key.public_line});
  std::string known_hosts = known_hosts_of(s, tmp.path(), "known_hosts");
  // A session's command that outlives its session, outside the listener's tree.
  std::string marker = "sleep 60." + std::to_string(s.port());
  ToolRun run = ssh_with_key(s, known_hosts, key, marker + " </dev/null >/dev/null 2>&1 &");
  INFO(run.describe());
  REQUIRE(run.exit_code == 0);
  std::vector<pid_t> sleeper;
  REQUIRE(wait_until([&] { return (sleeper = pids_matching(marker)).size() == 1; }, 5));
  std::vector<pid_t> all = s.processes();
  CHECK(std::count(all.begin(), all.end(), sleeper[0]) == 1);

  s.stop();
  CHECK(state_of(s.pid()) == 'T');
  CHECK(state_of(sleeper[0]) == 'T');
  auto start = Clock::now();
  CHECK(ssh_banner(s.address(), s.port(), 0.3).empty());
  CHECK(seconds_since(start) >= 0.25);  // it waited: the connect itself succeeded at once

  s.cont();
  CHECK_THAT(ssh_banner(s.address(), s.port(), 5), StartsWith("SSH-2.0-OpenSSH"));
  CHECK(state_of(sleeper[0]) != 'T');
  CHECK(ssh_with_key(s, known_hosts, key, "echo again").out == "again\n");
}

TEST_CASE("sshd: restart_with_new_host_key keeps the port and changes the key", "[sshd]") {
  TempDir tmp;
  SshKeyPair key = make_key(tmp.path(), "client", "rsa");
  Sshd s({.host_key_type = "rsa"}, {key.public_line});
  CHECK_THAT(s.known_hosts_line(), Contains(" ssh-rsa "));
  std::string old_hosts = known_hosts_of(s, tmp.path(), "old_hosts");
  std::string old_fingerprint = s.host_key_fingerprint();
  int port = s.port();
  pid_t old_pid = s.pid();

  s.restart_with_new_host_key();
  CHECK(s.port() == port);
  CHECK(s.pid() != old_pid);
  CHECK(s.host_key_type() == "rsa");
  CHECK(s.host_key_fingerprint() != old_fingerprint);
  ToolRun refused = ssh_with_key(s, old_hosts, key, "echo hi");
  INFO(refused.describe());
  CHECK(refused.exit_code == 255);
  CHECK_THAT(refused.err, Contains("REMOTE HOST IDENTIFICATION HAS CHANGED"));
  ToolRun accepted = ssh_with_key(s, known_hosts_of(s, tmp.path(), "new_hosts"), key, "echo hi");
  INFO(accepted.describe());
  CHECK(accepted.out == "hi\n");
}

TEST_CASE("sshd: the destructor leaves no process, not even a stopped one", "[sshd]") {
  TempDir tmp;
  SshKeyPair key = make_key(tmp.path(), "client");
  std::string config, in_tree, detached;
  std::vector<pid_t> before;
  ToolRun held;
  std::thread client;
  {
    Sshd s({}, {key.public_line});
    config = s.config_path();
    std::string known_hosts = known_hosts_of(s, tmp.path(), "known_hosts");
    in_tree = "sleep 61." + std::to_string(s.port());
    detached = "sleep 62." + std::to_string(s.port());
    REQUIRE(
        ssh_with_key(s, known_hosts, key, detached + " </dev/null >/dev/null 2>&1 &").exit_code ==
        0);
    // The thread must not touch `s`, which goes away under it.
    std::vector<std::string> argv = ssh_argv(
        s, known_hosts, {"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", key.private_path},
        in_tree);
    client = std::thread([&, argv] { held = run_tool(argv, tmp.path(), {"SSH_AUTH_SOCK"}); });
    // The client's ssh and the remote command carry the marker.
    CHECK(wait_until([&] { return pids_matching(in_tree).size() >= 2; }, 10));
    CHECK(wait_until([&] { return pids_matching(detached).size() == 1; }, 10));
    s.stop();
    before = s.processes();
    std::string listing;
    for (pid_t pid : before)
      listing += std::to_string(pid) + " (parent " + std::to_string(parent_of(pid)) + ") " +
                 cmdline_of(pid) + "\n";
    INFO(listing);
    // The listener, the connection's session process(es), its command (with
    // whatever the user's shell starts) and the detached command, which left
    // the tree: the remote ones are all the marked processes but the client.
    std::set<pid_t> listed(before.begin(), before.end());
    CHECK(listed.count(s.pid()) == 1);
    std::vector<pid_t> remote;
    for (pid_t pid : pids_matching(in_tree))
      if (parent_of(pid) != ::getpid()) remote.push_back(pid);
    for (pid_t pid : pids_matching(detached)) remote.push_back(pid);
    CHECK(remote.size() >= 2);
    for (pid_t pid : remote) CHECK(listed.count(pid) == 1);
    CHECK(before.size() >= 4);
  }
  client.join();
  INFO(held.describe());
  CHECK(held.finished);
  CHECK(held.exit_code == 255);  // the server went away under it
  CHECK(pids_matching(config).empty());
  CHECK(pids_matching(in_tree).empty());
  CHECK(pids_matching(detached).empty());
  for (pid_t pid : before) {
    INFO("pid " << pid << ": " << cmdline_of(pid));
    CHECK(cmdline_of(pid).empty());
  }
}

TEST_CASE("sshd: a silent TCP peer times the ssh client out in its banner exchange", "[sshd]") {
  TempDir tmp;
  RawTcpSilent silent;
  CHECK(silent.address() == "127.0.0.3");
  CHECK(ssh_banner(silent.address(), silent.port(), 0.2).empty());
  ToolRun run = run_tool({kSsh, "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=1",
                          "-p", std::to_string(silent.port()), "root@" + silent.address(), "true"},
                         tmp.path(), {"SSH_AUTH_SOCK"}, 10);
  INFO(run.describe());
  CHECK(run.exit_code == 255);
  CHECK_THAT(run.err, Contains("banner exchange"));
  int port = free_port("127.0.0.4");
  CHECK(port > 0);
  CHECK(ssh_banner("127.0.0.4", port, 0.2).empty());  // nothing listens there
}
