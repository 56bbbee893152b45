#include "frontend/server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "common/clock.h"
#include "common/log.h"
#include "common/sys.h"

extern char** environ;

namespace sp::frontend {

namespace {
enum Tag : uint64_t { kListen = 1, kBell = 2, kSignal = 3 };
constexpr uint64_t kStopFlushNs = 1'000'000'000;  // on SIGTERM: time to write last answers

UniqueFd open_dir(const std::string& path) {
  if (path.empty()) return {};
  return UniqueFd(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
}

}  // namespace

Frontend::Frontend(const Options& o, shm::Segment seg)
    : o_(o),
      seg_(std::move(seg)),
      jobs_(seg_.jobs()),
      ring_(seg_.ring()),
      sessions_(seg_),
      bell_(&seg_.header().frontend_bell, o.frontend_fd),
      submit_(&seg_.header().submit_bell, o.submit_fd),
      listen_(o.listen_fd),
      spool_dir_(open_dir(o.spool_dir)),
      records_(seg_, spool_dir_ ? spool_dir_.get() : -1, uint64_t(o.retain_s * 1000),
               o.job_spool_bytes) {
  for (size_t i = 0; i < o.worker_fds.size(); ++i)
    worker_bells_.emplace_back(&seg_.worker(uint32_t(i)).bell, o.worker_fds[i]);
}

Status Frontend::init() {
  incarnation_ = seg_.header().frontend_incarnation.load();
  base_env_ = base_env(environ, o_.env_pass);
  sessions_.recover();
  if (!o_.spool_dir.empty() && !spool_dir_)
    return Error{errno, "open spool directory " + o_.spool_dir};
  // Detached jobs the last frontend accepted are ours now.
  records_.recover();
  for (uint32_t i : records_.all()) {
    const shm::JobRecord& r = records_.at(i);
    if (JobRecords::is_plan(r)) {
      // An attached plan's caller is gone: cancelled if it runs, forgotten
      // once it has ended (service_plans).
      open_plans_.emplace_back(i, r.seq);
    } else if (!r.plan && !records_.settle(i)) {
      unsettled_.emplace_back(i, r.seq);
    }
  }
  // accept4 must not block our loop (SOCK_NONBLOCK only applies to the new socket).
  if (auto r = sys("fcntl O_NONBLOCK", [&] { return ::fcntl(listen_.get(), F_SETFL, O_NONBLOCK); });
      !r)
    return r.error();
  ::signal(SIGPIPE, SIG_IGN);  // we never spawn: ignoring is inherited by no one
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, s);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  auto sfd = sys("signalfd", [&] { return ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK); });
  if (!sfd) return sfd.error();
  signal_fd_.reset(*sfd);
  auto ep = sys("epoll_create1", [] { return ::epoll_create1(EPOLL_CLOEXEC); });
  if (!ep) return ep.error();
  epoll_.reset(*ep);
  for (auto [fd, t] :
       {std::pair{listen_.get(), kListen}, {o_.frontend_fd, kBell}, {signal_fd_.get(), kSignal}}) {
    epoll_event ev{EPOLLIN, {.u64 = t}};
    if (auto r =
            sys("epoll_ctl", [&] { return ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev); });
        !r)
      return r.error();
  }
  return {};
}

int Frontend::run() {
  spdlog::info("ready (incarnation {})", incarnation_);
  check_draining();
  epoll_event events[128];
  uint64_t stop_deadline = 0;
  const uint64_t tick_ns = uint64_t(seg_.caps().tick_ms) * 1'000'000;
  uint64_t next_tick_ns = monotonic_ns() + tick_ns;
  for (;;) {
    int timeout = next_wait_ms(int(seg_.caps().tick_ms));  // bounded: see the n == 0 case below
    if (stopping_) {
      bool unsent = false;
      for (auto& [id, c] : conns_) unsent |= c->backlog() > 0;
      if (!unsent || monotonic_ns() >= stop_deadline) break;
      timeout = 10;
    }
    seg_.header().frontend_heartbeat_ns.store(monotonic_ns(), std::memory_order_relaxed);
    int n = ::epoll_wait(epoll_.get(), events, 128, timeout);
    if (n < 0 && errno != EINTR) {
      spdlog::critical("epoll_wait: {}", std::strerror(errno));
      return 1;
    }
    // The tick: re-check what a doorbell would have said (a lost wake-up, or
    // a job held for the output budget whose turn came without one). By time,
    // not only when idle: a busy connection must not starve it.
    if (uint64_t now = monotonic_ns(); n == 0 || now >= next_tick_ns) {
      next_tick_ns = now + tick_ns;
      check_draining();
      service_all();
      expire();
    }
    for (int i = 0; i < n; ++i) {
      uint64_t t = events[i].data.u64;
      if (t == kListen) {
        accept_all();
      } else if (t == kBell) {
        bell_.acknowledge();
        check_draining();
        service_all();
      } else if (t == kSignal) {
        signalfd_siginfo si;
        while (::read(signal_fd_.get(), &si, sizeof si) == sizeof si) {
        }
        if (!stopping_) {
          // The supervisor stops us last: deliver what the workers finished.
          stopping_ = true;
          stop_deadline = monotonic_ns() + kStopFlushNs;
          service_all();
        }
      } else {
        on_conn_event(t, events[i].events);
      }
    }
    // Until none is left: a flush may handle request lines that waited,
    // whose answers make their connection dirty again.
    while (!dirty_.empty()) {
      std::vector<uint64_t> dirty;
      dirty.swap(dirty_);
      for (uint64_t id : dirty)
        if (Conn* c = conn(id)) flush(*c);
    }
    // Jobs held for the budget may go on once answers were written.
    if (held_back_ && !over_budget()) service_all();
  }
  spdlog::info("stopped");
  return 0;
}

void Frontend::check_draining() {
  if (!listen_ || !seg_.header().draining.load()) return;
  if (!accept_paused_) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, listen_.get(), nullptr);
  listen_.reset();
  spdlog::info("draining: not accepting connections");
}

bool Frontend::allowed(uid_t uid) const {
  if (uid == ::getuid() || uid == 0) return true;
  return std::find(o_.allow_uids.begin(), o_.allow_uids.end(), uid) != o_.allow_uids.end();
}

Conn* Frontend::conn(uint64_t id) {
  auto it = conns_.find(id);
  return it == conns_.end() ? nullptr : it->second.get();
}

void Frontend::accept_all() {
  while (listen_) {
    int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE) {
        // Out of fds: stop accepting (the listening fd would stay readable and
        // spin us) until a connection closes; waiting clients sit in the backlog.
        spdlog::warn("accept: {}; pausing accepts until a connection closes", std::strerror(errno));
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, listen_.get(), nullptr);
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
    if (conns_.size() >= o_.max_connections) {
      std::string text = rpc::error_text(nullptr, {rpc::Code::LimitExceeded,
                                                   "too many connections (the limit is " +
                                                       std::to_string(o_.max_connections) + ")"}) +
                         "\n";
      [[maybe_unused]] ssize_t w = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
      continue;
    }
    auto c = std::make_unique<Conn>();
    c->id = next_conn_id_++;
    c->fd = std::move(sock);
    c->events = EPOLLIN | EPOLLRDHUP;
    epoll_event ev{c->events, {.u64 = c->id}};
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) < 0) {
      spdlog::error("epoll_ctl: {}", std::strerror(errno));
      continue;
    }
    conns_.emplace(c->id, std::move(c));
  }
}

bool Frontend::takes_requests(const Conn& c) const {
  return !stopping_ && c.backlog() < kMaxBacklogBytes && c.unfinished() < o_.max_inflight;
}

// One of c's requests was answered: room for the lines that wait, or the
// last one of a connection whose client shut its side.
void Frontend::request_finished(Conn& c) {
  if (c.done() || c.lines_waiting()) dirty_.push_back(c.id);  // flush() closes it, or takes them
  update_events(c);
}

void Frontend::update_events(Conn& c) {
  bool reading = !c.read_closed && takes_requests(c);
  uint32_t want = (reading ? EPOLLIN | EPOLLRDHUP : 0u) | (c.backlog() ? EPOLLOUT : 0u);
  if (c.events == want) return;
  // EPOLLHUP (the peer closed entirely) is reported even with no interest.
  epoll_event ev{want, {.u64 = c.id}};
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
  c.events = want;
}

void Frontend::on_conn_event(uint64_t id, uint32_t events) {
  Conn* c = conn(id);
  if (!c) return;
  if (events & (EPOLLHUP | EPOLLERR)) {
    close_conn(id);  // the client is gone: its jobs are cancelled
    return;
  }
  if (events & EPOLLIN) read_from(*c);
  if ((c = conn(id)) && (events & EPOLLOUT)) flush(*c);
}

void Frontend::read_from(Conn& c) {
  char buf[64 * 1024];
  for (int turn = 0; turn < 16 && !c.read_closed; ++turn) {
    ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      take_bytes(c, {buf, size_t(n)});
      if (!takes_requests(c)) break;
      if (size_t(n) < sizeof buf) break;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n < 0) {
      close_conn(c.id);
      return;
    }
    // EOF: the client shut its write side. Answer what is in flight, then close.
    c.read_closed = true;
    handle_lines(c);
  }
  if (c.done()) {
    close_conn(c.id);
    return;
  }
  update_events(c);
}

void Frontend::take_bytes(Conn& c, std::string_view data) {
  c.in.append(data);
  handle_lines(c);
}

// Lines past the connection's bounds wait in c.in, and reading stops, until
// answers are written or requests finish (flush() comes back here): one read
// cannot start more work than the bounds allow.
void Frontend::handle_lines(Conn& c) {
  while (c.lines_waiting() && takes_requests(c)) {
    std::string_view rest = std::string_view(c.in).substr(c.in_off);
    size_t nl = rest.find('\n');
    if (nl == std::string_view::npos && !c.read_closed) {  // the line's end is still to come
      if (!c.skipping && rest.size() > o_.max_line_bytes) {
        line_too_long(c);
        c.skipping = true;
      }
      if (c.skipping) c.in_off = c.in.size();
      break;
    }
    size_t len = std::min(nl, rest.size());  // at EOF the last line needs no '\n'
    if (c.skipping)
      c.skipping = false;  // the end of the over-long line
    else if (len > o_.max_line_bytes)
      line_too_long(c);
    else
      handle_line(c, rest.substr(0, len));
    c.in_off += std::min(len + 1, rest.size());
  }
  if (!c.lines_waiting()) {
    c.in.clear();
    c.in_off = 0;
  } else if (c.in_off > 0) {
    c.in.erase(0, c.in_off);
    c.in_off = 0;
  }
}

void Frontend::line_too_long(Conn& c) {
  send(c.id, rpc::error_text(
                 nullptr, {rpc::Code::LimitExceeded,
                           "request line exceeds " + std::to_string(o_.max_line_bytes) + " bytes",
                           {{"limit", o_.max_line_bytes}}}));
}

void Frontend::handle_line(Conn& c, std::string_view line) {
  rpc::Line parsed = rpc::parse_line(line);
  if (parsed.error) {
    send(c.id, rpc::error_text(nullptr, *parsed.error));
    return;
  }
  std::shared_ptr<Batch> batch;
  if (parsed.batch) {
    batch = std::make_shared<Batch>();
    batch->conn_id = c.id;
    batch->remaining = parsed.calls.size();
  }
  for (rpc::Call& call : parsed.calls) {
    Reply r{c.id, call.id, call.notification, batch};
    if (batch_full(r))  // not run: the batch could not carry its answer
      answer(r, rpc::error_text(r.id, batch_full_error()));
    else
      handle_call(c, call, std::move(r));
  }
}

rpc::RpcError batch_full_error() {
  return {rpc::Code::LimitExceeded,
          "the batch's answers passed " + std::to_string(kMaxBacklogBytes) +
              " bytes; this member was not run: send it again",
          {{"limit", kMaxBacklogBytes}}};
}

void Frontend::send(uint64_t conn_id, std::string text) {
  Conn* c = conn(conn_id);
  if (!c) return;
  unsent_ += text.size() + 1;
  if (c->out.empty()) {
    c->out = std::move(text);
  } else {
    c->out += text;
  }
  c->out += '\n';
  dirty_.push_back(conn_id);
}

void Frontend::answer(Reply& r, std::string text) {
  if (r.batch) {
    Batch& b = *r.batch;
    if (!r.silent) {
      b.held_bytes += text.size();
      unsent_ += text.size();  // held for the budget like written answers
      b.answers.push_back(std::move(text));
    }
    if (--b.remaining == 0) {
      unsent_ -= b.held_bytes;
      if (!b.answers.empty()) send(b.conn_id, rpc::batch_text(b.answers));
    }
    r.batch.reset();
    return;
  }
  if (!r.silent && r.conn_id) send(r.conn_id, std::move(text));
}

void Frontend::flush(Conn& c) {
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
    close_conn(c.id);  // EPIPE / ECONNRESET: the client is gone
    return;
  }
  bool was_full = c.out.size() >= kMaxBacklogBytes;
  if (!c.backlog()) {
    c.out.clear();
    c.out_off = 0;
  } else if (c.out_off > (1u << 20) && c.out_off * 2 > c.out.size()) {
    c.out.erase(0, c.out_off);
    c.out_off = 0;
  }
  if (c.lines_waiting()) handle_lines(c);  // lines that waited for room
  if (c.done()) {
    close_conn(c.id);
    return;
  }
  update_events(c);
  // Jobs paused on this connection's backlog may move again.
  if (was_full && c.backlog() < kMaxBacklogBytes) {
    if (c.waits) service_detached();  // its parked waits whose answers were held
    std::vector<uint32_t> slots = c.jobs;
    for (uint32_t slot : slots)
      if (auto it = pending_.find(slot); it != pending_.end())
        if (service(it->second)) pending_.erase(it);
  }
}

void Frontend::close_conn(uint64_t id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  unsent_ -= it->second->backlog();
  drop_waiters(id);
  for (uint32_t slot : it->second->jobs)
    if (auto p = pending_.find(slot); p != pending_.end()) {
      p->second.reply.conn_id = 0;
      cancel(p->second, "cancelled: the client disconnected");
    }
  conns_.erase(it);  // closes the socket, which also removes it from epoll
  if (accept_paused_ && listen_) {
    accept_paused_ = false;
    epoll_event ev{EPOLLIN, {.u64 = kListen}};
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listen_.get(), &ev);
  }
}

int run(const Options& options) {
  auto seg = shm::Segment::open(options.shm_name);
  if (!seg) {
    spdlog::critical("{}", seg.error().message());
    return 1;
  }
  Frontend f(options, std::move(seg).value());
  if (Status s = f.init(); !s) {
    spdlog::critical("{}", s.error().message());
    return 1;
  }
  return f.run();
}

}  // namespace sp::frontend
