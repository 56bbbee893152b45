// SubmitRing: the submission ring of job-slot indices (many producers: the
// frontend, and the supervisor when it requeues; many consumers: the workers).
//
// Each cell is one 64-bit word: seq:32 | full:1 | job:31. A push is one CAS
// of the cell at `tail` from (t, empty) to (t, full, job); a pop is one CAS of
// the cell at `head` from (h, full, job) to (h + cells, empty). head and tail
// are only hints that anyone advances ("helping"), so a process killed between
// its cell CAS and its index CAS wedges nothing.
//
// A popped index is not yet a claim: consumers claim the job slot first
// (JobTable::claim), then pop the cell. A job claimed by a consumer that dies
// before popping is skipped by the next consumer (its slot is no longer
// Queued); the supervisor requeues it with a fresh push. So a cell may name a
// job that is no longer queued: consumers drop such cells.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include "shm/job_table.h"

namespace sp::shm {

class SubmitRing {
 public:
  SubmitRing(std::atomic<uint64_t>* cells, uint32_t count, std::atomic<uint64_t>* head,
             std::atomic<uint64_t>* tail)
      : cells_(cells), mask_(count - 1), head_(head), tail_(tail) {}

  // Initial cell words for a fresh segment: cell i holds (i, empty).
  static uint64_t initial_cell(uint32_t i) { return pack(i, false, 0); }

  // False when the ring is full.
  bool push(uint32_t job) {
    for (;;) {
      uint64_t t = tail_->load(std::memory_order_acquire);
      auto& cell = cells_[t & mask_];
      uint64_t c = cell.load(std::memory_order_acquire);
      uint32_t seq = seq_of(c);
      if (seq == uint32_t(t) && !full(c)) {
        if (cell.compare_exchange_strong(c, pack(uint32_t(t), true, job),
                                         std::memory_order_acq_rel)) {
          tail_->compare_exchange_strong(t, t + 1, std::memory_order_acq_rel);
          return true;
        }
      } else if (seq == uint32_t(t) && full(c)) {
        tail_->compare_exchange_strong(t, t + 1, std::memory_order_acq_rel);  // help
      } else if (seq == uint32_t(t - (mask_ + 1)) && full(c)) {
        return false;  // the previous lap's job is still there: full
      } else if (int32_t(seq - uint32_t(t)) > 0) {
        // Pushed (and maybe popped) at t already, but tail was never moved:
        // its pusher died between its two CASes. Help.
        tail_->compare_exchange_strong(t, t + 1, std::memory_order_acq_rel);
      }
      // Otherwise our view of tail was stale: reload.
    }
  }

  // Claims the next queued job for (owner, incarnation). Drops cells whose job
  // is no longer queued. nullopt when the ring is empty.
  std::optional<uint32_t> claim(JobTable jobs, uint8_t owner, uint16_t incarnation) {
    for (;;) {
      uint64_t h = head_->load(std::memory_order_acquire);
      auto& cell = cells_[h & mask_];
      uint64_t c = cell.load(std::memory_order_acquire);
      if (seq_of(c) != uint32_t(h)) {  // already popped: help head along
        if (head_->load(std::memory_order_acquire) == h)
          head_->compare_exchange_strong(h, h + 1, std::memory_order_acq_rel);
        continue;
      }
      if (!full(c)) return std::nullopt;
      uint32_t job = job_of(c);
      bool claimed = job < jobs.size() && jobs.claim(job, owner, incarnation);
      // Pop the cell whether we claimed it or it was stale; one CAS, anyone may.
      cell.compare_exchange_strong(c, pack(uint32_t(h + mask_ + 1), false, 0),
                                   std::memory_order_acq_rel);
      head_->compare_exchange_strong(h, h + 1, std::memory_order_acq_rel);
      if (claimed) return job;
    }
  }

  // Sets out[job] for every job a full cell names (out sized to the job
  // table). For repair: a job still Queued that no cell names was never
  // pushed (its pusher died), and a consumer only pops a cell after it
  // claimed its job, so the snapshot cannot miss one that is still queued.
  void jobs_in_cells(std::vector<bool>& out) const {
    for (uint32_t i = 0; i <= mask_; ++i) {
      uint64_t c = cells_[i].load(std::memory_order_acquire);
      uint32_t job = uint32_t(c & 0x7fffffffu);
      if (full(c) && job < out.size()) out[job] = true;
    }
  }

  // Approximate number of cells in use: a worker that cannot take more work
  // passes the wake-up on while this is not 0.
  uint64_t depth() const {
    uint64_t t = tail_->load(std::memory_order_relaxed);
    uint64_t h = head_->load(std::memory_order_relaxed);
    return t > h ? t - h : 0;
  }

 private:
  static uint64_t pack(uint32_t seq, bool is_full, uint32_t job) {
    return uint64_t(seq) << 32 | (is_full ? 1ull << 31 : 0) | (job & 0x7fffffffu);
  }
  static uint32_t seq_of(uint64_t c) { return uint32_t(c >> 32); }
  static bool full(uint64_t c) { return c & (1ull << 31); }
  static uint32_t job_of(uint64_t c) { return uint32_t(c & 0x7fffffffu); }

  std::atomic<uint64_t>* cells_;
  uint64_t mask_;
  std::atomic<uint64_t>* head_;
  std::atomic<uint64_t>* tail_;
};

}  // namespace sp::shm
