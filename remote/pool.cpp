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
  Conn& c = open_connection(monotonic_ns(), Use::kCheck);
  checks_.push_back({slot, env_.jobs.load(slot), c.id});
}

HostPool::Conn* HostPool::find(uint32_t id) {
  for (Conn& c : conns_)
    if (c.id == id) return &c;
  return nullptr;
}

HostPool::Conn& HostPool::open_connection(uint64_t now, Use use) {
  uint32_t id = next_conn_id_++;
  auto c = std::make_unique<Connection>(cfg_, keys_, poller_,
                                        worker::Tag{worker::Kind::kSocket, id_, id}, now);
  if (c->resolving())
    env_.resolver->ask(uint64_t(id_) << 32 | id, cfg_.address, uint16_t(cfg_.port));
  conns_.push_back({id, std::move(c), cap_, use});
  return conns_.back();
}

void HostPool::on_socket(uint32_t conn_id, uint32_t events, uint64_t now) {
  if (conn_id & Connection::kAgentEvent) {
    if (Conn* c = find(conn_id & ~Connection::kAgentEvent)) c->c->on_agent_event(now);
  } else if (Conn* c = find(conn_id)) {
    c->c->on_event(events, now);
  }
}

void HostPool::on_resolved(uint32_t conn_id, const Resolver::Answer& a, uint64_t now) {
  if (Conn* c = find(conn_id))
    c->c->resolved(reinterpret_cast<const sockaddr*>(&a.addr), a.len, a.error, now);
}

// A ready connection for `use` with room for one more channel, the fullest
// first (so idle ones age out).
HostPool::Conn* HostPool::free_connection(Use use) {
  Conn* best = nullptr;
  for (Conn& c : conns_) {
    if (c.use != use || !c.c->ready() || c.c->opening || c.c->channels >= c.cap) continue;
    if (!best || c.c->channels > best->c->channels) best = &c;
  }
  return best;
}

void HostPool::schedule(uint64_t now) {
  schedule_kills(now);
  uint32_t waiting = 0;
  for (auto& j : jobs_)
    if (j->step() == RemoteJob::Step::kWaiting) ++waiting;
  for (auto& j : jobs_) {
    if (j->step() != RemoteJob::Step::kWaiting) continue;
    Conn* c = free_connection(Use::kJobs);
    if (!c) break;
    j->assign(*c->c);
    --waiting;
  }
  // More connections for what still waits, beyond the room of those there
  // are: within the host's bound and the handshake bound.
  uint32_t room = 0, connecting = 0, total = 0;
  for (const Conn& c : conns_) {
    if (c.use != Use::kJobs || c.c->dead()) continue;
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
    open_connection(now, Use::kJobs);
    ++connecting;
    ++total;
    room += cap_;
  }
}

// Kills go first: on a job connection with room, else on the kill
// connection, opened when one is needed.
void HostPool::schedule_kills(uint64_t now) {
  bool waiting = false;
  for (Kill& k : kills_) {
    if (k.step != 0) continue;
    Conn* c = free_connection(Use::kJobs);
    if (!c) c = free_connection(Use::kKills);
    if (!c) {
      waiting = true;
      break;
    }
    k.conn = c->c.get();
    k.conn->opening = true;
    k.step = 1;
  }
  if (!waiting) return;
  for (const Conn& c : conns_) {
    if (c.use == Use::kKills && !c.c->dead()) return;  // logging in, or its channels free up
    // Room once its channel open under way (one at a time) is done.
    if (c.use == Use::kJobs && c.c->ready() && c.c->channels + 1 < c.cap) return;
  }
  open_connection(now, Use::kKills);
}

void HostPool::queue_kill(int32_t pgid, int sig) {
  for (const Kill& k : kills_)
    if (k.step == 0 && k.pgid == pgid && k.sig == sig) return;
  if (kills_.size() >= kMaxKills) {
    spdlog::warn("host {}: {} kills wait already: signal {} to process group {} is dropped",
                 cfg_.name, kMaxKills, sig, pgid);
    return;
  }
  kills_.push_back({pgid, sig});
}

void HostPool::take_kills(RemoteJob& job) {
  while (int sig = job.take_kill()) queue_kill(job.remote_pgid(), sig);
}

bool HostPool::retry_kill(Kill& k, const std::string& why) {
  k.conn = nullptr;
  k.channel = nullptr;
  if (++k.tries >= kMaxKillTries) {
    spdlog::warn("host {}: signal {} to process group {} not sent after {} tries: {}", cfg_.name,
                 k.sig, k.pgid, k.tries, why);
    k.step = 4;
    return false;
  }
  k.step = 0;
  return true;
}

void HostPool::release(Kill& k) {
  if (!k.channel) return;
  k.conn->free_channel(k.channel);
  k.channel = nullptr;
  --k.conn->channels;
  if (!k.conn->busy()) k.conn->idle_since_ns = monotonic_ns();
  k.conn->sync_events();
}

// The host refused channel `c->channels + 1` of connection `c`: it holds
// that many from now on (at least one), and so do new connections.
void HostPool::refused_on(Connection* c) {
  for (Conn& k : conns_)
    if (k.c.get() == c) {
      k.cap = std::max<uint32_t>(1, c->channels);
      cap_ = std::min(cap_, k.cap);
      spdlog::info("host {}: it refused channel {} of a connection: {} per connection from now on",
                   cfg_.name, c->channels + 1, k.cap);
    }
}

void HostPool::step_kill(Kill& k) {
  LIBSSH2_SESSION* s = k.conn->session();
  if (k.step == 1) {
    k.channel = libssh2_channel_open_session(s);
    if (!k.channel) {
      const int err = libssh2_session_last_errno(s);
      if (err == LIBSSH2_ERROR_EAGAIN) return;
      k.conn->opening = false;
      if (err == LIBSSH2_ERROR_CHANNEL_FAILURE) refused_on(k.conn);
      if (channel_error(err))
        retry_kill(k, "the host did not open a channel");
      else
        k.conn->fail("cannot open a channel");  // connection_died tries it again
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
    const int rc = libssh2_channel_exec(k.channel, cmd.c_str());
    if (rc == LIBSSH2_ERROR_EAGAIN) return;
    if (rc && !channel_error(rc)) return k.conn->fail("cannot start kill");
    if (rc) {
      release(k);
      retry_kill(k, "the host did not start kill");
      return;
    }
    k.step = 3;
    const uint64_t now = monotonic_ns();
    for (auto& j : jobs_)
      if (j->remote_pgid() == k.pgid) j->kill_sent(k.sig, now);
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
  for (Kill& k : kills_)
    if (k.step == 4) release(k);
  std::erase_if(kills_, [](const Kill& k) { return k.step == 4; });
}

void HostPool::turn(uint64_t now) {
  finish_checks();  // before a dead check connection is reaped with its failure
  reap_connections(now);
  for (Conn& c : conns_) c.c->retry_frees();
  for (auto& j : jobs_) take_kills(*j);
  schedule(now);
  pump_kills();
  // Both of the turn's pumps count a job started when its channel opens,
  // and act on a refusal (MaxSessions) before the job is pumped again.
  auto pump = [&](RemoteJob& j) {
    const bool was_started = j.started();
    j.pump(now);
    if (!was_started && j.started()) ++jobs_started_;
    if (!j.refused()) return;
    Connection* c = j.connection();
    refused_on(c);
    if (c->channels == 0) {
      j.fail_unstarted({RemoteError::kChannelOpenFailed, RemotePhase::kChannel,
                        "the host refused to open a channel"});
    } else {
      j.requeue();
    }
  };
  for (auto& j : jobs_) {
    if (j->step() == RemoteJob::Step::kWaiting || j->done()) continue;
    if (j->connection() && j->connection()->dead()) continue;  // reaped next turn
    pump(*j);
    take_kills(*j);
  }
  std::erase_if(jobs_, [](const auto& j) { return j->done(); });
  // What the pumps freed may let waiting jobs and kills go.
  schedule(now);
  pump_kills();
  for (auto& j : jobs_)
    if (j->step() == RemoteJob::Step::kOpening && !j->connection()->dead()) pump(*j);
  publish();
}

void HostPool::connection_died(Conn& dead) {
  const Failure& why = dead.c->failure();
  const bool before_ready = dead.c->login_ns() == 0;
  // Closed by us (idle, a check done) is no failure.
  if (dead.use != Use::kCheck && why) {
    last_failure_ = why;
    last_failure_ms_ = unix_ms();
    if (!before_ready) spdlog::warn("host {}: connection lost: {}", cfg_.name, why.message);
  }
  const std::string what = why ? why.message : "the connection closed";
  // A kill sent is done; one not sent yet is tried again (its channel went
  // with the session). A kill connection that never logged in costs every
  // waiting kill a try.
  for (Kill& k : kills_) {
    if (k.conn == dead.c.get()) {
      k.channel = nullptr;
      if (k.step == 3)
        k.step = 4;
      else
        retry_kill(k, what);
    } else if (k.step == 0 && before_ready && dead.use == Use::kKills) {
      retry_kill(k, what);
    }
  }
  for (auto& j : jobs_) {
    // A job whose channel was opening goes back to waiting: once. A host
    // that drops every connection before a channel opens ends it failed.
    // A started one ends lost, and its group is killed.
    if (j->connection() == dead.c.get() && j->connection_died(why) && ++j->attempts >= 2)
      j->fail_unstarted(why ? why
                            : Failure{RemoteError::kConnectionLost, RemotePhase::kChannel,
                                      "the connection closed before a channel opened"});
    take_kills(*j);
  }
  // A login that failed: the jobs still waiting get one more connection,
  // unless one is ready anyway; then they end with its failure.
  if (before_ready && dead.use == Use::kJobs) {
    bool others = std::any_of(conns_.begin(), conns_.end(), [&](const Conn& c) {
      return &c != &dead && c.use == Use::kJobs && !c.c->dead();
    });
    for (auto& j : jobs_) {
      if (j->step() != RemoteJob::Step::kWaiting || others) continue;
      if (++j->attempts >= 2) j->fail_unstarted(why);
    }
  }
}

void HostPool::reap_connections(uint64_t now) {
  for (Conn& c : conns_) {
    if (!c.c->dead() && c.c->ready() && !c.c->busy() && c.use != Use::kCheck &&
        now - c.c->idle_since_ns >= uint64_t(cfg_.idle_timeout_ms) * kMs)
      c.c->kill({RemoteError::kNone, RemotePhase::kNone, "idle"});
    if (c.c->dead()) connection_died(c);
  }
  std::erase_if(kills_, [](const Kill& k) { return k.step == 4; });
  std::erase_if(jobs_, [](const auto& j) { return j->done(); });
  std::erase_if(conns_, [](const Conn& c) { return c.c->dead(); });
}

void HostPool::finish_checks() {
  for (Check& ch : checks_) {
    Conn* c = find(ch.conn_id);
    if (!c) continue;
    if (!c->c->ready() && !c->c->dead()) continue;
    if (c->c->ready()) {
      // The answer goes into an output ring in one piece: with none free,
      // the check waits (the frontend rings us when slots go).
      if (shm::OutputRings rings = env_.seg.output_rings(); !rings.take(ch.slot)) {
        rings.want();
        if (!rings.take(ch.slot)) continue;
      }
      const Connection& k = *c->c;
      std::string banner = k.banner();
      // The host's words: printable ASCII only (an answer is UTF-8 JSON).
      std::erase_if(banner, [](char x) { return x < 0x20 || x > 0x7e; });
      std::string out = "fingerprint " + k.host_key().fingerprint + "\nkey_type " +
                        k.host_key().type + "\nbanner " + banner + "\nauth_methods " +
                        k.auth_methods() + "\nlatency_us " + std::to_string(k.login_ns() / 1000) +
                        "\n";
      worker::RingSink sink(env_.seg, ch.slot, env_.notify_frontend);
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
    if (c.c->ready() && !c.c->busy() && c.use != Use::kCheck)
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
  if (removing_) return;  // its slot may be another host's already
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
