#include "frontend/metrics_http.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <spdlog/fmt/fmt.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/sys.h"
#include "frontend/metrics.h"

namespace sp::frontend {

namespace {

// What the parser's callbacks collect (http_parser::data points here).
struct Request {
  std::string url;
  bool complete = false;  // one whole request read
};

int on_url(http_parser* p, const char* at, size_t len) {
  static_cast<Request*>(p->data)->url.append(at, len);
  return 0;
}

int on_complete(http_parser* p) {
  static_cast<Request*>(p->data)->complete = true;
  http_parser_pause(p, 1);  // one request per connection: the rest is not parsed
  return 0;
}

const http_parser_settings& settings() {
  static const http_parser_settings s = [] {
    http_parser_settings x;
    http_parser_settings_init(&x);
    x.on_url = on_url;
    x.on_message_complete = on_complete;
    return x;
  }();
  return s;
}

// The path of a request target ("/metrics?x=1" -> "/metrics"); "" if malformed.
std::string path_of(const std::string& url) {
  http_parser_url u;
  http_parser_url_init(&u);
  if (http_parser_parse_url(url.data(), url.size(), 0, &u) != 0 || !(u.field_set & (1 << UF_PATH)))
    return {};
  return url.substr(u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
}

}  // namespace

struct MetricsHttp::Conn {
  enum class Phase { kReading, kWriting, kLingering };
  UniqueFd fd;
  uint64_t tag = 0;
  uint64_t deadline_ns = 0;
  http_parser parser{};
  Request request;
  size_t received = 0;
  Phase phase = Phase::kReading;
  std::string out;
  size_t sent = 0;
};

MetricsHttp::MetricsHttp(int epoll_fd, UniqueFd listen_fd, uint64_t listen_tag,
                         std::function<std::string()> render)
    : epoll_(epoll_fd),
      listen_(std::move(listen_fd)),
      listen_tag_(listen_tag),
      render_(std::move(render)) {}

MetricsHttp::~MetricsHttp() = default;

Status MetricsHttp::start() {
  if (auto r = sys("fcntl O_NONBLOCK", [&] { return ::fcntl(listen_.get(), F_SETFL, O_NONBLOCK); });
      !r)
    return r.error();
  epoll_event ev{EPOLLIN, {.u64 = listen_tag_}};
  if (auto r =
          sys("epoll_ctl", [&] { return ::epoll_ctl(epoll_, EPOLL_CTL_ADD, listen_.get(), &ev); });
      !r)
    return r.error();
  spdlog::info("serving metrics on http://{}/metrics", address());
  return {};
}

std::string MetricsHttp::address() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(listen_.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char host[INET6_ADDRSTRLEN] = "?";
  if (ss.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
    ::inet_ntop(AF_INET6, &a.sin6_addr, host, sizeof host);
    return fmt::format("[{}]:{}", host, ntohs(a.sin6_port));
  }
  const auto& a = reinterpret_cast<const sockaddr_in&>(ss);
  ::inet_ntop(AF_INET, &a.sin_addr, host, sizeof host);
  return fmt::format("{}:{}", host, ntohs(a.sin_port));
}

void MetricsHttp::accept_all() {
  for (;;) {
    int fd = sys_raw(
        [&] { return ::accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC); });
    if (fd < 0) return;  // EAGAIN, or a failed accept (the client retries)
    UniqueFd sock(fd);
    if (conns_.size() >= kMaxConnections) continue;  // closed at once: the scraper retries
    auto c = std::make_unique<Conn>();
    c->fd = std::move(sock);
    c->tag = next_tag_++;
    c->deadline_ns = monotonic_ns() + kTimeoutNs;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = &c->request;
    epoll_event ev{EPOLLIN, {.u64 = c->tag}};
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, c->fd.get(), &ev) != 0) continue;
    conns_.emplace(c->tag, std::move(c));
  }
}

void MetricsHttp::on_event(uint64_t tag, uint32_t events) {
  auto it = conns_.find(tag);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
  if (c.phase == Conn::Phase::kWriting && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
    return write_out(c);
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) read_from(c);
}

void MetricsHttp::read_from(Conn& c) {
  char buf[4096];
  for (;;) {
    ssize_t n = sys_raw([&] { return ::read(c.fd.get(), buf, sizeof buf); });
    if (n == -EAGAIN) return;
    if (n <= 0) return close(c.tag);  // EOF or an error: nothing more to answer
    // Answered (or answering): input is drained, so our close sends no RST.
    if (c.phase != Conn::Phase::kReading) continue;
    c.received += size_t(n);
    if (c.received > kMaxRequestBytes)
      return respond(c, 431, "Request Header Fields Too Large", "request too large\n", false);
    http_parser_execute(&c.parser, &settings(), buf, size_t(n));
    if (c.request.complete) {
      const bool head = c.parser.method == HTTP_HEAD;
      if (c.parser.method != HTTP_GET && !head)
        return respond(c, 405, "Method Not Allowed", "only GET /metrics\n", false);
      if (path_of(c.request.url) != "/metrics")
        return respond(c, 404, "Not Found", "only GET /metrics\n", false);
      return respond(c, 200, "OK", render_(), head);
    }
    if (HTTP_PARSER_ERRNO(&c.parser) != HPE_OK)
      return respond(c, 400, "Bad Request",
                     fmt::format("{}\n", http_errno_description(HTTP_PARSER_ERRNO(&c.parser))),
                     false);
  }
}

void MetricsHttp::respond(Conn& c, int status, std::string_view reason, std::string body,
                          bool head) {
  const std::string_view type = status == 200 ? kMetricsContentType : "text/plain; charset=utf-8";
  c.out = fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n"
      "Cache-Control: no-store\r\n{}\r\n",
      status, reason, type, body.size(), status == 405 ? "Allow: GET, HEAD\r\n" : "");
  if (!head) c.out += body;
  c.phase = Conn::Phase::kWriting;
  write_out(c);
}

void MetricsHttp::write_out(Conn& c) {
  while (c.sent < c.out.size()) {
    ssize_t n = sys_raw([&] {
      return ::send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    });
    if (n == -EAGAIN) {
      epoll_event ev{EPOLLOUT, {.u64 = c.tag}};
      ::epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd.get(), &ev);
      return;
    }
    if (n < 0) return close(c.tag);
    c.sent += size_t(n);
  }
  // Answered: send our FIN, and read what the client still sends until its
  // own (a close with unread input would reset the connection and could
  // lose the answer on its way).
  ::shutdown(c.fd.get(), SHUT_WR);
  c.phase = Conn::Phase::kLingering;
  c.out = {};
  epoll_event ev{EPOLLIN, {.u64 = c.tag}};
  ::epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd.get(), &ev);
  read_from(c);
}

void MetricsHttp::expire(uint64_t now_ns) {
  for (auto it = conns_.begin(); it != conns_.end();)
    it = now_ns >= it->second->deadline_ns ? conns_.erase(it) : std::next(it);
}

void MetricsHttp::close(uint64_t tag) {
  conns_.erase(tag);  // closing the fd takes it out of the epoll set
}

}  // namespace sp::frontend
