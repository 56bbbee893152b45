// The supervisor's child handle (supervisor/role_process.h): exec failure
// comes back as an error, fds land at their fixed numbers, and no child
// outlives its handle.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "supervisor/role_process.h"

using sp::supervisor::RoleProcess;

namespace {

bool alive(pid_t pid) {
  return ::kill(pid, 0) == 0;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("an exec that fails is reported with its errno, not as a process") {
  auto p = RoleProcess::start({"/nonexistent/shell-poold", {"frontend"}, {}, ""});
  REQUIRE_FALSE(p);
  CHECK(p.error().code == ENOENT);
  CHECK_THAT(p.error().message(), Catch::Contains("exec /nonexistent/shell-poold"));
  CHECK(::waitpid(-1, nullptr, WNOHANG) <= 0);  // nothing left to reap
}

TEST_CASE("a role gets its fds at 3, 4, ... in the order given") {
  char dir[] = "/tmp/sp-role-XXXXXX";
  REQUIRE(::mkdtemp(dir));
  const std::string out = std::string(dir) + "/fds";
  int p1[2], p2[2];
  REQUIRE(::pipe2(p1, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(p2, O_CLOEXEC) == 0);
  {
    auto p = RoleProcess::start({"/bin/sh",
                                 {"-c", "readlink /proc/self/fd/3 /proc/self/fd/4 > " + out},
                                 {p1[0], p2[1]},
                                 ""});
    REQUIRE(p);
    int status = 0;
    REQUIRE(::waitpid(p->pid(), &status, 0) == p->pid());
    p->reaped();
    CHECK(WIFEXITED(status));
  }
  auto pipe_name = [](int fd) {
    struct stat st {};
    ::fstat(fd, &st);
    return "pipe:[" + std::to_string(st.st_ino) + "]";
  };
  CHECK(read_file(out) == pipe_name(p1[0]) + "\n" + pipe_name(p2[1]) + "\n");
  for (int fd : {p1[0], p1[1], p2[0], p2[1]}) ::close(fd);
  ::unlink(out.c_str());
  ::rmdir(dir);
}

TEST_CASE("a handle that goes out of scope kills and reaps its process") {
  pid_t pid = 0;
  {
    auto p = RoleProcess::start({"/bin/sleep", {"30"}, {}, ""});
    REQUIRE(p);
    pid = p->pid();
    CHECK(alive(pid));
  }
  CHECK_FALSE(alive(pid));  // reaped: not even a zombie is left
}
