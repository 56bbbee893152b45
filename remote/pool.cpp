#include "remote/pool.h"

#include <signal.h>

#include <algorithm>

#include "common/clock.h"
#include "common/log.h"
#include "common/signals.h"
#include "shm/repair.h"

namespace sp::remote {

namespace {
constexpr uint64_t kMs = 1'000'000;
}  // namespace

HostPool::HostPool(Env& env, const HostKeys& keys, worker::Poller& poller, uint32_t id,
                   uint32_t slot, shm::HostConfig cfg)
    : env_(env),
      keys_(keys),
      poller_(poller),
      id_(id),
      slot_(slot),
      cfg_(std::move(cfg)),
      hosts_(env.seg) {}

HostPool::~HostPool() {
  jobs_.clear();  // channels before their sessions
  for (Kill& k : kills_)
    if (k.channel && k.conn) k.conn->free_channel(k.channel);
  kills_.clear();
  conns_.clear();  // each finishes its frees as it goes
}

void HostPool::add(std::unique_ptr<RemoteJob> job) {
  jobs_.push_back(std::move(job));
}

void HostPool::add_check(uint32_t slot) {
  Conn& c = open_connection(monotonic_ns(), true);
  checks_.push_back({slot, env_.jobs.load(slot), c.id});
}

HostPool::Conn* HostPool::find(uint32_t id) {
  for (Conn& c : conns_)
    if (c.id == id) return &c;
  return nullptr;
}

HostPool::Conn& HostPool::open_connection(uint64_t now, bool for_check) {
  uint32_t id = next_conn_id_++;
  auto c = std::make_unique<Connection>(cfg_, keys_, poller_,
                                        worker::Tag{worker::Kind::kSocket, id_, id}, now);
  if (c->resolving())
    env_.resolver->ask(uint64_t(id_) << 32 | id, cfg_.address, uint16_t(cfg_.port));
  conns_.push_back({id, std::move(c), cap_, for_check});
  return conns_.back();
}

void HostPool::on_socket(uint32_t conn_id, uint32_t events, uint64_t now) {
  if (Conn* c = find(conn_id)) c->c->on_event(events, now);
}

void HostPool::on_resolved(uint32_t conn_id, const Resolver::Answer& a, uint64_t now) {
  if (Conn* c = find(conn_id))
    c->c->resolved(reinterpret_cast<const sockaddr*>(&a.addr), a.len, a.error, now);
}

// A ready connection with room for one more channel, the fullest first (so
// idle ones age out).
HostPool::Conn* HostPool::free_connection() {
  Conn* best = nullptr;
  for (Conn& c : conns_) {
    if (c.for_check || !c.c->ready() || c.c->opening || c.c->channels >= c.cap) continue;
    if (!best || c.c->channels > best->c->channels) best = &c;
  }
  return best;
}

void HostPool::schedule(uint64_t now) {
  uint32_t waiting = uint32_t(kills_.size());
  for (auto& j : jobs_)
    if (j->step() == RemoteJob::Step::kWaiting) ++waiting;
  for (Kill& k : kills_) {
    if (k.step != 0) continue;
    Conn* c = free_connection();
    if (!c) break;
    k.conn = c->c.get();
    k.conn->opening = true;
    k.step = 1;
    --waiting;
  }
  for (auto& j : jobs_) {
    if (j->step() != RemoteJob::Step::kWaiting) continue;
    Conn* c = free_connection();
    if (!c) break;
    j->assign(*c->c);
    --waiting;
  }
  // More connections for what still waits, beyond the room of those there
  // are: within the host's bound and the handshake bound.
  uint32_t room = 0, connecting = 0, total = 0;
  for (const Conn& c : conns_) {
    if (c.for_check || c.c->dead()) continue;
    ++total;
    if (!c.c->ready()) {
      ++connecting;
      room += cap_;
    } else if (c.cap > c.c->channels) {
      room += c.cap - c.c->channels - (c.c->opening ? 1 : 0);
    }
  }
  while (!removing_ && waiting > room && total < cfg_.max_connections &&
         connecting < kMaxHandshakes) {
    open_connection(now, false);
    ++connecting;
    ++total;
    room += cap_;
  }
}

void HostPool::step_kill(Kill& k) {
  LIBSSH2_SESSION* s = k.conn->session();
  if (k.step == 1) {
    k.channel = libssh2_channel_open_session(s);
    if (!k.channel) {
      if (libssh2_session_last_errno(s) == LIBSSH2_ERROR_EAGAIN) return;
      k.conn->opening = false;
      spdlog::warn("host {}: cannot open a channel to signal process group {}", cfg_.name, k.pgid);
      k.step = 4;
      return;
    }
    k.conn->opening = false;
    ++k.conn->channels;
    k.step = 2;
  }
  if (k.step == 2) {
    // By name where it has one (numbers differ between systems); else its number.
    const std::string name = signal_name(k.sig);
    const std::string which =
        name.size() > 3 ? "-s " + name.substr(3) : "-" + std::to_string(k.sig);
    std::string cmd = "kill " + which + " -- -" + std::to_string(k.pgid);
    int rc = libssh2_channel_exec(k.channel, cmd.c_str());
    if (rc == LIBSSH2_ERROR_EAGAIN) return;
    k.step = rc ? 4 : 3;
  }
  if (k.step == 3) {
    char sink[256];
    while (libssh2_channel_read_ex(k.channel, 0, sink, sizeof sink) > 0) {
    }
    while (libssh2_channel_read_ex(k.channel, 1, sink, sizeof sink) > 0) {
    }
    if (!libssh2_channel_eof(k.channel)) return;
    if (libssh2_channel_wait_closed(k.channel) == LIBSSH2_ERROR_EAGAIN) return;
    k.step = 4;
  }
}

void HostPool::pump_kills() {
  for (Kill& k : kills_)
    if (k.step >= 1 && k.step <= 3 && !k.conn->dead()) step_kill(k);
  for (Kill& k : kills_) {
    if (k.step != 4 || !k.channel) continue;
    k.conn->free_channel(k.channel);
    k.channel = nullptr;
    --k.conn->channels;
    if (!k.conn->busy()) k.conn->idle_since_ns = monotonic_ns();
    k.conn->sync_events();
  }
  std::erase_if(kills_, [](const Kill& k) { return k.step == 4; });
}

void HostPool::turn(uint64_t now) {
  finish_checks();  // before a dead check connection is reaped with its failure
  reap_connections(now);
  for (Conn& c : conns_) c.c->retry_frees();
  for (auto& j : jobs_) {
    while (int sig = j->take_kill()) kills_.push_back({j->remote_pgid(), sig});
  }
  schedule(now);
  pump_kills();
  for (auto& j : jobs_) {
    if (j->step() == RemoteJob::Step::kWaiting || j->done()) continue;
    if (j->connection() && j->connection()->dead()) continue;  // reaped next turn
    const bool started = j->step() != RemoteJob::Step::kOpening;
    j->pump(now);
    if (j->refused()) {
      Connection* c = j->connection();
      for (Conn& k : conns_)
        if (k.c.get() == c) {
          k.cap = std::max<uint32_t>(1, c->channels);
          cap_ = std::min(cap_, k.cap);
          spdlog::info(
              "host {}: it refused channel {} of a connection: {} per connection from now on",
              cfg_.name, c->channels + 1, k.cap);
        }
      if (c->channels == 0) {
        j->fail_unstarted({RemoteError::kChannelOpenFailed, RemotePhase::kChannel,
                           "the host refused to open a channel"});
      } else {
        j->requeue();
      }
    } else if (!started && j->step() != RemoteJob::Step::kOpening) {
      ++jobs_started_;
    }
    while (int sig = j->take_kill()) kills_.push_back({j->remote_pgid(), sig});
  }
  std::erase_if(jobs_, [](const auto& j) { return j->done(); });
  // What the pumps freed may let waiting jobs and kills go.
  schedule(now);
  pump_kills();
  for (auto& j : jobs_)
    if (j->step() == RemoteJob::Step::kOpening) j->pump(now);
  publish();
}

void HostPool::connection_died(Conn& dead) {
  const Failure& why = dead.c->failure();
  const bool before_ready = dead.c->login_ns() == 0;
  // Closed by us (idle, a check done) is no failure.
  if (!dead.for_check && why) {
    last_failure_ = why;
    last_failure_ms_ = unix_ms();
    if (!before_ready) spdlog::warn("host {}: connection lost: {}", cfg_.name, why.message);
  }
  for (Kill& k : kills_)
    if (k.conn == dead.c.get()) {
      k.channel = nullptr;
      k.conn = nullptr;
      k.step = 4;
    }
  for (auto& j : jobs_)
    // A job whose channel was opening goes back to waiting: once. A host
    // that drops every connection before a channel opens ends it failed.
    if (j->connection() == dead.c.get() && j->connection_died(why) && ++j->attempts >= 2)
      j->fail_unstarted(why ? why
                            : Failure{RemoteError::kConnectionLost, RemotePhase::kChannel,
                                      "the connection closed before a channel opened"});
  // A login that failed: the jobs still waiting get one more connection,
  // unless one is ready anyway; then they end with its failure.
  if (before_ready && !dead.for_check) {
    bool others = std::any_of(conns_.begin(), conns_.end(), [&](const Conn& c) {
      return &c != &dead && !c.for_check && !c.c->dead();
    });
    for (auto& j : jobs_) {
      if (j->step() != RemoteJob::Step::kWaiting || others) continue;
      if (++j->attempts >= 2) j->fail_unstarted(why);
    }
  }
}

void HostPool::reap_connections(uint64_t now) {
  for (Conn& c : conns_) {
    if (!c.c->dead() && c.c->ready() && !c.c->busy() && !c.for_check &&
        now - c.c->idle_since_ns >= uint64_t(cfg_.idle_timeout_ms) * kMs)
      c.c->kill({RemoteError::kNone, RemotePhase::kNone, "idle"});
    if (c.c->dead()) connection_died(c);
  }
  for (Kill& k : kills_)
    if (!k.conn && k.step == 4) k.channel = nullptr;
  std::erase_if(jobs_, [](const auto& j) { return j->done(); });
  std::erase_if(conns_, [](const Conn& c) { return c.c->dead(); });
}

void HostPool::finish_checks() {
  for (Check& ch : checks_) {
    Conn* c = find(ch.conn_id);
    if (!c) continue;
    if (!c->c->ready() && !c->c->dead()) continue;
    if (c->c->ready()) {
      const Connection& k = *c->c;
      std::string banner = k.banner();
      // The host's words: printable ASCII only (an answer is UTF-8 JSON).
      std::erase_if(banner, [](char x) { return x < 0x20 || x > 0x7e; });
      std::string out = "fingerprint " + k.host_key().fingerprint + "\nkey_type " +
                        k.host_key().type + "\nbanner " + banner + "\nauth_methods " +
                        k.auth_methods() + "\nlatency_us " + std::to_string(k.login_ns() / 1000) +
                        "\n";
      worker::RingSink sink(env_.seg, ch.slot);
      std::span<char> room = sink.room();
      size_t n = std::min(room.size(), out.size());
      std::memcpy(room.data(), out.data(), n);
      sink.take(worker::kStdout, n);
      shm::JobWord running = ch.word.with_state(shm::JobState::kRunning);
      env_.jobs.transition(ch.slot, ch.word, running);
      shm::publish_terminal(env_.seg, ch.slot, running, shm::JobState::kExited, 0, 0, "");
      c->c->kill({RemoteError::kNone, RemotePhase::kNone, "checked"});
    } else {
      const Failure& f = c->c->failure();
      shm::publish_terminal(env_.seg, ch.slot, ch.word, shm::JobState::kFailed, -1, 0, f.message,
                            uint8_t(f.code), uint8_t(f.phase));
    }
    env_.notify_frontend = true;
    ch.conn_id = 0;
  }
  std::erase_if(checks_, [](const Check& ch) { return ch.conn_id == 0; });
}

void HostPool::on_bell() {
  for (auto& j : jobs_) j->on_bell();
  for (Check& ch : checks_)
    if (env_.jobs.cancel_requested(ch.slot)) {
      if (Conn* c = find(ch.conn_id))
        c->c->kill({RemoteError::kNone, RemotePhase::kNone, "cancelled"});
      shm::publish_terminal(env_.seg, ch.slot, ch.word, shm::JobState::kCancelled, -1, 0,
                            "cancelled before it started");
      env_.notify_frontend = true;
      ch.conn_id = 0;
    }
  std::erase_if(checks_, [](const Check& ch) { return ch.conn_id == 0; });
}

void HostPool::on_timer(uint64_t now) {
  for (Conn& c : conns_) c.c->on_timer(now);
  for (auto& j : jobs_) j->on_timer(now);
}

uint64_t HostPool::next_deadline() const {
  uint64_t next = 0;
  auto take = [&](uint64_t t) {
    if (t && (!next || t < next)) next = t;
  };
  for (const Conn& c : conns_) {
    take(c.c->next_deadline());
    if (c.c->ready() && !c.c->busy() && !c.for_check)
      take(c.c->idle_since_ns + uint64_t(cfg_.idle_timeout_ms) * kMs);
  }
  for (const auto& j : jobs_) take(j->next_deadline());
  return next;
}

void HostPool::remove_host() {
  removing_ = true;
  Failure gone{RemoteError::kHostRemoved, RemotePhase::kNone, "the host was removed"};
  for (auto& j : jobs_) j->remove_host(gone);
  for (Check& ch : checks_) {
    if (Conn* c = find(ch.conn_id)) c->c->kill(gone);
    shm::publish_terminal(env_.seg, ch.slot, ch.word, shm::JobState::kFailed, -1, 0, gone.message,
                          uint8_t(gone.code), uint8_t(gone.phase));
  }
  checks_.clear();
  env_.notify_frontend = true;
}

void HostPool::shutdown() {
  for (auto& j : jobs_) j->shutdown();
  for (Check& ch : checks_)
    shm::publish_terminal(env_.seg, ch.slot, ch.word, shm::JobState::kCancelled, -1, 0,
                          "the daemon is shutting down");
  checks_.clear();
  env_.notify_frontend = true;
}

void HostPool::publish() {
  shm::PoolFigures f;
  f.generation = cfg_.generation;
  for (const Conn& c : conns_) {
    if (c.c->ready()) {
      ++f.connections;
      f.busy += c.c->channels;
      f.fingerprint = c.c->host_key().fingerprint;
      f.key_type = c.c->host_key().type;
    } else if (!c.c->dead()) {
      ++f.connecting;
    }
  }
  f.channel_cap = cap_;
  f.jobs_started = jobs_started_;
  f.last_error = last_failure_.message;
  f.last_error_unix_ms = last_failure_ms_;
  if (f.fingerprint.empty()) {
    f.fingerprint = published_.fingerprint;
    f.key_type = published_.key_type;
  }
  if (f.connections == published_.connections && f.busy == published_.busy &&
      f.connecting == published_.connecting && f.channel_cap == published_.channel_cap &&
      f.jobs_started == published_.jobs_started && f.last_error == published_.last_error &&
      f.fingerprint == published_.fingerprint && f.generation == published_.generation)
    return;
  hosts_.publish(slot_, f);
  published_ = f;
}

}  // namespace sp::remote
