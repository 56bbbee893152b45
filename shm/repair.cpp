#include "shm/repair.h"

#include <signal.h>

#include "common/clock.h"
#include "shm/codec.h"
#include "shm/metrics.h"
#include "shm/spool.h"

namespace sp::shm {

bool publish_terminal(const Segment& seg, uint32_t slot, JobWord from, JobState state,
                      int exit_code, int sig, std::string_view why, uint8_t error_code,
                      uint8_t error_phase) {
  JobTable jobs = seg.jobs();
  JobSlot& s = jobs.slot(slot);
  s.result_words = encode_result(s.result, exit_code, sig, why, error_code, error_phase);
  const uint64_t end = monotonic_ns();
  s.end_ns.store(end, std::memory_order_relaxed);
  s.pgid.store(0, std::memory_order_relaxed);
  if (!jobs.transition(slot, from, from.with_state(state))) return false;
  // Only jobs that ran have a duration (a job failed or cancelled before
  // its start has none).
  if (uint64_t start = s.start_ns.load(std::memory_order_relaxed); start && start <= end)
    observe(seg.header().metrics.job_duration, kJobDurationBounds, end - start);
  auto& c = seg.header().counters;
  (state == JobState::kFailed      ? c.failed
   : state == JobState::kTimedOut  ? c.timed_out
   : state == JobState::kCancelled ? c.cancelled
   : state == JobState::kLost      ? c.lost
                                   : c.finished)
      .fetch_add(1, std::memory_order_relaxed);
  jobs.release_if_orphaned(slot);
  return true;
}

bool finish_queued(const Segment& seg, uint32_t slot, JobWord queued, JobState state,
                   std::string_view why) {
  if (queued.state != JobState::kQueued) return false;
  JobWord taken{JobState::kClaimed, kOwnerController, 0, queued.generation};
  if (!seg.jobs().transition(slot, queued, taken)) return false;
  return publish_terminal(seg, slot, taken, state, -1, 0, why);
}

RepairReport repair_after_worker_death(const Segment& seg, uint32_t index, std::string_view why) {
  RepairReport report;
  seg.spool_budget().repair_after_death(seg.worker(index));
  JobTable jobs = seg.jobs();
  const uint8_t owner = owner_stamp(index);
  for (uint32_t i = 0; i < jobs.size(); ++i) {
    JobWord w = jobs.load(i);
    if (w.owner != owner) continue;
    if (w.state == JobState::kClaimed) {
      JobWord queued{JobState::kQueued, 0, 0, w.generation};
      if (!jobs.transition(i, w, queued)) continue;
      if (seg.ring_for(jobs.slot(i).control.load(std::memory_order_acquire)).push(i)) {
        ++report.requeued;
        seg.header().counters.requeued.fetch_add(1, std::memory_order_relaxed);
      } else if (finish_queued(seg, i, queued, JobState::kLost,
                               "lost: its worker died and the ring was full")) {
        // The ring holds only cells of live jobs plus a few stale ones, and has
        // twice as many cells as slots, so this needs many deaths in a row.
        ++report.lost;
      }
    } else if (w.state == JobState::kRunning) {
      pid_t pgid = jobs.slot(i).pgid.load(std::memory_order_acquire);
      if (pgid > 0) ::kill(-pgid, SIGKILL);
      if (publish_terminal(seg, i, w, JobState::kLost, -1, 0, why)) ++report.lost;
    }
  }
  return report;
}

RepairReport repair_after_frontend_death(const Segment& seg) {
  RepairReport report;
  JobTable jobs = seg.jobs();
  std::vector<bool> in_cells(jobs.size());
  seg.ring().jobs_in_cells(in_cells);
  seg.remote_ring().jobs_in_cells(in_cells);
  for (uint32_t i = 0; i < jobs.size(); ++i) {
    JobWord w = jobs.load(i);
    // Detached jobs outlive their frontend: the next one settles them. A
    // cancel it had begun (a queued job taken by the controller) is finished;
    // a queued job no cell names (it died before the push) is pushed.
    if (w.state != JobState::kAllocated &&
        (jobs.slot(i).control.load(std::memory_order_acquire) & kControlDetached)) {
      if (w.state == JobState::kClaimed && w.owner == kOwnerController &&
          publish_terminal(seg, i, w, JobState::kCancelled, -1, 0, "cancelled before it started"))
        ++report.cancelled;
      if (w.state == JobState::kQueued && !in_cells[i]) {
        if (seg.ring_for(jobs.slot(i).control.load(std::memory_order_acquire)).push(i)) {
          ++report.requeued;
        } else if (finish_queued(seg, i, w, JobState::kLost,
                                 "lost: its frontend died and the ring was full")) {
          ++report.lost;
        }
      }
      continue;
    }
    switch (w.state) {
      case JobState::kFree:
        break;
      case JobState::kAllocated:
      case JobState::kQueued:
        // A cell may still name a queued slot: consumers drop cells of slots
        // that are not queued, so freeing it here is safe.
        if (jobs.transition(i, w, {JobState::kFree, 0, 0, w.generation + 1})) {
          ++report.released;
          if (w.state == JobState::kQueued) {
            ++report.cancelled;
            seg.header().counters.cancelled.fetch_add(1, std::memory_order_relaxed);
          }
        }
        break;
      case JobState::kClaimed:
        if (w.owner == kOwnerController) {  // it died inside finish_queued
          if (jobs.transition(i, w, {JobState::kFree, 0, 0, w.generation + 1})) ++report.released;
          break;
        }
        [[fallthrough]];
      case JobState::kRunning:
        jobs.orphan(i);
        ++report.cancelled;
        break;
      default:  // terminal: nobody is left to read it
        if (jobs.release(i, w)) ++report.released;
        break;
    }
  }
  return report;
}

uint32_t cancel_queued(const Segment& seg, std::string_view why) {
  uint32_t n = 0;
  JobTable jobs = seg.jobs();
  for (uint32_t i = 0; i < jobs.size(); ++i) {
    JobWord w = jobs.load(i);
    if (finish_queued(seg, i, w, JobState::kCancelled, why)) ++n;
  }
  return n;
}

uint32_t unfinished_jobs(const Segment& seg) {
  uint32_t n = 0;
  JobTable jobs = seg.jobs();
  for (uint32_t i = 0; i < jobs.size(); ++i) {
    JobState s = jobs.load(i).state;
    if (s == JobState::kQueued || s == JobState::kClaimed || s == JobState::kRunning) ++n;
  }
  return n;
}

}  // namespace sp::shm
