// Output sinks: where a job's pipes are read into. A job has one, chosen when
// it starts: a RingSink (the job's shm output ring, drained by the frontend
// for an attached job's client) or a SpoolSink (a detached job's spool
// file). The job's pipe-reading loop (job.cpp) reads straight into room()
// and hands what it read to take(), so it is written once for both.
//
// Used from the worker's single thread. A sink borrows what it is built
// over (the segment, the worker's slot, the spool directory fd, the
// scratch buffer): they must outlive it. A SpoolSink owns its spool file's fd.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>

#include "common/unique_fd.h"
#include "shm/output.h"
#include "shm/segment.h"
#include "worker/spawn.h"

namespace sp::worker {

class OutputSink {
 public:
  virtual ~OutputSink() = default;

  // Where the next read from a pipe goes. Empty: no room now (backpressure);
  // the job stops reading its pipes, so the command blocks once they fill,
  // until resume() says there is room again.
  virtual std::span<char> room() = 0;

  struct Taken {
    bool published = false;  // a reader can see new output: ring the frontend
    bool stop_job = false;   // the job's output policy says stop it (once per job)
  };
  // The first `n` bytes of the last room() were read from `stream`.
  virtual Taken take(Stream stream, size_t n) = 0;

  // After a doorbell, for a job that stopped reading: true if room() has
  // space again (and the sink no longer waits for it).
  virtual bool resume() = 0;

  // Bytes were taken that no reader can see yet (RingSink's held read): the
  // job reads no more and does not end until resume() has published them.
  virtual bool holding() const { return false; }

  // Output is kept for a reader who comes later (a detached job's), so it is
  // read to the end even when the job is cancelled.
  virtual bool durable() const = 0;

  // Why the job was stopped after take() said stop_job.
  virtual std::string stop_reason() const { return {}; }
};

// Moves `pending` into `sink` as far as it has room, calling `take(n)` for
// each piece written into the sink's room() (the job's own bookkeeping and
// the sink's take). True when all of it went and a reader can see it: a
// read the sink holds unpublished (holding()) waits like a full ring.
template <typename Take>
bool drain_into(OutputSink& sink, std::string& pending, Take&& take) {
  size_t at = 0;
  while (at < pending.size()) {
    std::span<char> room = sink.room();  // empty: it waits for its reader
    if (room.empty()) break;
    const size_t n = std::min(room.size(), pending.size() - at);
    std::memcpy(room.data(), pending.data() + at, n);
    take(n);
    at += n;
  }
  pending.erase(0, at);
  return pending.empty() && !sink.holding();
}

// Into the job's shm output ring (shm/output.h): never drops a byte; when
// the ring is full it marks itself waiting, for the frontend to ring the
// worker once it has drained some. The ring is taken with the first output
// (a silent job holds none). While none is free, one read is held here (so a
// silent job still sees its EOF and ends) and then the sink has no room, as
// if its ring were full; the frontend rings the workers when slots go, and
// the held bytes are the ring's first chunk.
class RingSink final : public OutputSink {
 public:
  // `notify`: set when output is published outside take() (the held read).
  RingSink(const shm::Segment& seg, uint32_t slot, bool& notify);

  std::span<char> room() override;
  Taken take(Stream stream, size_t n) override;
  bool resume() override;
  bool holding() const override { return held_ != 0; }
  bool durable() const override { return false; }

 private:
  // The ring, taken if the job holds none; false if none is free.
  bool have_ring();

  shm::OutputRings rings_;
  uint32_t slot_index_;
  shm::JobSlot& slot_;
  bool& notify_;
  std::optional<shm::OutputWriter> writer_;
  char hold_[512];  // the read taken while no ring is free
  uint32_t held_ = 0;
  Stream held_stream_ = kStdout;
};

// Into a detached job's spool file (shm/spool.h), made on its first output
// (a silent job costs no file). Never pauses: the spool is bounded by the
// job's output cap and the daemon's spool budget instead. From the first
// byte that does not fit on, the job's output is dropped (what is kept is a
// prefix, no holes) and marked truncated, or with the "kill" output policy
// take() says stop the job.
class SpoolSink final : public OutputSink {
 public:
  // For the job in `slot`, whose record is JobSlot::record. `writer` is this
  // worker's slot (the spool budget's reservations); `spool_dir` an
  // O_PATH fd of the spool directory; `scratch` where pipes are read into.
  SpoolSink(const shm::Segment& seg, uint32_t slot, shm::WorkerSlot& writer, int spool_dir,
            std::span<char> scratch);

  std::span<char> room() override { return scratch_; }
  Taken take(Stream stream, size_t n) override;
  bool resume() override { return true; }
  bool durable() const override { return true; }
  std::string stop_reason() const override;

 private:
  // The spool file, made on first use; false (logged) if it cannot be.
  bool open_file();

  const shm::Segment& seg_;
  shm::WorkerSlot& writer_;
  shm::JobRecord& record_;
  uint32_t record_index_;
  uint64_t job_id_;
  int spool_dir_;
  std::span<char> scratch_;
  UniqueFd file_;
  uint64_t end_ = 0;   // file bytes written
  bool full_ = false;  // output from here on is dropped (cap, budget, error)
};

}  // namespace sp::worker
