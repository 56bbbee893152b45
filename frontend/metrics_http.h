// MetricsHttp: the HTTP endpoint of --metrics-listen. Accepts on the TCP
// socket the supervisor bound (it keeps its own copy, so a restarted
// frontend serves the same port), reads one request per connection with
// http_parser, answers `GET /metrics` (and HEAD) with the exposition, other
// paths 404, other methods 405, a malformed request 400 and one over
// kMaxRequestBytes 431, then closes (Connection: close).
//
// Bounds: kMaxConnections at once (one more is accepted and closed at once);
// a connection lives kTimeoutNs at most. Anyone who can reach the address
// may read the metrics: they hold counts, never a command, an output or a
// secret.
//
// Used from the frontend's single thread, on its epoll set.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "common/result.h"
#include "common/unique_fd.h"

namespace sp::frontend {

class MetricsHttp {
 public:
  static constexpr size_t kMaxConnections = 16;
  static constexpr size_t kMaxRequestBytes = 8192;
  static constexpr uint64_t kTimeoutNs = 10'000'000'000;
  // Epoll tags: the listening socket's, and the range of connections'.
  static constexpr uint64_t kFirstConnTag = uint64_t{1} << 62;

  // `listen_fd` is owned from now on; `render` makes the exposition.
  MetricsHttp(int epoll_fd, UniqueFd listen_fd, uint64_t listen_tag,
              std::function<std::string()> render);
  ~MetricsHttp();
  MetricsHttp(const MetricsHttp&) = delete;
  MetricsHttp& operator=(const MetricsHttp&) = delete;

  Status start();
  bool owns(uint64_t tag) const { return tag >= kFirstConnTag; }
  void accept_all();
  void on_event(uint64_t tag, uint32_t events);
  // Closes connections older than kTimeoutNs. Call at least once a second.
  void expire(uint64_t now_ns);
  // "127.0.0.1:9100", "[::1]:9100": where it listens.
  std::string address() const;

 private:
  struct Conn;
  void read_from(Conn& c);
  void respond(Conn& c, int status, std::string_view reason, std::string body, bool head);
  void write_out(Conn& c);
  void close(uint64_t tag);

  int epoll_;
  UniqueFd listen_;
  uint64_t listen_tag_;
  std::function<std::string()> render_;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  uint64_t next_tag_ = kFirstConnTag;
};

}  // namespace sp::frontend
