// Job: one job a worker runs, from the claimed slot to its published end;
// the per-job state machine.
//
//   start     claimed slot -> cgroup, spawn, Running, watched; or, when it
//             cannot start, its terminal state published at once
//   on_pipe   output into its sink (sinks.h), paused while the sink is full;
//             its secrets redacted on the way (common/redactor.h)
//   on_exit   the leader exited: kill the group, reap, read the pipes to EOF
//   on_bell   job_signal and job_cancel requests; paused pipes resumed; new
//             stdin bytes passed on
//   on_stdin_writable  the stdin pipe has room again
//   on_timer  timeout (TERM), SIGKILL after the grace, the EOF deadline
//   shutdown  the worker stops: SIGKILL, ends cancelled
// Once its terminal state is published, done() is true and the loop drops it.
//
// Called from the worker's loop (loop.h), which owns the Jobs; each Job owns
// its Process and its sink, and holds the loop's JobEnv, which must outlive it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include "common/redactor.h"
#include "isolation/cgroups.h"
#include "shm/codec.h"
#include "shm/job_table.h"
#include "shm/segment.h"
#include "worker/poller.h"
#include "worker/sinks.h"
#include "worker/spawn.h"

namespace sp::worker {

// What the jobs of one worker share: owned by the loop.
struct JobEnv {
  const shm::Segment& seg;
  shm::JobTable jobs;
  shm::WorkerSlot& rec;  // this worker's
  isolation::Cgroups& cgroups;
  Poller& poller;
  int devnull = -1;
  int spool_dir = -1;                 // O_PATH fd; -1: none (detached jobs cannot start)
  uint32_t default_grace_ms = 0;      // TERM -> KILL when the spec has none
  std::span<char> spool_scratch;      // detached jobs' pipes are read into it
  std::span<char> redact_scratch;     // pipes of jobs with secrets are read into it
  shm::DecodedSpec spec{};            // reused across starts
  SignalDispositions dispositions{};  // the worker's, taken when it has set them
  bool notify_frontend = false;       // a job published output or its end: ring the frontend
  bool shutting_down = false;
};

class Job {
 public:
  // Starts the job this worker claimed in `slot`, watched with tags for
  // (`entry`, `generation`). Nullopt if it ended at once (cancelled before
  // it started, or failed to start): its terminal state is published then.
  static std::optional<Job> start(JobEnv& env, uint32_t slot, uint32_t entry, uint32_t generation);

  Job(Job&&) noexcept = default;
  Job& operator=(Job&&) noexcept = default;

  // `hangup`: the writers are gone (EPOLLHUP), so a short read is not the
  // end: it reads on to EOF in this turn rather than the next.
  void on_pipe(Stream s, bool hangup = false);
  void on_exit();
  void on_bell();
  void on_stdin_writable();
  void on_timer(uint64_t now_ns);
  void shutdown();

  // The earliest deadline of its timers (CLOCK_MONOTONIC ns); 0: none.
  uint64_t next_deadline() const;
  bool done() const { return done_; }

 private:
  Job(JobEnv& env, uint32_t slot, uint32_t entry, uint32_t generation)
      : env_(&env), slot_(slot), entry_(entry), generation_(generation) {}

  // `sig` to the group; unless it is SIGKILL, SIGKILL follows after
  // `grace_ns` if the job has not exited by then.
  void stop(int sig, uint64_t grace_ns = 0);
  void take_control();
  void close_pipe(Stream s);
  // Stops reading pipe `s` until a bell finds room in the sink again.
  void pause(Stream s);
  // `n` bytes of the sink's last room() came from stream `s`.
  void take(Stream s, size_t n);
  // Moves redacted_[s] into the sink as far as it has room; true when all went.
  bool flush_redacted(Stream s);
  // Stops waiting for its pipes (nobody will read them) and ends it if exited.
  void abandon_output();
  void maybe_finish();
  // Passes the input ring's bytes on to the stdin pipe until one of them is
  // empty or full; closes the pipe at the input's end.
  void feed_stdin();
  // No more stdin for the command (its end, or it stopped reading).
  void close_stdin();

  JobEnv* env_;
  uint32_t slot_;
  uint32_t entry_;
  uint32_t generation_;
  shm::JobWord word_;  // Running, as we made it
  Process proc_;
  std::unique_ptr<OutputSink> sink_;
  std::unique_ptr<Redactor> redactors_[2];  // per stream, when the job has secrets
  // Redacted output the sink had no room for yet (at most one read's worth
  // plus what the redactor held): written before the pipe is read again.
  std::string redacted_[2];
  bool paused_[2] = {};         // not reading the pipe: the sink is full
  bool stdin_watched_ = false;  // waiting for room in the stdin pipe
  Process::Exit exit_;
  bool exited_ = false;
  bool stopping_ = false;
  bool timed_out_ = false;
  bool cancelled_ = false;
  bool in_cgroup_ = false;        // runs in its own cgroup (Cgroups::wanted)
  bool oom_killed_ = false;       // by its cgroup's memory limit
  bool output_killed_ = false;    // stopped by its output policy
  bool done_ = false;             // terminal state published
  uint64_t deadline_ns_ = 0;      // timeout
  uint64_t kill_at_ns_ = 0;       // SIGKILL after the grace period
  uint64_t eof_deadline_ns_ = 0;  // stop waiting for pipe EOF
  uint64_t grace_ns_ = 0;
};

}  // namespace sp::worker
