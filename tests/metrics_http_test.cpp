// Metrics of the real shell-poold: the `metrics` method and the HTTP
// endpoint of --metrics-listen (on 127.0.0.1, a port the kernel picks), read
// by the strict exposition checker, counting real jobs across restarts of
// the frontend and the workers.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <string>

#include "tests/daemon_harness.h"
#include "tests/exposition_check.h"

using namespace sp::test;
using Catch::Contains;

namespace {

std::string problems_of(const Exposition& e) {
  std::string all;
  for (const std::string& p : e.problems) all += p + "\n";
  return all;
}

// The port of "127.0.0.1:PORT" that health reports.
int metrics_port(Client& c) {
  std::string addr = str(health(c), "metrics_listen");
  REQUIRE(addr.rfind("127.0.0.1:", 0) == 0);
  return std::stoi(addr.substr(addr.find(':') + 1));
}

// A TCP connection to 127.0.0.1:port; invalid if it could not connect.
sp::UniqueFd connect_tcp(int port) {
  sp::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) fd.reset();
  return fd;
}

// Sends `request` to 127.0.0.1:port and reads until the server closes
// (bounded); the whole response, or "" if it could not connect.
std::string http(int port, const std::string& request, double timeout_s = 10) {
  sp::UniqueFd fd = connect_tcp(port);
  if (!fd) return "";
  for (size_t sent = 0; sent < request.size();) {
    ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may answer (431) before it read it all
    sent += size_t(n);
  }
  ::shutdown(fd.get(), SHUT_WR);
  std::string out;
  const auto start = Clock::now();
  while (seconds_since(start) < timeout_s) {
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[8192];
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, size_t(n));
  }
  return out;
}

std::string status_line(const std::string& response) {
  return response.substr(0, response.find("\r\n"));
}
std::string body_of(const std::string& response) {
  size_t at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

Exposition scrape_method(Client& c) {
  json::object r = result_of(c.call("metrics", nullptr));
  CHECK(str(r, "content_type") == "text/plain; version=0.0.4; charset=utf-8");
  Exposition e = check_exposition(str(r, "text"));
  INFO(problems_of(e));
  CHECK(e.problems.empty());
  return e;
}

Exposition scrape_http(int port) {
  std::string response = http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(status_line(response) == "HTTP/1.1 200 OK");
  CHECK_THAT(response, Contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
  Exposition e = check_exposition(body_of(response));
  INFO(problems_of(e));
  CHECK(e.problems.empty());
  return e;
}

double finished(const Exposition& e, const char* status) {
  return e.value("shell_pool_jobs_finished_total{status=\"" + std::string(status) + "\"}");
}

}  // namespace

TEST_CASE("metrics count real jobs by status, duration, wait and output, by method and HTTP",
          "[daemon][metrics]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--metrics-listen", "127.0.0.1:0"}});
  Client c(d.socket());
  CHECK(str(execute(c, sh("echo hello; echo oops >&2")), "status") == "exited");
  CHECK(num(execute(c, sh("exit 3")), "exit_code") == 3);
  json::object timed = sh("sleep 5");
  timed["timeout"] = 0.2;
  CHECK(str(execute(c, timed), "status") == "timed_out");
  CHECK(str(execute(c, {{"command", "/nonexistent/program"}, {"args", json::array{"x"}}}),
            "status") == "failed");

  for (const Exposition& e : {scrape_method(c), scrape_http(metrics_port(c))}) {
    CHECK(e.value("shell_pool_jobs_submitted_total") == 4);
    CHECK(e.value("shell_pool_jobs_started_total") == 3);  // the missing program never started
    CHECK(finished(e, "exited") == 2);
    CHECK(finished(e, "timed_out") == 1);
    CHECK(finished(e, "failed") == 1);
    CHECK(finished(e, "cancelled") == 0);
    CHECK(finished(e, "lost") == 0);
    CHECK(e.value("shell_pool_job_duration_seconds_count") == 3);
    CHECK(e.value("shell_pool_job_duration_seconds_sum") >= 0.2);  // the timed-out one
    CHECK(e.value("shell_pool_job_duration_seconds_bucket{le=\"10\"}") == 3);
    CHECK(e.value("shell_pool_queue_wait_seconds_count") == 4);  // every job a worker took
    CHECK(e.value("shell_pool_output_bytes_total{stream=\"stdout\"}") == 6);
    CHECK(e.value("shell_pool_output_bytes_total{stream=\"stderr\"}") == 5);
    CHECK(e.value("shell_pool_jobs_queued") == 0);
    CHECK(e.value("shell_pool_workers{state=\"idle\"}") == 1);
    CHECK(e.value("shell_pool_reloads_total{result=\"ok\"}") == 0);
  }
  // A running job is counted as running, its worker as busy.
  const std::string gate = d.dir() + "/gate";
  Client other(d.socket());
  REQUIRE(other.send_line(Client::request(1, "execute", sh(until_file(gate)))));
  // The job table says running as the worker claims it; the worker counts
  // it as its own a moment later: wait for both (bounded).
  Exposition busy;
  CHECK(wait_until(
      [&] {
        busy = scrape_method(c);
        return busy.value("shell_pool_jobs_running") == 1 &&
               busy.value("shell_pool_workers{state=\"busy\"}") == 1;
      },
      10));
  CHECK(busy.value("shell_pool_connections") == 2);
  open_gate(gate);
  CHECK(other.read_json(10));
  stop_cleanly(d);
}

TEST_CASE("metrics survive restarts of the workers and the frontend, on the same port",
          "[daemon][metrics]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--metrics-listen", "127.0.0.1:0"}});
  Client c(d.socket());
  const int port = metrics_port(c);
  for (int i = 0; i < 3; ++i) execute(c, sh("true"));
  kill_ready_worker(d, c, 1);
  pid_t frontend = d.frontend_pid();
  REQUIRE(frontend > 0);
  ::kill(frontend, SIGKILL);
  REQUIRE(wait_until(
      [&] {
        pid_t now = d.frontend_pid();
        return now && now != frontend;
      },
      10));
  Client fresh = Client::connect_retry(d.socket(), 10);
  REQUIRE(fresh.connected());
  Exposition e = scrape_http(port);  // served by the new frontend
  CHECK(finished(e, "exited") == 3);
  CHECK(e.value("shell_pool_job_duration_seconds_count") == 3);
  CHECK(e.value("shell_pool_role_restarts_total{role=\"worker\",cause=\"crash\"}") == 1);
  CHECK(e.value("shell_pool_role_restarts_total{role=\"frontend\",cause=\"crash\"}") == 1);
  CHECK(e.value("shell_pool_role_restarts_total{role=\"worker\",cause=\"exit\"}") == 0);
  stop_cleanly(d);
}

TEST_CASE("reloads are counted by result", "[daemon][metrics][reload]") {
  TempDir tmp;
  const std::string config = tmp.path() + "/shell-pool.toml";
  std::ofstream(config) << "default-timeout = 30\n";
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--config", config}});
  Client c(d.socket());
  result_of(c.call("reload", nullptr));
  std::ofstream(config) << "no-such-option = 1\n";
  error_of(c.call("reload", nullptr));
  Exposition e = scrape_method(c);
  CHECK(e.value("shell_pool_reloads_total{result=\"ok\"}") == 1);
  CHECK(e.value("shell_pool_reloads_total{result=\"failed\"}") == 1);
  CHECK(e.value("shell_pool_config_generation") == 2);
  CHECK(health(c).at("metrics_listen").is_null());  // no --metrics-listen: no HTTP
  stop_cleanly(d);
}

TEST_CASE("the HTTP endpoint answers only GET /metrics, with clear errors for the rest",
          "[daemon][metrics]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--metrics-listen", "127.0.0.1:0"}});
  Client c(d.socket());
  const int port = metrics_port(c);
  CHECK(status_line(http(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")) ==
        "HTTP/1.1 405 Method Not Allowed");
  CHECK(status_line(http(port, "GET /other HTTP/1.1\r\n\r\n")) == "HTTP/1.1 404 Not Found");
  CHECK(status_line(http(port, "GET /metrics?x=1 HTTP/1.0\r\n\r\n")) == "HTTP/1.1 200 OK");
  CHECK(status_line(http(port, "this is not http\r\n\r\n")) == "HTTP/1.1 400 Bad Request");
  CHECK(status_line(http(port, "GET /metrics HTTP/1.1\r\nX: " + std::string(9000, 'a') +
                                   "\r\n\r\n")) == "HTTP/1.1 431 Request Header Fields Too Large");
  std::string head = http(port, "HEAD /metrics HTTP/1.1\r\n\r\n");
  CHECK(status_line(head) == "HTTP/1.1 200 OK");
  CHECK(body_of(head).empty());
  // A client that sends nothing is dropped, and holds no answer hostage.
  sp::UniqueFd idle = connect_tcp(port);
  REQUIRE(idle);
  scrape_http(port);
  check_same_roles(d, c, role_pids(d));
  stop_cleanly(d);
}

TEST_CASE("a --metrics-listen that is not ADDRESS:PORT is a configuration error (exit 78)",
          "[daemon][metrics]") {
  for (const char* bad : {"127.0.0.1", "127.0.0.1:99999", "::1:9100", "127.0.0.1:http"}) {
    TestDaemon d(DaemonOptions{.flags = {"--metrics-listen", bad}, .wait_ready = false});
    INFO(bad);
    CHECK(d.wait_exit(20) == 78);
    CHECK_THAT(d.log(), Contains("--metrics-listen"));
  }
}
