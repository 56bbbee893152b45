// RemoteLoop: the remote worker's single-threaded event loop (the process
// `shell-poold worker --ssh`, in the last worker slot). The only process
// that links libssh2, and it never spawns: a crash in SSH code costs the
// remote jobs it ran (they end lost), never the frontend, the supervisor or
// the local workers. It claims jobs from the remote ring, hands each to its
// host's pool (pool.h), and waits on one epoll set for its doorbell (new
// jobs, cancels, output room), SIGTERM/SIGINT/SIGHUP and every connection's
// socket, with the earliest deadline of its pools as the wait's bound.
//
// Owns the segment mapping, the epoll and signal fds, the spool directory
// fd and the pools; borrows the inherited doorbell fds.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "remote/host_keys.h"
#include "remote/pool.h"
#include "shm/doorbell.h"
#include "shm/host_table.h"
#include "shm/segment.h"
#include "worker/poller.h"
#include "worker/worker.h"

namespace sp::remote {

class RemoteLoop {
 public:
  RemoteLoop(const worker::Options& o, shm::Segment seg);
  RemoteLoop(const RemoteLoop&) = delete;  // env_ refers to members
  RemoteLoop& operator=(const RemoteLoop&) = delete;
  ~RemoteLoop();

  Status init();
  int run();  // until SIGTERM/SIGINT/SIGHUP and its jobs' end; the exit code

 private:
  void claim_more();
  void start(uint32_t slot);
  void end_unstarted(uint32_t slot, shm::JobState state, const Failure& f);
  void forget_removed_hosts();
  void on_bell();
  void on_resolved();
  void begin_shutdown();
  uint32_t active() const;
  bool killing() const;  // kills of remote groups still wait to be sent
  void follow_log_level();
  int wait_ms(uint64_t now) const;

  worker::Options o_;
  shm::Segment seg_;
  shm::SubmitRing ring_;
  shm::WorkerSlot& rec_;
  shm::HostTable hosts_;
  shm::Doorbell bell_, frontend_;
  uint8_t owner_;
  uint16_t incarnation_;
  worker::Poller poller_;
  std::vector<char> scratch_ = std::vector<char>(64 * 1024);
  Env env_;
  std::unique_ptr<HostKeys> keys_;
  Resolver resolver_;
  std::map<uint32_t, std::unique_ptr<HostPool>> pools_;  // by pool id (a socket Tag's entry)
  uint32_t next_pool_id_ = 1;
  shm::DecodedSpec spec_;
  uint32_t max_jobs_;
  uint64_t config_generation_ = 1;
  UniqueFd signal_fd_, spool_dir_;
};

}  // namespace sp::remote
