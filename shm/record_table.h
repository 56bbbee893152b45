// RecordTable: the verbs on the shm table of detached jobs and plans
// (JobRecord), so that the roles never set a record's fields by hand. Each
// verb writes the fields of one step of a record's life in the order its
// crash contract needs (docs/shm-layout.md):
//
//   Free --claim--> Writing --publish--> Live --settle/skip/settle_plan--> Live, settled
//     ^                |                                                      |
//     +----release-----+------------------------release----------------------+
//
// Only the frontend changes records (the worker running a detached job
// writes its spool words, see SpoolBudget and worker/); a restarted frontend
// calls recover() to finish what its predecessor left half-done. A
// RecordTable is a view over the mapped segment, cheap to copy; it holds no
// state of its own.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "shm/job_table.h"
#include "shm/layout.h"

namespace sp::shm {

class Segment;

class RecordTable {
 public:
  explicit RecordTable(const Segment& seg);

  uint32_t size() const { return count_; }
  const JobRecord& at(uint32_t i) const { return records_[i]; }
  JobRecord& at(uint32_t i) { return records_[i]; }
  bool live(uint32_t i) const {
    return records_[i].state.load(std::memory_order_acquire) == uint32_t(RecordState::kLive);
  }
  static bool is_plan(const JobRecord& r) { return r.plan_kind != 0; }
  static bool settled(const JobRecord& r) {
    return r.final_state.load(std::memory_order_acquire) != 0;
  }

  // Free -> Writing, with every field reset and `id`, `seq`, `output_cap`
  // and the submission time set. nullopt when no record is free.
  std::optional<uint32_t> claim(std::string_view id, uint64_t seq, uint64_t output_cap);
  // Record i's job is in job slot `slot` at `generation`, and the slot names
  // the record: before the job is queued, so a worker sees a detached job.
  void bind(uint32_t i, uint32_t slot, uint32_t generation);
  // Writing -> Live: the record is accepted (the caller filled it).
  void publish(uint32_t i);
  // -> Free: abandoned while Writing, or forgotten once settled.
  void release(uint32_t i);

  // If record i's job has ended: copies its outcome into the record, marks
  // it settled, then frees its job slot. True if settled (now or before).
  // Plans are settled by settle_plan.
  bool settle(uint32_t i);
  // Settles a plan step that will never run as skipped, and frees its slot.
  void skip(uint32_t i, std::string_view why);
  // Settles plan i (every step has ended) in `state` with the result given.
  void settle_plan(uint32_t i, JobState state, int exit_code, std::string_view why,
                   uint64_t started_unix_ms);

  // After a frontend death, before the records are used: a record left
  // Writing is kept if its job reached the ring, freed otherwise; detached
  // job slots that ended or never started whose record is gone or already
  // settled are freed. (Plans left half-submitted are the caller's: see
  // frontend/records.h.)
  void recover();
  // Frees record i's job slot if it still waits (a plan step never queued).
  void free_waiting_slot(uint32_t i);

 private:
  JobRecord* records_;
  uint32_t count_;
  JobTable jobs_;
};

}  // namespace sp::shm
