// JobTable: the operations on JobSlot state words. Any process may hold a
// JobTable over the mapped segment; each operation is one CAS on a slot's word,
// so a process killed at any instruction leaves every slot in a state its
// owner stamp explains (see docs/shm-layout.md, "Crash cases").
//
// Word layout (64 bits): state:8 | owner:8 | incarnation:16 | generation:32.
// owner is owner_stamp(worker index) (0: none); incarnation is that worker's
// incarnation (low 16 bits); generation grows each time the slot is freed, so
// a stale reference to an earlier job in the slot never matches.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>

#include "shm/layout.h"

namespace sp::shm {

// Worker `index`'s owner stamp in a JobWord; 0 is "no owner".
inline constexpr uint8_t owner_stamp(uint32_t worker_index) {
  return uint8_t(worker_index + 1);
}

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

// Reading methods are const; every method that writes the shared slots is not,
// so a `const JobTable&` can only look.
class JobTable {
 public:
  JobTable(JobSlot* slots, uint32_t count) : slots_(slots), count_(count) {}

  uint32_t size() const { return count_; }
  JobSlot& slot(uint32_t i) { return slots_[i]; }
  const JobSlot& slot(uint32_t i) const { return slots_[i]; }
  JobWord load(uint32_t i) const {
    return JobWord::unpack(slots_[i].word.load(std::memory_order_acquire));
  }

  // One CAS: `from` must be exactly the current word.
  // seq_cst: the orphan handshake (release_if_orphaned) needs it; on x86 a
  // locked cmpxchg costs the same either way.
  bool transition(uint32_t i, JobWord from, JobWord to) {
    uint64_t expected = from.pack();
    return slots_[i].word.compare_exchange_strong(expected, to.pack(), std::memory_order_seq_cst);
  }

  // Frontend: takes a free slot (Free -> Allocated), scanning from `cursor`,
  // and resets every field but the word and spec_words (encode_spec clears
  // the arena up to what the last spec used).
  std::optional<uint32_t> allocate(uint32_t& cursor) {
    for (uint32_t n = 0; n < count_; ++n) {
      uint32_t i = cursor++ % count_;
      JobWord w = load(i);
      if (w.state == JobState::kFree && transition(i, w, w.with_state(JobState::kAllocated))) {
        JobSlot& s = slots_[i];
        s.control.store(0, std::memory_order_relaxed);
        s.pgid.store(0, std::memory_order_relaxed);
        s.job_id = 0;
        s.start_ns.store(0, std::memory_order_relaxed);
        s.end_ns.store(0, std::memory_order_relaxed);
        s.result_words = 0;
        s.record = {};
        s.cancel_signal.store(0, std::memory_order_relaxed);
        s.cancel_grace_ms.store(kCancelGraceDefault, std::memory_order_relaxed);
        s.signals.store(0, std::memory_order_relaxed);
        s.queued_ns.store(0, std::memory_order_relaxed);
        s.in_head.store(0, std::memory_order_relaxed);
        s.in_tail.store(0, std::memory_order_relaxed);
        s.in_state.store(0, std::memory_order_relaxed);
        s.winsize.store(0, std::memory_order_relaxed);
        s.fg_signals.store(0, std::memory_order_relaxed);
        s.out_head.store(0, std::memory_order_relaxed);
        s.out_tail.store(0, std::memory_order_relaxed);
        s.out_writer_waiting.store(0, std::memory_order_relaxed);
        s.out_ring.store(0, std::memory_order_relaxed);
        return i;
      }
    }
    return std::nullopt;
  }

  // Worker: Queued -> Claimed by (owner, incarnation). False if someone else
  // got it first or the slot moved on.
  bool claim(uint32_t i, uint8_t owner, uint16_t incarnation) {
    JobWord w = load(i);
    if (w.state != JobState::kQueued) return false;
    JobWord to = w;
    to.state = JobState::kClaimed;
    to.owner = owner;
    to.incarnation = incarnation;
    return transition(i, w, to);
  }

  // Terminal -> Free, generation + 1. Only from the exact terminal word seen.
  bool release(uint32_t i, JobWord terminal) {
    if (!is_terminal(terminal.state)) return false;
    JobWord to{JobState::kFree, 0, 0, terminal.generation + 1};
    return transition(i, terminal, to);
  }

  // Anyone: if the job is terminal and orphaned, free it. The setter of the
  // orphan flag and the setter of the terminal state both call this after
  // their own step, so one of them always sees both (seq_cst on both sides).
  // The word is read first and the CAS is from exactly that word, so a slot
  // already reused by a later job (new generation) is never freed by mistake.
  void release_if_orphaned(uint32_t i) {
    JobWord w = JobWord::unpack(slots_[i].word.load(std::memory_order_seq_cst));
    if (!is_terminal(w.state)) return;
    if (!(slots_[i].control.load(std::memory_order_seq_cst) & kControlOrphan)) return;
    release(i, w);
  }

  void set_control(uint32_t i, uint32_t flags) {
    slots_[i].control.fetch_or(flags, std::memory_order_seq_cst);
  }

  // Job i's client is gone: the worker stops it, and whoever sees it
  // terminal frees the slot (it may be terminal already).
  void orphan(uint32_t i) {
    set_control(i, kControlCancel | kControlOrphan);
    release_if_orphaned(i);
  }

  // The cancel handshake. Frontend: asks the worker running job i to stop it
  // with `sig` (0: SIGTERM) and SIGKILL after `grace_ms` (kCancelGraceDefault:
  // the spec's). The signal and grace are stored before the flag the worker
  // acts on, so it never sees the flag without them.
  void request_cancel(uint32_t i, uint32_t sig = 0, uint32_t grace_ms = kCancelGraceDefault) {
    slots_[i].cancel_signal.store(sig, std::memory_order_relaxed);
    slots_[i].cancel_grace_ms.store(grace_ms, std::memory_order_relaxed);
    set_control(i, kControlCancel);
  }
  struct CancelRequest {
    int signal = 0;                           // 0: SIGTERM
    uint32_t grace_ms = kCancelGraceDefault;  // kCancelGraceDefault: the spec's
  };
  // Worker: the cancel asked for job i, if any.
  std::optional<CancelRequest> cancel_requested(uint32_t i) const {
    if (!(slots_[i].control.load(std::memory_order_seq_cst) & kControlCancel)) return std::nullopt;
    return CancelRequest{int(slots_[i].cancel_signal.load(std::memory_order_relaxed)),
                         slots_[i].cancel_grace_ms.load(std::memory_order_relaxed)};
  }

  // Frontend: asks for a PTY job's terminal to be `rows` x `cols`.
  void request_resize(uint32_t i, uint16_t rows, uint16_t cols) {
    slots_[i].winsize.store(uint32_t(rows) << 16 | cols, std::memory_order_relaxed);
    set_control(i, kControlResize);
  }
  // Worker: the size asked for since the last call, if any (rows << 16 | cols).
  std::optional<uint32_t> take_resize(uint32_t i) {
    if (!(slots_[i].control.load(std::memory_order_acquire) & kControlResize)) return std::nullopt;
    slots_[i].control.fetch_and(~kControlResize, std::memory_order_acq_rel);
    return slots_[i].winsize.load(std::memory_order_relaxed);
  }

  // Frontend: asks for signal `sig` (1..64) to be delivered to job i's
  // process group, or (`foreground`) to its terminal's foreground group.
  void request_signal(uint32_t i, int sig, bool foreground = false) {
    (foreground ? slots_[i].fg_signals : slots_[i].signals)
        .fetch_or(uint64_t{1} << (sig - 1), std::memory_order_release);
  }
  uint64_t take_fg_signals(uint32_t i) {
    if (!slots_[i].fg_signals.load(std::memory_order_relaxed)) return 0;
    return slots_[i].fg_signals.exchange(0, std::memory_order_acquire);
  }
  // Worker: the signals asked for since the last call (bit N-1: signal N),
  // taken in one exchange so none is delivered twice or lost.
  uint64_t take_signals(uint32_t i) {
    if (!slots_[i].signals.load(std::memory_order_relaxed)) return 0;
    return slots_[i].signals.exchange(0, std::memory_order_acquire);
  }

 private:
  JobSlot* slots_;
  uint32_t count_;
};

}  // namespace sp::shm
