// HostPool: the remote worker's connections to one host and the jobs queued
// for them. Connections are reused across jobs, up to a channel cap each
// (below OpenSSH's MaxSessions of 10; lowered when the host refuses a
// channel, and then another connection is opened), up to the host's
// max_connections, with at most kMaxHandshakes logins under way at once.
// A connection without channels for idle_timeout_ms is closed; a dead one
// is dropped. A connection that fails before it is ready is retried once
// for the jobs waiting for it; a command is never sent twice.
//
// Also runs host_check jobs (a fresh connection, reported and closed) and
// the kills of remote process groups (a channel running `kill`). A kill
// takes a channel of a job connection with room, or else of the pool's kill
// connection: one more connection, beyond max_connections, that carries
// only kills, so a host whose every channel runs a job can still be
// signalled. Kills wait in a queue of at most kMaxKills (a signal already
// waiting for the same group is not queued twice; beyond the bound a kill
// is dropped, logged); one that fails is tried again, kMaxKillTries in all.
//
// Used from the remote worker's single thread; owned by its loop. Its
// sockets are watched with Tag{kSocket, pool id, connection id}.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "remote/connection.h"
#include "remote/remote_job.h"
#include "shm/host_table.h"

namespace sp::remote {

class HostPool {
 public:
  HostPool(Env& env, const HostKeys& keys, worker::Poller& poller, uint32_t id, uint32_t slot,
           shm::HostConfig cfg);
  ~HostPool();
  HostPool(const HostPool&) = delete;
  HostPool& operator=(const HostPool&) = delete;

  void add(std::unique_ptr<RemoteJob> job);
  // A host_check job in `slot`: a fresh connection, its findings as stdout.
  void add_check(uint32_t slot);

  void on_socket(uint32_t conn_id, uint32_t events, uint64_t now);
  // The Resolver's answer for connection `conn_id` (its token's low half).
  void on_resolved(uint32_t conn_id, const Resolver::Answer& a, uint64_t now);
  // Everything that may move without an event: schedules waiting jobs and
  // kills, pumps, drops what ended; publishes the figures. After each batch.
  void turn(uint64_t now);
  void on_bell();
  void on_timer(uint64_t now);
  // The host was removed: jobs not started end failed, running ones are
  // killed and end cancelled (host_removed); once they are gone (drained())
  // the loop drops the pool and its connections close.
  void remove_host();
  bool removing() const { return removing_; }
  bool drained() const { return jobs_.empty() && checks_.empty() && kills_.empty(); }
  bool killing() const { return !kills_.empty(); }
  void shutdown();

  uint64_t next_deadline() const;
  uint32_t jobs() const { return uint32_t(jobs_.size() + checks_.size()); }
  uint32_t generation() const { return cfg_.generation; }
  uint32_t slot() const { return slot_; }

  static constexpr uint32_t kDefaultChannelCap = 8;  // below OpenSSH's MaxSessions 10
  static constexpr uint32_t kMaxHandshakes = 2;
  static constexpr size_t kMaxKills = 1024;
  static constexpr uint32_t kMaxKillTries = 3;

 private:
  enum class Use { kJobs, kCheck, kKills };
  struct Conn {
    uint32_t id;
    std::unique_ptr<Connection> c;
    uint32_t cap;
    Use use = Use::kJobs;
  };
  struct Check {
    uint32_t slot;
    shm::JobWord word;
    uint32_t conn_id;
  };
  struct Kill {
    int32_t pgid;
    int sig;
    Connection* conn = nullptr;
    LIBSSH2_CHANNEL* channel = nullptr;
    int step = 0;  // 0 waiting, 1 opening, 2 starting, 3 sent (closing), 4 done
    uint32_t tries = 0;
  };

  Conn* find(uint32_t id);
  Conn* free_connection(Use use);
  Conn& open_connection(uint64_t now, Use use);
  void schedule(uint64_t now);
  void schedule_kills(uint64_t now);
  void queue_kill(int32_t pgid, int sig);
  void take_kills(RemoteJob& job);
  // Back to waiting after a failed try; dropped after the last (false).
  bool retry_kill(Kill& k, const std::string& why);
  void pump_kills();
  void step_kill(Kill& k);
  void refused_on(Connection* c);
  void release(Kill& k);  // frees its channel
  void finish_checks();
  void reap_connections(uint64_t now);
  void connection_died(Conn& dead);
  void publish();

  Env& env_;
  const HostKeys& keys_;
  worker::Poller& poller_;
  uint32_t id_;
  uint32_t slot_;
  shm::HostConfig cfg_;
  shm::HostTable hosts_;
  std::vector<Conn> conns_;
  std::vector<std::unique_ptr<RemoteJob>> jobs_;
  std::vector<Check> checks_;
  std::deque<Kill> kills_;
  uint32_t next_conn_id_ = 1;
  uint32_t cap_ = kDefaultChannelCap;  // learned from refusals
  bool removing_ = false;
  uint64_t jobs_started_ = 0;
  Failure last_failure_;
  uint64_t last_failure_ms_ = 0;
  shm::PoolFigures published_;
};

}  // namespace sp::remote
