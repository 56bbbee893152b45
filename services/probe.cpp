#include "services/probe.h"

#include <fcntl.h>
#include <http_parser.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>

#include "common/unique_fd.h"
#include "frontend/codec/json_codec.h"

namespace sp::services {

namespace {

using Clock = std::chrono::steady_clock;

int ms_left(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? int(left.count()) : 0;
}

std::string where(const std::string& host, uint16_t port) {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
         std::to_string(port);
}

// A connected socket to host:port before `deadline`, or why not.
UniqueFd connect_to(const std::string& host, uint16_t port, Clock::time_point deadline,
                    std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    error = "resolve " + host + ": " + ::gai_strerror(rc);
    return {};
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> list(found, ::freeaddrinfo);
  error = "connect " + where(host, port) + ": no address";
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) continue;
    int rc = ::connect(fd.get(), ai->ai_addr, ai->ai_addrlen);
    if (rc < 0 && errno == EINPROGRESS) {
      pollfd p{fd.get(), POLLOUT, 0};
      rc = ::poll(&p, 1, ms_left(deadline));
      if (rc == 0) {
        error = "connect " + where(host, port) + ": timed out";
        continue;
      }
      int so = 0;
      socklen_t len = sizeof so;
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &so, &len);
      if (so != 0) {
        error = "connect " + where(host, port) + ": " + std::strerror(so);
        continue;
      }
      rc = 0;
    }
    if (rc < 0) {
      error = "connect " + where(host, port) + ": " + std::strerror(errno);
      continue;
    }
    error.clear();
    return fd;
  }
  return {};
}

struct Response {
  bool headers_done = false;
};

int on_headers_complete(http_parser* p) {
  static_cast<Response*>(p->data)->headers_done = true;
  return 1;  // no body wanted: stop here
}

}  // namespace

ProbeResult probe_tcp(const std::string& host, uint16_t port, uint32_t timeout_ms) {
  std::string error;
  UniqueFd fd = connect_to(host, port, Clock::now() + std::chrono::milliseconds(timeout_ms), error);
  return {bool(fd), error};
}

ProbeResult probe_http(const std::string& url, unsigned status, uint32_t timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  http_parser_url u;
  http_parser_url_init(&u);
  if (http_parser_parse_url(url.data(), url.size(), 0, &u) != 0 || !(u.field_set & (1 << UF_HOST)))
    return {false, "\"" + url + "\" is not a URL"};
  auto part = [&](int f) {
    return (u.field_set & (1 << f)) ? url.substr(u.field_data[f].off, u.field_data[f].len)
                                    : std::string();
  };
  if (part(UF_SCHEMA) != "http")
    return {false, "\"" + url + "\": only http:// URLs are probed (no TLS)"};
  const std::string host = part(UF_HOST);
  const uint16_t port = (u.field_set & (1 << UF_PORT)) ? u.port : 80;
  std::string target = part(UF_PATH).empty() ? "/" : part(UF_PATH);
  if (!part(UF_QUERY).empty()) target += "?" + part(UF_QUERY);
  std::string error;
  UniqueFd fd = connect_to(host, port, deadline, error);
  if (!fd) return {false, error};
  const std::string request = "GET " + target + " HTTP/1.1\r\nHost: " + where(host, port) +
                              "\r\nUser-Agent: shell-pool-probe\r\nConnection: close\r\n\r\n";
  for (size_t sent = 0; sent < request.size();) {
    pollfd p{fd.get(), POLLOUT, 0};
    if (::poll(&p, 1, ms_left(deadline)) <= 0) return {false, "GET " + url + ": timed out"};
    ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR)
      return {false, "GET " + url + ": " + std::strerror(errno)};
    if (n > 0) sent += size_t(n);
  }
  http_parser parser;
  http_parser_init(&parser, HTTP_RESPONSE);
  http_parser_settings settings;
  http_parser_settings_init(&settings);
  settings.on_headers_complete = on_headers_complete;
  Response response;
  parser.data = &response;
  char buf[4096];
  size_t total = 0;
  while (!response.headers_done) {
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, ms_left(deadline)) <= 0) return {false, "GET " + url + ": timed out"};
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) return {false, "GET " + url + ": " + std::strerror(errno)};
    if (n == 0) return {false, "GET " + url + ": the connection closed before an answer"};
    total += size_t(n);
    if (total > 64 * 1024) return {false, "GET " + url + ": headers longer than 64 KiB"};
    size_t used = http_parser_execute(&parser, &settings, buf, size_t(n));
    if (!response.headers_done && (parser.http_errno != HPE_OK || used != size_t(n)))
      return {false, "GET " + url + ": not an HTTP answer (" +
                         http_errno_description(HTTP_PARSER_ERRNO(&parser)) + ")"};
  }
  const unsigned got = parser.status_code;
  const bool ok = status ? got == status : got >= 200 && got < 400;
  if (ok) return {true, {}};
  return {false, "GET " + url + ": status " + std::to_string(got) +
                     (status ? ", not " + std::to_string(status) : ", not 2xx or 3xx")};
}

ProbeResult probe_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) return {true, {}};
  return {false, path + ": " + std::strerror(errno)};
}

CLI::App* add_probe_command(CLI::App& app, ProbeArgs& a) {
  CLI::App* c = app.add_subcommand("probe", "")->group("");
  c->add_option("kind", a.kind)->required();
  c->add_option("--host", a.host);
  c->add_option("--port", a.port);
  c->add_option("--url", a.url);
  c->add_option("--path", a.path);
  c->add_option("--status", a.status);
  c->add_option("--timeout-ms", a.timeout_ms);
  return c;
}

int run_probe(const ProbeArgs& a) {
  ProbeResult r;
  if (a.kind == "tcp") {
    r = probe_tcp(a.host, a.port, a.timeout_ms);
  } else if (a.kind == "http") {
    r = probe_http(a.url, a.status, a.timeout_ms);
  } else if (a.kind == "file") {
    r = probe_file(a.path);
  } else {
    r = {false, "no probe kind \"" + a.kind + "\" (tcp, http, file)"};
  }
  std::string line;
  rpc::append_value(
      line, r.ok ? rpc::Object{{"ok", true}} : rpc::Object{{"ok", false}, {"error", r.error}});
  line += '\n';
  if (::write(1, line.data(), line.size()) != ssize_t(line.size())) return 3;
  return r.ok ? 0 : 1;
}

}  // namespace sp::services
