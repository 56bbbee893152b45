// JobRecords: the frontend's side of the shm table of detached jobs
// (shm::JobRecord). Finds records by job_id, settles finished jobs (copies
// their outcome out of the job slot and frees the slot), and applies
// retention: finished jobs are kept for `retain_ms` and while the table and
// the spool have room, oldest evicted first. Rebuilt from shm by recover(),
// so a restarted frontend sees every job the last one accepted.
//
// Used from the frontend's single thread; only the frontend writes records
// (the workers write their spool counters). Memory: an id index with one
// entry per live record, bounded by the table size.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "frontend/errors.h"
#include "frontend/params/params.h"
#include "shm/record_table.h"
#include "shm/segment.h"

namespace sp::frontend {

class JobRecords {
 public:
  JobRecords(const shm::Segment& seg, int spool_dir, uint64_t retain_ms, uint64_t job_spool_bytes)
      : seg_(seg),
        table_(seg),
        spool_dir_(spool_dir),
        retain_ms_(retain_ms),
        job_spool_bytes_(job_spool_bytes) {}

  uint32_t size() const { return table_.size(); }
  size_t live_count() const { return by_id_.size(); }
  const shm::JobRecord& at(uint32_t i) const { return table_.at(i); }
  shm::JobRecord& at(uint32_t i) { return table_.at(i); }
  shm::RecordTable& table() { return table_; }
  const shm::RecordTable& table() const { return table_; }

  // After a frontend restart: finishes what the last frontend left half-done
  // (shm::RecordTable::recover), drops the plans it had not finished
  // submitting with their steps, and builds the id index.
  void recover();

  // A record in state Writing for job `seq` under `id`. When the table is
  // full the oldest finished job is evicted; kRecordsFull if every record
  // holds an unfinished job.
  std::variant<uint32_t, SubmitError> create(std::string_view id, uint64_t seq);
  // Fills what record i shows of its job's params: session, command line
  // (cut to fit, at a character boundary) and output bounds.
  // `secrets`: the job's session's, redacted from the command shown (with
  // the job's own).
  void describe(uint32_t i, const rpc::ExecParams& p, const std::vector<std::string>& secrets);
  // Writing -> Live under `id` (the caller filled it), or Writing -> Free.
  void publish(uint32_t i);
  void abandon(uint32_t i);

  // A pinned record is never forgotten by retention or eviction (someone
  // waits for its answer); job_forget still forgets it. Counted.
  void pin(uint32_t i) { ++pins_[i]; }
  void unpin(uint32_t i);
  bool pinned(uint32_t i) const { return pins_.count(i) != 0; }

  std::optional<uint32_t> find(std::string_view id) const;
  // Every live record, oldest first.
  std::vector<uint32_t> all() const;
  // A plan's steps (record indices) in step order; empty for other records.
  const std::vector<uint32_t>& steps_of(uint32_t plan) const;
  static bool is_plan(const shm::JobRecord& r) { return shm::RecordTable::is_plan(r); }

  // See shm::RecordTable: a plan is settled by its steps (Frontend::advance_plan).
  bool settle(uint32_t i) { return table_.settle(i); }
  void skip(uint32_t i, std::string_view why) { table_.skip(i, why); }
  static bool settled(const shm::JobRecord& r) { return shm::RecordTable::settled(r); }

  // Frees a settled record and its spool file; a plan with its steps.
  void forget(uint32_t i);
  // Retention: forgets settled jobs older than retain_ms, and the oldest
  // settled ones while the spool has no room for the whole output of each
  // of `writers` unfinished jobs (at least one, at most half the spool);
  // never pinned ones. Returns how many it forgot.
  uint32_t expire(size_t writers);

  // The spool file of record i for reading.
  Result<UniqueFd> open_spool(uint32_t i) const;

  // A live reload: for jobs submitted and settled from now on.
  void set_retention(uint64_t retain_ms, uint64_t job_spool_bytes) {
    retain_ms_ = retain_ms;
    job_spool_bytes_ = job_spool_bytes;
  }

 private:
  bool held(uint32_t i) const;  // pinned, or a plan with a pinned step
  void forget_one(uint32_t i);
  std::optional<uint32_t> oldest_settled(bool with_output) const;

  const shm::Segment& seg_;
  shm::RecordTable table_;
  int spool_dir_;
  uint64_t retain_ms_;
  uint64_t job_spool_bytes_;
  std::unordered_map<std::string, uint32_t> by_id_;
  std::unordered_map<uint32_t, std::vector<uint32_t>> steps_;  // plan -> its steps, in order
  std::unordered_map<uint32_t, uint32_t> pins_;                // record -> pins (bounded: waiters)
};

}  // namespace sp::frontend
