// The readiness probes of supervised services (services/probe.h) against
// real loopback sockets: a TCP port that listens and one that does not, an
// HTTP server that answers 204, 503 or garbage, or never answers (the
// timeout), and files; and the `shell-poold probe` helper's line and exit
// status.
#include "services/probe.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <string>
#include <thread>

#include "common/unique_fd.h"
#include "tests/daemon_harness.h"
#include "tests/dist_harness.h"

using namespace sp::services;
using Catch::Contains;
using sp::UniqueFd;

namespace {

// A listening socket on 127.0.0.1 at a port the kernel picks.
struct Listener {
  UniqueFd fd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  uint16_t port = 0;
  Listener() {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd.get(), 8) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port = ntohs(a.sin_port);
  }
  // Accepts one connection, reads the request head, writes `answer`.
  std::thread serve_once(std::string answer) {
    return std::thread([this, answer] {
      UniqueFd c(::accept4(fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!c) return;
      std::string got;
      char buf[1024];
      while (got.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = ::read(c.get(), buf, sizeof buf);
        if (n <= 0) return;
        got.append(buf, size_t(n));
      }
      if (!answer.empty()) (void)!::write(c.get(), answer.data(), answer.size());
    });
  }
};

// A port nothing listens on: one that was just closed.
uint16_t closed_port() {
  Listener l;
  return l.port;
}

}  // namespace

TEST_CASE("tcp probes see a listening port, and say why not", "[probe]") {
  Listener l;
  CHECK(probe_tcp("127.0.0.1", l.port, 1000).ok);
  CHECK(probe_tcp("localhost", l.port, 1000).ok);
  ProbeResult r = probe_tcp("127.0.0.1", closed_port(), 1000);
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.error, Contains("refused"));
  r = probe_tcp("no-such-host.invalid", 80, 1000);
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.error, Contains("resolve"));
}

TEST_CASE("http probes read the status, and time out on silence", "[probe]") {
  Listener l;
  const std::string url = "http://127.0.0.1:" + std::to_string(l.port) + "/health?x=1";
  std::thread t = l.serve_once("HTTP/1.1 204 No Content\r\n\r\n");
  CHECK(probe_http(url, 0, 2000).ok);
  t.join();
  t = l.serve_once("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
  ProbeResult r = probe_http(url, 0, 2000);
  t.join();
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.error, Contains("status 503"));
  t = l.serve_once("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  r = probe_http(url, 201, 2000);
  t.join();
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.error, Contains("not 201"));
  t = l.serve_once("SSH-2.0-OpenSSH\r\n\r\n");
  r = probe_http(url, 0, 2000);
  t.join();
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.error, Contains("not an HTTP answer"));
  t = l.serve_once("");  // reads the request, answers nothing
  const auto start = std::chrono::steady_clock::now();
  r = probe_http(url, 0, 300);
  CHECK(sp::test::seconds_since(start) < 5);
  t.join();
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.error, Contains("closed before an answer") || Contains("timed out"));
  r = probe_http("https://127.0.0.1/", 0, 300);
  CHECK_THAT(r.error, Contains("only http://"));
  CHECK_FALSE(probe_http("not a url", 0, 300).ok);
}

TEST_CASE("file probes, and the shell-poold probe helper's answer", "[probe]") {
  sp::test::TempDir dir;
  CHECK_FALSE(probe_file(dir.path() + "/ready").ok);
  std::ofstream(dir.path() + "/ready") << "";
  CHECK(probe_file(dir.path() + "/ready").ok);

  sp::test::ProgramRun run = sp::test::run_program(
      {SHELL_POOLD, "probe", "file", "--path", dir.path() + "/ready"}, dir.path());
  CHECK(run.exit_code == 0);
  CHECK(run.out == "{\"ok\":true}\n");
  run = sp::test::run_program(
      {SHELL_POOLD, "probe", "tcp", "--port", std::to_string(closed_port())}, dir.path());
  CHECK(run.exit_code == 1);
  CHECK_THAT(run.out, Contains("\"ok\":false") && Contains("refused"));
}
