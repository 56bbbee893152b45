// StdinFeeds: the frontend's side of the jobs' input rings (shm/input.h).
// Writes a new job's "stdin" into its ring, and job_stdin_write's data after
// it, in order; what a ring has no room for yet is held here and follows as
// the command reads (service(), on every doorbell). A job_stdin_write is
// answered once all its bytes are in the ring, or with a retryable error
// when they are not after kWriteWaitNs (the bytes written stay written: the
// client retries from `stdin_bytes` with `offset`).
//
// Bounds: kMaxHeld bytes held over all jobs (beyond: the job or the write
// is refused, retryable). Parts are kept per job in order.
//
// Used from the frontend's single thread.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>

#include "frontend/errors.h"
#include "shm/segment.h"

namespace sp::frontend {

class StdinFeeds {
 public:
  static constexpr uint64_t kMaxHeld = 64ull << 20;
  static constexpr uint64_t kWriteWaitNs = 5'000'000'000;

  // `wake(w)` rings the worker that owns a job whose word is `w`.
  StdinFeeds(const shm::Segment& seg, std::function<void(shm::JobWord)> wake)
      : seg_(seg), jobs_(seg.jobs()), wake_(std::move(wake)) {}

  // Whether `bytes` more may be held (the part a ring has no room for).
  bool can_hold(uint64_t bytes) const;
  // A new job's stdin (in slot `slot`, generation `generation`, before it is
  // queued): its ring is marked open, `data` written (what fits; the rest
  // held), then EOF unless `keep_open`.
  // `terminal`: it runs on a PTY (EOF cannot be sent, only ^D).
  void start(uint32_t slot, uint32_t generation, std::string data, bool keep_open, bool terminal);

  // job_stdin_write on the job in `slot`: `data` (bytes before it:
  // `offset`, if given), then EOF if `eof`. Calls `done` once, now or later:
  // with the error (a gap, its stdin not open or closed, the bytes cannot be
  // held), or with nullptr and the job's stdin bytes accepted so far.
  struct Write {
    std::string job_id;
    std::string data;
    std::optional<uint64_t> offset;
    bool eof = false;  // job_stdin_close is a write of nothing with eof
  };
  using Done = std::function<void(const StdinError* error, uint64_t stdin_bytes)>;
  void write(uint32_t slot, uint32_t generation, Write w, Done done);

  // Writes what the rings have room for, answers writes that are done or
  // waited too long, drops the feeds of jobs that ended.
  void service();
  // A new frontend: one-shot stdin its predecessor was still feeding ends
  // where it is (EOF after the bytes in the ring).
  void recover();
  uint64_t held() const { return held_; }

 private:
  struct Part {
    std::string data;
    size_t at = 0;
    bool eof = false;  // EOF once it is written
    Done done;         // a job_stdin_write's, called when it is all written (or failed)
    std::string job_id;
    uint64_t deadline_ns = 0;  // 0: none (a new job's "stdin")
  };
  struct Feed {
    uint32_t generation = 0;
    std::deque<Part> parts;
  };
  // Bytes of the job's stdin accepted: in its ring, or held in `feed`.
  uint64_t accepted(uint32_t slot, const Feed* feed) const;
  // Writes what fits; true when nothing is left (or nothing more is taken).
  bool pump(uint32_t slot, Feed& f);
  // Answers the writes of `f` from its `from`th part on with `kind`, and
  // drops those parts (the later ones queued behind them).
  void fail_from(uint32_t slot, Feed& f, size_t from, StdinError::Kind kind);

  const shm::Segment& seg_;
  shm::JobTable jobs_;
  std::function<void(shm::JobWord)> wake_;
  std::unordered_map<uint32_t, Feed> feeds_;  // by slot
  uint64_t held_ = 0;                         // bytes in parts not written yet
};

}  // namespace sp::frontend
