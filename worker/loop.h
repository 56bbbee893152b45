// Loop: a worker's single-threaded event loop. Waits on one epoll set for
// the submit doorbell (jobs were queued), its own doorbell (cancels, signals,
// output space), SIGTERM/SIGINT/SIGHUP (signalfd), the one timerfd armed for
// its jobs' earliest deadline, and each job's pidfd and pipes; claims jobs
// from the submission ring while it has room, hands every job event to its
// Job (job.h), rings the frontend, and writes its heartbeat every turn.
//
// Made and run by run() (worker.h) in the worker process. Owns the segment
// mapping, the epoll, signal and timer fds, /dev/null and the spool
// directory fd, and the Jobs; borrows the inherited doorbell fds.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "isolation/cgroups.h"
#include "shm/doorbell.h"
#include "shm/segment.h"
#include "worker/job.h"
#include "worker/poller.h"
#include "worker/worker.h"

namespace sp::worker {

class Loop {
 public:
  Loop(const Options& o, shm::Segment seg);
  Loop(const Loop&) = delete;  // env_ refers to members
  Loop& operator=(const Loop&) = delete;

  Status init();
  // Until SIGTERM/SIGINT/SIGHUP and its jobs' end, or recycling; the exit code.
  int run();

 private:
  // A place for one running job; the generation tells its events from those
  // of earlier jobs in the same place.
  struct Entry {
    uint32_t generation = 0;
    std::optional<Job> job;
  };

  void dispatch(Tag t, uint32_t events);
  void claim_more();
  bool recycling() const;
  void set_submit_interest(bool want);
  void start(uint32_t slot);
  void drop_if_done(Entry& e);
  void on_bell();
  void on_timer();
  void arm_timer();
  void begin_shutdown();
  void follow_log_level();

  Options o_;
  shm::Segment seg_;
  shm::SubmitRing ring_;
  shm::WorkerSlot& rec_;
  shm::Doorbell submit_, bell_, frontend_;
  uint8_t owner_;
  uint16_t incarnation_;
  isolation::Cgroups cgroups_;
  Poller poller_;
  std::vector<char> spool_scratch_ = std::vector<char>(64 * 1024);
  std::vector<char> redact_scratch_ = std::vector<char>(64 * 1024);
  JobEnv env_;
  std::vector<Entry> entries_;
  uint32_t active_ = 0;
  bool want_submit_ = false;
  uint64_t claimed_ = 0;            // jobs taken, for --recycle-after
  uint64_t armed_ns_ = 0;           // deadline the timerfd is armed for, 0: disarmed
  uint64_t config_generation_ = 1;  // the configuration whose log level we use
  UniqueFd signal_fd_, timer_, devnull_, spool_dir_;
};

}  // namespace sp::worker
