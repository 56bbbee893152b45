// Job completion and crash repair over a mapped Segment.
//
// publish_terminal() is how every job ends: the result record is written
// first, then one CAS makes the terminal state visible (so a reader that sees
// the state sees the result). The repair functions are the supervisor's, run
// only after waitpid() reported the death of the process whose state they
// fix, so nothing they touch is still being changed by its dead owner.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string_view>

#include "shm/job_table.h"
#include "shm/segment.h"

namespace sp::shm {

// Writes the result, then CASes `from` -> `state` (keeping the owner stamp),
// counts it, frees the slot if its client is gone. False if the slot was not
// at `from` any more.
// A remote job's error code and phase (common/remote_error.h) go with it.
bool publish_terminal(const Segment& seg, uint32_t slot, JobWord from, JobState state,
                      int exit_code, int sig, std::string_view why, uint8_t error_code = 0,
                      uint8_t error_phase = 0);

// Ends a job that is still queued, for the frontend (cancel) or the
// supervisor (shutdown): one CAS takes it off the queue (Queued -> Claimed by
// kOwnerController) so no worker can start it while the result is written,
// then publish_terminal. False if a worker claimed it first.
bool finish_queued(const Segment& seg, uint32_t slot, JobWord queued, JobState state,
                   std::string_view why);

struct RepairReport {
  uint32_t lost = 0;       // running jobs marked lost (their process groups killed)
  uint32_t requeued = 0;   // claimed-not-started jobs put back on the ring
  uint32_t cancelled = 0;  // queued jobs dropped or running jobs told to stop
  uint32_t released = 0;   // slots freed
};

// After worker `index` died: kill the process groups of its running jobs and
// mark them lost with `why`; put jobs it had claimed but not started back on
// the ring; give back the spool bytes it was writing.
RepairReport repair_after_worker_death(const Segment& seg, uint32_t index, std::string_view why);

// After the frontend died: its clients are gone. Free slots it was filling,
// drop queued jobs, tell workers to stop running ones (cancel + orphan: the
// worker frees them when they end), free finished ones. Detached jobs are
// left as they are (a cancel the frontend had begun is completed): the next
// frontend settles them.
RepairReport repair_after_frontend_death(const Segment& seg);

// At the drain deadline of a shutdown: queued jobs end cancelled.
uint32_t cancel_queued(const Segment& seg, std::string_view why);

// Jobs not yet terminal (queued, claimed or running).
uint32_t unfinished_jobs(const Segment& seg);

}  // namespace sp::shm
