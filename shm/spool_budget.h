// SpoolBudget: the daemon-wide bound on spool bytes (Header::spool_used
// against Capacities::spool_bytes) and the reservation protocol that keeps
// it right when a worker dies in the middle of a write.
//
// A worker counts a write's bytes before it writes them (reserve), noting in
// its WorkerSlot for which record and from which spool_end; once the
// record's spool_end moved past the write the bytes are the record's
// (commit). The supervisor, after waitpid reported the worker dead, gives
// back a reservation whose write was never published (repair_after_death).
// The frontend gives a record's bytes back when it forgets the record.
//
// Any process may hold one over the mapped segment; every step is one atomic
// operation on a shm word. Over-counting after a crash is possible only for
// the bytes of one record (bounded); the count never goes below zero.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "shm/layout.h"

namespace sp::shm {

class SpoolBudget {
 public:
  SpoolBudget(Header& header, const JobRecord* records, uint32_t record_count)
      : h_(header), records_(records), record_count_(record_count) {}

  uint64_t used() const { return h_.spool_used.load(std::memory_order_relaxed); }
  uint64_t limit() const { return h_.caps.spool_bytes; }

  // Worker: counts `bytes` for a write into record `record` (index) whose
  // spool_end is `from`. False, with nothing counted, when they do not fit.
  bool reserve(WorkerSlot& w, uint32_t record, uint64_t from, uint64_t bytes) {
    if (h_.spool_used.fetch_add(bytes, std::memory_order_relaxed) + bytes > limit()) {
      give_back(bytes);
      return false;
    }
    w.spool_record.store(RecordRef::of(record), std::memory_order_relaxed);
    w.spool_from.store(from, std::memory_order_relaxed);
    w.spool_reserved.store(bytes, std::memory_order_release);
    return true;
  }
  // Worker: the write is published (the record's spool_end moved on).
  static void commit(WorkerSlot& w) { w.spool_reserved.store(0, std::memory_order_relaxed); }
  // Worker: the write failed; its bytes go back.
  void abort(WorkerSlot& w) { give_back(w.spool_reserved.exchange(0)); }

  // Frontend: counts `bytes` for a service's log (its whole ring, at once);
  // false, with nothing counted, when they do not fit.
  bool take(uint64_t bytes) {
    if (h_.spool_used.fetch_add(bytes, std::memory_order_relaxed) + bytes > limit()) {
      give_back(bytes);
      return false;
    }
    return true;
  }
  // Anyone: returns `bytes`, never below 0 (an earlier crash can only have
  // over-counted).
  void give_back(uint64_t bytes) {
    uint64_t used = h_.spool_used.load(std::memory_order_relaxed);
    while (bytes && !h_.spool_used.compare_exchange_weak(used, used - std::min(used, bytes),
                                                         std::memory_order_relaxed)) {
    }
  }

  // Supervisor, after waitpid reported the owner of `w` dead: a reservation
  // whose write was not published goes back; a published one is the
  // record's.
  void repair_after_death(WorkerSlot& w) {
    uint64_t reserved = w.spool_reserved.exchange(0);
    if (!reserved) return;
    const RecordRef rec = w.spool_record.load();
    if (rec.within(record_count_) && records_[rec.index()].spool_end.load() == w.spool_from.load())
      give_back(reserved);
  }

 private:
  Header& h_;
  const JobRecord* records_;
  uint32_t record_count_;
};

}  // namespace sp::shm
