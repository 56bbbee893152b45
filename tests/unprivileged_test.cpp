// The real shell-poold run as an ordinary user, as its user unit runs it:
// no root, no CAP_SYS_RESOURCE, no writable cgroups. What the kernel allows
// works; what it does not is refused up front with a reason, never a job
// that fails at its start. The test user is made for the test and removed
// after it (the test needs root for that; without root the whole suite
// already runs the daemon unprivileged).
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <string>

#include "tests/daemon_harness.h"

using namespace sp::test;
using Catch::Contains;

namespace {

// A system user of the test's own, removed with its leftovers.
class TestUser {
 public:
  TestUser() : name_("sp-test-" + std::to_string(::getpid())) {
    std::string add =
        "useradd --system --no-create-home --home-dir /nonexistent "
        "--shell /usr/sbin/nologin " +
        name_ + " 2>&1";
    REQUIRE(std::system(add.c_str()) == 0);
    passwd* pw = ::getpwnam(name_.c_str());
    REQUIRE(pw);
    uid_ = pw->pw_uid;
    gid_ = pw->pw_gid;
  }
  ~TestUser() {
    std::string del = "userdel " + name_ + " 2>&1";
    [[maybe_unused]] int rc = std::system(del.c_str());
  }
  TestUser(const TestUser&) = delete;
  TestUser& operator=(const TestUser&) = delete;

  uid_t uid() const { return uid_; }
  gid_t gid() const { return gid_; }
  // Runs what follows as this user, keeping the pid (setpriv execs).
  std::vector<std::string> wrapper() const {
    return {"/usr/bin/setpriv", "--reuid=" + std::to_string(uid_),
            "--regid=" + std::to_string(gid_), "--clear-groups", "--"};
  }

 private:
  std::string name_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
};

}  // namespace

TEST_CASE("an unprivileged daemon: execute, streams, detached jobs, limits, crash repair",
          "[daemon][unprivileged]") {
  if (::getuid() != 0) {
    WARN("skipped: not root, so every other test already runs the daemon unprivileged");
    return;
  }
  TestUser user;
  TempDir home;  // the daemon's socket and spool live in a directory the user owns
  REQUIRE(::chown(home.path().c_str(), user.uid(), user.gid()) == 0);
  {
    START_DAEMON(d, DaemonOptions{.flags = {"--workers", "2", "--files-root", home.path()},
                                  .socket = home.path() + "/sock",
                                  .wrapper = user.wrapper()});
    Client c(d.socket());
    json::object h = health(c);
    INFO("isolation: " << str(h, "isolation") << ", " << str(h, "isolation_note"));
    CHECK_FALSE(str(h, "isolation_note").empty());  // says what it has, or why not more

    CHECK(str(execute(c, sh("id -u")), "stdout") == std::to_string(user.uid()) + "\n");
    // A stream.
    REQUIRE(c.send_line(
        Client::request(7, "execute_stream", sh("echo one; echo two >&2; echo three"))));
    Streamed s = read_stream(c, 7, 20);
    CHECK(s.ok);
    CHECK(s.out == "one\nthree\n");
    CHECK(s.err == "two\n");
    // A detached job.
    json::object sub = sh("echo detached");
    sub["job_id"] = "u-1";
    result_of(c.call("job_submit", sub));
    json::object w = result_of(c.call("job_wait", {{"job_id", "u-1"}, {"timeout", 20}}));
    CHECK(str(w, "state") == "exited");
    CHECK(str(w, "stdout") == "detached\n");
    // Limits: what the kernel allows is set; "no limit" at or above the hard
    // limit runs; what needs cgroups is refused up front, naming why.
    json::object lim = sh("ulimit -n");
    lim["limits"] = {{"open_files", 64}};
    CHECK(str(execute(c, lim), "stdout") == "64\n");
    json::object unlimited = sh("echo ran");
    unlimited["limits"] = {{"processes", UINT64_MAX}, {"open_files", UINT64_MAX}};
    json::object r = execute(c, unlimited);
    CHECK(str(r, "status") == "exited");
    CHECK(str(r, "stdout") == "ran\n");
    if (str(h, "isolation") == "process-group") {
      json::object mem = sh("true");
      mem["limits"] = {{"memory_bytes", 64 << 20}};
      json::object e = error_of(c.call("execute", mem));
      CHECK(num(e, "code") == -32602);
      CHECK_THAT(str(e, "message"), Contains("memory_bytes"));
    }
    // Files, as the user: its own are written and read; root's 0600 one is
    // refused with the reason, not lost in a failed job.
    result_of(c.call("file_write", {{"path", "mine/u.txt"}, {"data", "u"}, {"mkdirs", true}}));
    CHECK(str(result_of(c.call("file_read", {{"path", "mine/u.txt"}})), "data") == "u");
    {
      std::ofstream(home.path() + "/root-only") << "secret";
      REQUIRE(::chmod((home.path() + "/root-only").c_str(), 0600) == 0);
    }
    json::object denied = error_of(c.call("file_read", {{"path", "root-only"}}));
    CHECK(num(denied, "code") == -32008);
    CHECK(str(denied.at("data").as_object(), "error") == "denied");
    // Crash repair: a killed worker is restarted and the pool serves on.
    pid_t w0 = d.worker_pid(0);
    REQUIRE(w0 > 0);
    REQUIRE(::kill(w0, SIGKILL) == 0);
    REQUIRE(wait_until([&] { return d.worker_pid(0) > 0 && d.worker_pid(0) != w0; }, 15));
    CHECK(str(execute(c, sh("echo again")), "stdout") == "again\n");
    // The counter may be published a moment after the new worker is seen.
    CHECK(wait_until(
        [&] { return num(health(c).at("counters").as_object(), "worker_restarts") == 1; }, 10));
    stop_cleanly(d);
  }
}
