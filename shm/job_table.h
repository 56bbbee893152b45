// JobTable: the operations on JobSlot state words. Any process may hold a
// JobTable over the mapped segment; each operation is one CAS on a slot's word,
// so a process killed at any instruction leaves every slot in a state its
// owner stamp explains (see docs/shm-layout.md, "Crash cases").
//
// Word layout (64 bits): state:8 | owner:8 | incarnation:16 | generation:32.
// owner is the worker index + 1 (0: none); incarnation is that worker's
// incarnation (low 16 bits); generation grows each time the slot is freed, so
// a stale reference to an earlier job in the slot never matches.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>

#include "shm/layout.h"

namespace sp::shm {

struct JobWord {
  JobState state = JobState::kFree;
  uint8_t owner = 0;
  uint16_t incarnation = 0;
  uint32_t generation = 0;

  uint64_t pack() const {
    return uint64_t(state) | uint64_t(owner) << 8 | uint64_t(incarnation) << 16 |
           uint64_t(generation) << 32;
  }
  static JobWord unpack(uint64_t w) {
    return {JobState(w & 0xff), uint8_t(w >> 8), uint16_t(w >> 16), uint32_t(w >> 32)};
  }
  JobWord with_state(JobState s) const {
    JobWord c = *this;
    c.state = s;
    return c;
  }
  bool operator==(const JobWord&) const = default;
};

class JobTable {
 public:
  JobTable(JobSlot* slots, uint32_t count) : slots_(slots), count_(count) {}

  uint32_t size() const { return count_; }
  JobSlot& slot(uint32_t i) const { return slots_[i]; }
  JobWord load(uint32_t i) const {
    return JobWord::unpack(slots_[i].word.load(std::memory_order_acquire));
  }

  // One CAS: `from` must be exactly the current word.
  // seq_cst: the orphan handshake (release_if_orphaned) needs it; on x86 a
  // locked cmpxchg costs the same either way.
  bool transition(uint32_t i, JobWord from, JobWord to) const {
    uint64_t expected = from.pack();
    return slots_[i].word.compare_exchange_strong(expected, to.pack(), std::memory_order_seq_cst);
  }

  // Frontend: takes a free slot (Free -> Allocated), scanning from `cursor`.
  std::optional<uint32_t> allocate(uint32_t& cursor) const {
    for (uint32_t n = 0; n < count_; ++n) {
      uint32_t i = cursor++ % count_;
      JobWord w = load(i);
      if (w.state == JobState::kFree && transition(i, w, w.with_state(JobState::kAllocated))) {
        slots_[i].control.store(0, std::memory_order_relaxed);
        slots_[i].pgid.store(0, std::memory_order_relaxed);
        slots_[i].record = 0;
        slots_[i].cancel_signal.store(0, std::memory_order_relaxed);
        slots_[i].cancel_grace_ms.store(kCancelGraceDefault, std::memory_order_relaxed);
        slots_[i].signals.store(0, std::memory_order_relaxed);
        return i;
      }
    }
    return std::nullopt;
  }

  // Worker: Queued -> Claimed by (owner, incarnation). False if someone else
  // got it first or the slot moved on.
  bool claim(uint32_t i, uint8_t owner, uint16_t incarnation) const {
    JobWord w = load(i);
    if (w.state != JobState::kQueued) return false;
    JobWord to = w;
    to.state = JobState::kClaimed;
    to.owner = owner;
    to.incarnation = incarnation;
    return transition(i, w, to);
  }

  // Terminal -> Free, generation + 1. Only from the exact terminal word seen.
  bool release(uint32_t i, JobWord terminal) const {
    if (!is_terminal(terminal.state)) return false;
    JobWord to{JobState::kFree, 0, 0, terminal.generation + 1};
    return transition(i, terminal, to);
  }

  // Anyone: if the job is terminal and orphaned, free it. The setter of the
  // orphan flag and the setter of the terminal state both call this after
  // their own step, so one of them always sees both (seq_cst on both sides).
  // The word is read first and the CAS is from exactly that word, so a slot
  // already reused by a later job (new generation) is never freed by mistake.
  void release_if_orphaned(uint32_t i) const {
    JobWord w = JobWord::unpack(slots_[i].word.load(std::memory_order_seq_cst));
    if (!is_terminal(w.state)) return;
    if (!(slots_[i].control.load(std::memory_order_seq_cst) & kControlOrphan)) return;
    release(i, w);
  }

  void set_control(uint32_t i, uint32_t flags) const {
    slots_[i].control.fetch_or(flags, std::memory_order_seq_cst);
  }

 private:
  JobSlot* slots_;
  uint32_t count_;
};

}  // namespace sp::shm
