// JobQueue: the frontend's side of the job table and the ring. Puts a job's
// spec into a free job slot and publishes it on the ring (enqueue), queues a
// plan step that waited for its dependencies (promote), and asks a job's
// worker to stop or signal it, ringing that worker's doorbell. Every shm
// step is a verb of shm/ (JobTable, SubmitRing, RecordTable, repair.h).
//
// Used from the frontend's single thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "frontend/errors.h"
#include "frontend/frontend.h"
#include "frontend/spec_builder.h"
#include "frontend/stdin_feeds.h"
#include "shm/doorbell.h"
#include "shm/host_table.h"
#include "shm/record_table.h"
#include "shm/segment.h"
#include "shm/session_table.h"

namespace sp::frontend {

// Where a new job goes: an attached job (no record), or a detached job or
// plan step whose record is `record`, numbered `seq` (taken already);
// `waiting`: a plan step, left waiting for its dependencies (not queued);
// `service`: a service's generation, detached without a record (its output
// comes through the output ring, for the service's log).
struct JobPlacement {
  std::optional<uint32_t> record;
  uint64_t seq = 0;
  bool waiting = false;
  bool service = false;
};

class JobQueue {
 public:
  JobQueue(const shm::RoleConfig& o, const Fds& fds, const shm::Segment& seg, EnvPairs base_env);

  // The job's slot, or why it was not accepted.
  std::variant<uint32_t, SubmitError> enqueue(const rpc::ExecParams& p,
                                              JobPlacement where = JobPlacement());
  // Waiting -> Queued and on the ring; false if the ring is full (try again
  // on a later turn) or the step moved on.
  bool promote(uint32_t slot, shm::JobWord waiting);

  // Stops job `slot`: a queued job ends cancelled at once with `why` (true);
  // a running one is asked to stop with `sig` (0: SIGTERM) and SIGKILL after
  // `grace_ms` (kCancelGraceDefault: its own), and ends later (false).
  bool stop(uint32_t slot, std::string_view why, uint32_t sig = 0,
            uint32_t grace_ms = shm::kCancelGraceDefault);
  // Delivers `sig` (1..64) to the job's process group, or (`foreground`,
  // which defaults to whether it runs on a terminal) to its terminal's
  // foreground process group.
  void signal(uint32_t slot, int sig, std::optional<bool> foreground = std::nullopt);
  // Wakes the worker that owns job `slot`'s word `w` (a cancel, room in its
  // output ring).
  void ring_owner(shm::JobWord w) const;
  // Puts queued job `slot` on its ring (the remote worker's for a remote
  // job) and wakes who takes it; false if the ring is full.
  bool publish(uint32_t slot);
  // Wakes the workers if a job of theirs waits for an output ring (one
  // load when none does): called after a turn that may have freed slots.
  void wake_ring_waiters() const;
  // Wakes the remote worker (a host was removed).
  void ring_remote() const { worker_bells_[shm::kRemoteWorker].ring(); }

  uint64_t next_job_id() const;
  // The secrets of session `id` (none for "" or an unknown session).
  std::vector<std::string> session_secrets(const std::string& id) const;
  // Refuses new jobs from now on (the frontend stops).
  void stop_accepting() { stopping_ = true; }
  bool accepting() const;
  uint32_t free_slots(uint32_t enough) const;  // counted up to `enough`
  const shm::JobTable& jobs() const { return jobs_; }

  // Where a new job's stdin goes (set once by the frontend's wiring).
  void set_stdin_feeds(StdinFeeds* feeds) { stdin_ = feeds; }

 private:
  const shm::Segment& seg_;
  shm::JobTable jobs_;
  shm::SessionTable sessions_;
  shm::RecordTable records_;
  shm::HostTable hosts_;
  shm::Doorbell submit_;
  std::vector<shm::Doorbell> worker_bells_;
  SpecBuilder specs_;
  uint32_t alloc_cursor_ = 0;
  bool stopping_ = false;
  StdinFeeds* stdin_ = nullptr;
};

}  // namespace sp::frontend
