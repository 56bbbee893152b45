#include "frontend/connections.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/log.h"
#include "frontend/errors.h"

namespace sp::frontend {

struct Connections::Conn {
  uint64_t id = 0;
  UniqueFd fd;
  uid_t uid = 0;                      // the peer's (SO_PEERCRED at accept)
  const rpc::Codec* codec = nullptr;  // its dialect, from its first byte; until then JSON-RPC's
  // Bytes read and not yet handled, from in_off: whole request lines that
  // wait while the connection is at its bounds (see takes_requests), then an
  // incomplete one. At most one read (64 KiB) plus one line.
  std::string in;
  size_t in_off = 0;
  bool skipping = false;     // discarding the rest of an over-long line
  rpc::FrameScanner frames;  // MessagePack-RPC: the frame at in_off, as far as it came
  std::string out;           // answers not yet written, from out_off
  size_t out_off = 0;
  // The last send found the socket full: EPOLLOUT says when to go on. A
  // backlog that has not met a full socket yet is in dirty_, and the loop
  // flushes it at the end of its turn without asking epoll.
  bool write_blocked = false;
  bool read_closed = false;  // peer shut its write side: answer what is in flight, then close
  uint32_t events = 0;       // epoll interest currently registered
  uint32_t unanswered = 0;   // calls handed to the dispatcher and not answered yet
  size_t backlog() const { return out.size() - out_off; }
  bool lines_waiting() const { return in_off < in.size(); }
  // Drops what was handled from `in`.
  void compact() {
    if (!lines_waiting()) {
      in.clear();
      in_off = 0;
    } else if (in_off > 0) {
      in.erase(0, in_off);
      in_off = 0;
    }
  }
  // The client shut its side and has everything: time to close.
  bool done() const { return read_closed && !unanswered && !backlog() && !lines_waiting(); }
};

Connections::Connections(Limits limits, int epoll_fd, UniqueFd listen_fd, Handlers handlers)
    : limits_(std::move(limits)),
      epoll_(epoll_fd),
      listen_(std::move(listen_fd)),
      handlers_(std::move(handlers)) {}

Connections::~Connections() = default;

Status Connections::start() {
  epoll_event ev{EPOLLIN, {.u64 = kListenTag}};
  if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, listen_.get(), &ev) < 0)
    return Error{errno, "epoll_ctl the listening socket"};
  return {};
}

Connections::Conn* Connections::conn(uint64_t id) const {
  auto it = conns_.find(id);
  return it == conns_.end() ? nullptr : it->second.get();
}

bool Connections::privileged(uint64_t conn_id) const {
  const Conn* c = conn(conn_id);
  return c && (c->uid == ::getuid() || c->uid == 0);
}

bool Connections::allowed(uid_t uid) const {
  if (uid == ::getuid() || uid == 0) return true;
  return std::find(limits_.allow_uids.begin(), limits_.allow_uids.end(), uid) !=
         limits_.allow_uids.end();
}

void Connections::stop_listening() {
  if (!listen_) return;
  if (!accept_paused_) ::epoll_ctl(epoll_, EPOLL_CTL_DEL, listen_.get(), nullptr);
  listen_.reset();
}

void Connections::accept_all() {
  while (listen_) {
    int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE) {
        // Out of fds: stop accepting (the listening fd would stay readable and
        // spin us) until a connection closes; waiting clients sit in the backlog.
        spdlog::warn("accept: {}; pausing accepts until a connection closes", std::strerror(errno));
        ::epoll_ctl(epoll_, EPOLL_CTL_DEL, listen_.get(), nullptr);
        accept_paused_ = true;
      } else if (errno != EAGAIN) {
        spdlog::warn("accept: {}", std::strerror(errno));
      }
      return;
    }
    UniqueFd sock(fd);
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || !allowed(cred.uid)) {
      // Closed unread; logged once per uid so a refused peer cannot flood the log.
      if (refused_uids_.size() < 1024 && refused_uids_.insert(cred.uid).second)
        spdlog::warn("refused connections from uid {} (first: pid {}); allow it with --allow-uid",
                     cred.uid, cred.pid);
      continue;
    }
    if (conns_.size() >= limits_.max_connections) {
      std::string text = json_.error(nullptr, to_rpc(TransportError::kTooManyConnections,
                                                     limits_.max_connections)) +
                         "\n";
      [[maybe_unused]] ssize_t w = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
      continue;
    }
    auto c = std::make_unique<Conn>();
    c->id = next_id_++;
    c->fd = std::move(sock);
    c->uid = cred.uid;
    c->events = EPOLLIN | EPOLLRDHUP;
    epoll_event ev{c->events, {.u64 = c->id}};
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev) < 0) {
      spdlog::error("epoll_ctl: {}", std::strerror(errno));
      continue;
    }
    conns_.emplace(c->id, std::move(c));
  }
}

bool Connections::takes_requests(const Conn& c) const {
  return !stopping_ && c.backlog() < kMaxBacklogBytes && c.unanswered < limits_.max_inflight;
}

// One of c's requests was answered: room for the lines that wait, or the
// last one of a connection whose client shut its side.
void Connections::request_finished(Conn& c) {
  if (c.done() || c.lines_waiting()) dirty_.push_back(c.id);  // flush() closes it, or takes them
  update_events(c);
}

void Connections::update_events(Conn& c) {
  bool reading = !c.read_closed && takes_requests(c);
  uint32_t want = (reading ? EPOLLIN | EPOLLRDHUP : 0u) | (c.write_blocked ? EPOLLOUT : 0u);
  if (c.events == want) return;
  // EPOLLHUP (the peer closed entirely) is reported even with no interest.
  epoll_event ev{want, {.u64 = c.id}};
  ::epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd.get(), &ev);
  c.events = want;
}

void Connections::on_event(uint64_t id, uint32_t events) {
  Conn* c = conn(id);
  if (!c) return;
  if (events & (EPOLLHUP | EPOLLERR)) {
    close(id);  // the client is gone: its jobs are cancelled
    return;
  }
  if (events & EPOLLIN) read_from(*c);
  if ((c = conn(id)) && (events & EPOLLOUT)) flush(*c);
}

void Connections::read_from(Conn& c) {
  char buf[64 * 1024];
  for (int turn = 0; turn < 16 && !c.read_closed; ++turn) {
    ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      c.in.append(buf, size_t(n));
      handle_input(c);
      if (!takes_requests(c)) break;
      if (size_t(n) < sizeof buf) break;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n < 0) {
      close(c.id);
      return;
    }
    // EOF: the client shut its write side. Answer what is in flight, then close.
    c.read_closed = true;
    handle_input(c);
  }
  if (c.done()) {
    close(c.id);
    return;
  }
  update_events(c);
}

void Connections::handle_input(Conn& c) {
  if (!c.codec && c.lines_waiting())
    c.codec = rpc::starts_msgpack(uint8_t(c.in[c.in_off]))
                  ? static_cast<const rpc::Codec*>(&msgpack_)
                  : &json_;
  if (c.codec == &msgpack_)
    handle_frames(c);
  else
    handle_lines(c);
}

// Lines past the connection's bounds wait in c.in, and reading stops, until
// answers are written or requests finish (flush() comes back here): one read
// cannot start more work than the bounds allow.
void Connections::handle_lines(Conn& c) {
  while (c.lines_waiting() && takes_requests(c)) {
    std::string_view rest = std::string_view(c.in).substr(c.in_off);
    size_t nl = rest.find('\n');
    if (nl == std::string_view::npos && !c.read_closed) {  // the line's end is still to come
      if (!c.skipping && rest.size() > limits_.max_line_bytes) {
        send(c.id,
             json_.error(nullptr, to_rpc(TransportError::kLineTooLong, limits_.max_line_bytes)));
        c.skipping = true;
      }
      if (c.skipping) c.in_off = c.in.size();
      break;
    }
    size_t len = std::min(nl, rest.size());  // at EOF the last line needs no '\n'
    if (c.skipping)
      c.skipping = false;  // the end of the over-long line
    else if (len > limits_.max_line_bytes)
      send(c.id,
           json_.error(nullptr, to_rpc(TransportError::kLineTooLong, limits_.max_line_bytes)));
    else
      handle_line(c, rest.substr(0, len));
    c.in_off += std::min(len + 1, rest.size());
  }
  c.compact();
}

// MessagePack frames, as lines above: those past the bounds wait in c.in.
void Connections::handle_frames(Conn& c) {
  while (c.lines_waiting() && takes_requests(c)) {
    std::string_view rest = std::string_view(c.in).substr(c.in_off);
    rpc::FrameScan f = c.frames.scan(rest);
    if (f.status == rpc::FrameScan::kInvalid)
      return give_up(c, {rpc::Code::ParseError, "parse error: " + f.why});
    if (f.status == rpc::FrameScan::kNeedMore || f.size > limits_.max_line_bytes) {
      if (f.size > limits_.max_line_bytes || rest.size() > limits_.max_line_bytes)
        return give_up(c, to_rpc(TransportError::kLineTooLong, limits_.max_line_bytes));
      if (c.read_closed)
        return give_up(c, {rpc::Code::ParseError, "parse error: the last message is cut short"});
      break;
    }
    handle_line(c, rest.substr(0, f.size));
    c.in_off += f.size;
  }
  c.compact();
}

void Connections::give_up(Conn& c, const rpc::RpcError& err) {
  send(c.id, c.codec->error(nullptr, err));
  c.in.clear();
  c.in_off = 0;
  c.frames = {};
  c.read_closed = true;  // nothing more is read; it closes once answered (Conn::done)
}

const rpc::Codec& Connections::codec_of(uint64_t conn_id) const {
  const Conn* c = conn(conn_id);
  return c && c->codec ? *c->codec : json_;
}

void Connections::handle_line(Conn& c, std::string_view line) {
  rpc::Line parsed = c.codec->decode(line);
  if (parsed.error) {
    send(c.id, c.codec->error(nullptr, *parsed.error));
    return;
  }
  std::shared_ptr<Batch> batch;
  if (parsed.batch) {
    batch = std::make_shared<Batch>();
    batch->conn_id = c.id;
    batch->remaining = parsed.calls.size();
  }
  const uint64_t id = c.id;
  const bool bytes = c.codec->carries_bytes();  // `c` may be gone after a dispatch
  for (rpc::Call& call : parsed.calls) {
    Reply r{id, std::move(call.id), call.notification, bytes, batch};
    // The dispatcher may answer at once, which may close the connection.
    if (Conn* live = conn(id)) ++live->unanswered;
    if (batch_full(r))  // not run: the batch could not carry its answer
      fail(r, to_rpc(TransportError::kBatchFull, kMaxBacklogBytes));
    else if (call.error)
      fail(r, *call.error);
    else
      handlers_.dispatch(call, std::move(r));
  }
}

bool Connections::wanted(const Reply& r) const {
  return !r.silent && r.conn_id && conn(r.conn_id);
}

void Connections::answer(Reply& r, const rpc::Value& result) {
  finish(r, wanted(r) ? codec_of(r.conn_id).result(r.id, result) : std::string());
}

void Connections::fail(Reply& r, const rpc::RpcError& err) {
  finish(r, wanted(r) ? codec_of(r.conn_id).error(r.id, err) : std::string());
}

void Connections::drop(Reply& r) {
  finish(r, std::string());
}

void Connections::partial(const Reply& r, const rpc::Value& result) {
  if (!wanted(r)) return;
  Conn& c = *conn(r.conn_id);
  const rpc::Codec& codec = codec_of(r.conn_id);
  const size_t before = c.out.size();
  codec.chunk(c.out, r.id, result);  // into the buffer itself: no copy of the frame
  c.out += codec.terminator();
  unsent_ += c.out.size() - before;
  dirty_.push_back(r.conn_id);
}

void Connections::finish(Reply& r, std::string text) {
  Conn* c = r.conn_id ? conn(r.conn_id) : nullptr;
  if (c) {
    --c->unanswered;
    request_finished(*c);
  }
  if (r.batch) {
    Batch& b = *r.batch;
    if (!r.silent && !text.empty()) {
      b.held_bytes += text.size();
      unsent_ += text.size();  // held for the budget like written answers
      b.answers.push_back(std::move(text));
    }
    if (--b.remaining == 0) {
      unsent_ -= b.held_bytes;
      if (!b.answers.empty()) send(b.conn_id, codec_of(b.conn_id).batch(b.answers));
    }
    r.batch.reset();
  } else if (c && !text.empty()) {
    send(r.conn_id, std::move(text));
  }
  r.conn_id = 0;  // answered: nothing more goes to it
}

void Connections::send(uint64_t conn_id, std::string text) {
  Conn* c = conn(conn_id);
  if (!c) return;
  const std::string_view end = c->codec ? c->codec->terminator() : "\n";
  unsent_ += text.size() + end.size();
  if (c->out.empty()) {
    c->out = std::move(text);
  } else {
    c->out += text;
  }
  c->out += end;
  dirty_.push_back(conn_id);
}

void Connections::flush_dirty() {
  // Until none is left: a flush may handle request lines that waited, whose
  // answers make their connection dirty again.
  while (!dirty_.empty()) {
    std::vector<uint64_t> dirty;
    dirty.swap(dirty_);
    for (uint64_t id : dirty)
      if (Conn* c = conn(id)) flush(*c);
  }
}

void Connections::flush(Conn& c) {
  while (c.backlog()) {
    ssize_t n =
        ::send(c.fd.get(), c.out.data() + c.out_off, c.backlog(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.out_off += size_t(n);
      unsent_ -= uint64_t(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    close(c.id);  // EPIPE / ECONNRESET: the client is gone
    return;
  }
  c.write_blocked = c.backlog() > 0;
  bool was_full = c.out.size() >= kMaxBacklogBytes;
  if (!c.backlog()) {
    if (c.out.capacity() > kKeptBufferBytes)
      std::string().swap(c.out);
    else
      c.out.clear();
    c.out_off = 0;
  } else if (c.out_off > (1u << 20) && c.out_off * 2 > c.out.size()) {
    c.out.erase(0, c.out_off);
    c.out_off = 0;
  }
  const uint64_t id = c.id;
  if (c.lines_waiting()) handle_input(c);  // requests that waited for room
  Conn* live = conn(id);
  if (!live) return;
  if (live->done()) {
    close(id);
    return;
  }
  update_events(*live);
  // Work held on this connection's backlog may move again.
  if (was_full && live->backlog() < kMaxBacklogBytes) handlers_.drained(id);
}

bool Connections::backlogged(uint64_t conn_id) const {
  Conn* c = conn_id ? conn(conn_id) : nullptr;
  return c && c->backlog() >= kMaxBacklogBytes;
}

bool Connections::over_inflight(const Reply& r) const {
  Conn* c = r.conn_id ? conn(r.conn_id) : nullptr;
  return c && c->unanswered > limits_.max_inflight;
}

rpc::RpcError Connections::inflight_error() const {
  return to_rpc(TransportError::kTooManyInflight, limits_.max_inflight);
}

bool Connections::any_unsent() const {
  for (const auto& [id, c] : conns_)
    if (c->backlog()) return true;
  return false;
}

void Connections::close(uint64_t id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  unsent_ -= it->second->backlog();
  conns_.erase(it);  // closes the socket, which also removes it from epoll
  handlers_.closed(id);
  if (accept_paused_ && listen_) {
    accept_paused_ = false;
    epoll_event ev{EPOLLIN, {.u64 = kListenTag}};
    ::epoll_ctl(epoll_, EPOLL_CTL_ADD, listen_.get(), &ev);
  }
}

}  // namespace sp::frontend
