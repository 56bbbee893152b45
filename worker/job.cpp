#include "worker/job.h"

#include <signal.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/crash_point.h"
#include "common/log.h"
#include "shm/metrics.h"
#include "shm/repair.h"

namespace sp::worker {

namespace {

using shm::JobState;
using shm::JobWord;

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kEofGraceNs = 1000 * kMs;  // after the leader exits, how long escaped
                                              // processes may keep its pipes open
// Reads per pipe event, so that one chatty job cannot starve the others.
constexpr int kReadsPerEvent = 8;

void publish(JobEnv& env, uint32_t slot, JobWord from, JobState state, int exit_code, int sig,
             std::string_view why) {
  if (!shm::publish_terminal(env.seg, slot, from, state, exit_code, sig, why))
    spdlog::error("job slot {} changed under its owner", slot);
  env.notify_frontend = true;
}

// A job that ends before a process runs for it.
std::nullopt_t end_unstarted(JobEnv& env, uint32_t slot, JobState state, std::string_view why) {
  publish(env, slot, env.jobs.load(slot), state, -1, 0, why);
  return std::nullopt;
}

}  // namespace

std::optional<Job> Job::start(JobEnv& env, uint32_t slot, uint32_t entry, uint32_t generation) {
  shm::JobSlot& s = env.jobs.slot(slot);
  JobWord word = env.jobs.load(slot);
  // Its wait ends here, whether it starts or not.
  if (uint64_t queued = s.queued_ns.load(std::memory_order_relaxed), now = monotonic_ns();
      queued && queued <= now)
    shm::observe(env.seg.header().metrics.queue_wait, shm::kQueueWaitBounds, now - queued);
  if (env.jobs.cancel_requested(slot))
    return end_unstarted(env, slot, JobState::kCancelled, "cancelled before it started");
  if (Status st = shm::decode_spec(env.seg.spec(slot), s.spec_words, env.spec); !st)
    return end_unstarted(env, slot, JobState::kFailed, st.error().message());
  const shm::DecodedSpec& spec = env.spec;
  auto program = resolve_program(spec);
  if (!program) return end_unstarted(env, slot, JobState::kFailed, program.error().message());
  if (s.record && (!s.record.within(env.seg.caps().job_records) || env.spool_dir < 0))
    return end_unstarted(env, slot, JobState::kFailed, "detached job without a spool");
  bool in_cgroup = env.cgroups.wanted(spec.limits.memory_bytes, spec.limits.processes);
  if (in_cgroup)
    if (Status st = env.cgroups.prepare(slot, spec.limits.memory_bytes, spec.limits.processes); !st)
      return end_unstarted(env, slot, JobState::kFailed,
                           "cannot set up the job's cgroup: " + st.error().message());
  // Running before the process exists: if we die from here on, the job ends
  // lost (and the supervisor kills the orphan); it is never started twice.
  JobWord running = word.with_state(JobState::kRunning);
  env.jobs.transition(slot, word, running);  // we own it: nobody else moves a Claimed job
  const bool input = s.in_state.load(std::memory_order_acquire) & shm::kInputOpen;
  auto proc = spawn(spec, *program, env.devnull, input, in_cgroup ? env.cgroups.procs() : nullptr,
                    env.dispositions);
  if (!proc) {
    if (in_cgroup) env.cgroups.release(slot);
    publish(env, slot, running, JobState::kFailed, -1, 0, proc.error().message());
    return std::nullopt;
  }
  uint64_t now = monotonic_ns();
  proc->publish_pgid(s.pgid);
  crash_point("after_spawn");
  s.start_ns.store(now, std::memory_order_relaxed);
  env.seg.header().counters.started.fetch_add(1, std::memory_order_relaxed);

  Job j(env, slot, entry, generation);
  j.word_ = running;
  j.proc_ = std::move(*proc);
  j.in_cgroup_ = in_cgroup;
  if (s.record)
    j.sink_ = std::make_unique<SpoolSink>(env.seg, slot, env.rec, env.spool_dir, env.spool_scratch);
  else
    j.sink_ = std::make_unique<RingSink>(env.seg, slot, env.notify_frontend);
  if (!spec.secrets.empty()) {
    std::vector<std::string> secrets(spec.secrets.begin(), spec.secrets.end());
    if (spec.pty_rows) secrets = with_terminal_forms(std::move(secrets));
    j.redactors_[kStdout] = std::make_unique<Redactor>(secrets);
    if (!spec.pty_rows)  // a terminal's output is all stdout
      j.redactors_[kStderr] = std::make_unique<Redactor>(*j.redactors_[kStdout]);
  }
  j.deadline_ns_ = spec.timeout_ms ? now + spec.timeout_ms * kMs : 0;
  j.grace_ns_ = uint64_t(spec.kill_grace_ms ? spec.kill_grace_ms : env.default_grace_ms) * kMs;
  bool ok = bool(env.poller.watch(j.proc_.pidfd(), {Kind::kPidfd, entry, generation}));
  for (Stream st : kStreams)  // a PTY job has its terminal as stdout only
    ok = ok && (!j.proc_.pipe_open(st) ||
                env.poller.watch(j.proc_.pipe(st), Tag::pipe(st, entry, generation)));
  if (!ok) {
    spdlog::error("cannot watch job {}: epoll_ctl failed", s.job_id);
    j.stop(SIGKILL);
  }
  j.feed_stdin();  // what the frontend wrote before we started it
  return j;
}

void Job::take(Stream s, size_t n) {
  env_->seg.header().metrics.output_bytes[s].fetch_add(uint64_t(n), std::memory_order_relaxed);
  OutputSink::Taken taken = sink_->take(s, n);
  if (taken.published) env_->notify_frontend = true;
  if (taken.stop_job && !cancelled_) {
    output_killed_ = cancelled_ = true;
    stop(SIGTERM, grace_ns_);
  }
}

bool Job::flush_redacted(Stream s) {
  return drain_into(*sink_, redacted_[s], [&](size_t n) { take(s, n); });
}

// The one pipe-reading loop, for either sink. With secrets the pipe is read
// into the scratch and redacted into redacted_[s], which goes into the sink
// before the pipe is read again.
void Job::on_pipe(Stream s, bool hangup) {
  if (!proc_.pipe_open(s) || paused_[s]) return;  // stale event from this batch
  Redactor* redactor = redactors_[s].get();
  for (int turn = 0; turn < kReadsPerEvent; ++turn) {
    std::span<char> room = redactor ? env_->redact_scratch : sink_->room();
    // A held read (no output ring free, worker/sinks.h) is published before
    // more is read: the pipe's EOF, read now, would end the job without it.
    // room() is then empty, and flush_redacted() false.
    if ((redactor && !flush_redacted(s)) || room.empty()) return pause(s);
    ssize_t n = proc_.read(s, room);
    if (n > 0) {
      if (redactor) {
        std::string& out = redacted_[s];
        out.resize(redactor->held() + size_t(n));
        out.resize(redactor->feed({room.data(), size_t(n)}, out.data()));
      } else {
        take(s, size_t(n));
      }
      if (size_t(n) < room.size() && !hangup) {  // drained; epoll tells us when there is more
        // Output the sink holds unpublished waits for a bell like a full
        // ring's, or a job that goes quiet now would never show it.
        if ((redactor && !flush_redacted(s)) || sink_->holding()) pause(s);
        return;
      }
      continue;
    }
    if (n == -EAGAIN) return;
    // EOF (or a read error, which ends the stream too). What the redactor
    // held goes now (no secret can complete); if the sink cannot take it
    // all, the pipe stays open, paused, and the EOF is read again later.
    if (redactor) {
      std::string& out = redacted_[s];
      const size_t had = out.size();
      out.resize(had + redactor->held());
      out.resize(had + redactor->finish(out.data() + had));
      if (!flush_redacted(s)) return pause(s);
    }
    close_pipe(s);
    // Both pipes at EOF: the command has most likely ended too, its pidfd
    // not yet seen. Looking now saves a loop turn (and a second wake-up of
    // the frontend) for every short job.
    if (!exited_ && !proc_.pipe_open(kStdout) && !proc_.pipe_open(kStderr) && proc_.ended())
      return on_exit();
    maybe_finish();
    return;
  }
}

void Job::feed_stdin() {
  if (!proc_.stdin_open() || stdin_watched_) return;
  shm::InputReader in = env_->seg.input_reader(slot_);
  for (;;) {
    std::span<const unsigned char> bytes = in.readable();
    if (bytes.empty()) {
      if (in.at_eof()) close_stdin();
      return;
    }
    ssize_t n = proc_.write_stdin(bytes);
    if (n == -EAGAIN) {  // the pipe is full: go on when it has room
      stdin_watched_ =
          bool(env_->poller.watch(proc_.stdin_fd(), {Kind::kStdin, entry_, generation_}, EPOLLOUT));
      if (!stdin_watched_) close_stdin();
      return;
    }
    if (n <= 0) return close_stdin();  // EPIPE: the command stopped reading
    if (in.consume(size_t(n))) env_->notify_frontend = true;
  }
}

void Job::on_stdin_writable() {
  if (!stdin_watched_) return;
  env_->poller.unwatch(proc_.stdin_fd());
  stdin_watched_ = false;
  feed_stdin();
}

void Job::close_stdin() {
  if (!proc_.stdin_open()) return;
  if (stdin_watched_) env_->poller.unwatch(proc_.stdin_fd());
  stdin_watched_ = false;
  proc_.close_stdin();
  // The frontend learns that no more is taken (a waiting writer gets its answer).
  env_->seg.input_reader(slot_).close();
  env_->notify_frontend = true;
}

void Job::on_exit() {
  if (exited_) return;
  // Kills the rest of the group while the leader is an unreaped zombie, and
  // clears the slot's pgid before the reap (Process::kill_and_reap).
  exit_ = proc_.kill_and_reap();
  close_stdin();  // its readers are gone
  // Where the job has a cgroup, also what left the group (after the reap: an
  // unreaped leader would be listed, and killed again, as a zombie).
  if (in_cgroup_) {
    env_->cgroups.kill(slot_);
    oom_killed_ = env_->cgroups.oom_killed(slot_);  // the leader, or a process it waited for
  }
  exited_ = true;
  deadline_ns_ = kill_at_ns_ = 0;  // nothing left to signal
  // The group is dead: its pipes are at EOF unless an escaped process holds
  // them. Read them now rather than in another loop turn.
  for (Stream s : kStreams) {
    if (done_) return;  // reading the other pipe to EOF finished it
    // Nobody waits for a cancelled attached job's output; a detached job's is kept.
    if (cancelled_ && !sink_->durable()) close_pipe(s);
    if (proc_.pipe_open(s) && !paused_[s]) on_pipe(s);
  }
  if (done_) return;
  if (proc_.pipe_open(kStdout) || proc_.pipe_open(kStderr))
    eof_deadline_ns_ = monotonic_ns() + kEofGraceNs;
  maybe_finish();
}

// Backpressure: the pipe is not read until a bell finds room in the sink
// (on_bell), so the child blocks once the pipe fills.
void Job::pause(Stream s) {
  env_->poller.unwatch(proc_.pipe(s));
  paused_[s] = true;
}

void Job::close_pipe(Stream s) {
  proc_.close_pipe(s);
  paused_[s] = false;
}

void Job::abandon_output() {
  for (Stream s : kStreams)  // what redaction held back: into the sink as far as it goes
    if (redactors_[s] && proc_.pipe_open(s)) {
      std::string& out = redacted_[s];
      const size_t had = out.size();
      out.resize(had + redactors_[s]->held());
      out.resize(had + redactors_[s]->finish(out.data() + had));
      flush_redacted(s);
    }
  close_pipe(kStdout);
  close_pipe(kStderr);
  maybe_finish();
}

void Job::maybe_finish() {
  if (!exited_ || proc_.pipe_open(kStdout) || proc_.pipe_open(kStderr)) return;
  const bool shutting_down = env_->shutting_down;
  JobState state = cancelled_   ? JobState::kCancelled
                   : timed_out_ ? JobState::kTimedOut
                                : JobState::kExited;
  std::string why(cancelled_ && shutting_down ? "the daemon is shutting down"
                  : oom_killed_ ? "out of memory: the kernel killed a process of the job "
                                  "at its memory_bytes limit"
                                : "");
  if (output_killed_ && !shutting_down) why = sink_->stop_reason();
  if (oom_killed_) env_->seg.header().counters.oom_kills.fetch_add(1, std::memory_order_relaxed);
  if (in_cgroup_) env_->cgroups.release(slot_);
  sink_.reset();  // a spool file is closed before the job's end is published
  publish(*env_, slot_, word_, state, exit_.code, exit_.signal, why);
  done_ = true;
}

void Job::stop(int sig, uint64_t grace_ns) {
  if (exited_) return;
  proc_.signal_group(sig);
  if (sig == SIGKILL) {
    if (in_cgroup_) env_->cgroups.kill(slot_);
    kill_at_ns_ = 0;
    return;
  }
  // A stop already under way keeps its earlier SIGKILL (a cancel's long
  // grace must not extend a timed-out job's).
  uint64_t kill_at = monotonic_ns() + grace_ns;
  kill_at_ns_ = stopping_ && kill_at_ns_ ? std::min(kill_at_ns_, kill_at) : kill_at;
  stopping_ = true;
}

// What the frontend asked for the job: signals to deliver (job_signal), and
// a cancel with its signal and grace.
void Job::take_control() {
  if (auto size = env_->jobs.take_resize(slot_))
    proc_.resize(uint16_t(*size >> 16), uint16_t(*size & 0xffff));
  if (uint64_t sigs = env_->jobs.take_signals(slot_))
    for (int sig = 1; sig <= 64; ++sig)
      if (sigs >> (sig - 1) & 1) proc_.signal_group(sig);  // nothing once reaped
  if (uint64_t sigs = env_->jobs.take_fg_signals(slot_))
    for (int sig = 1; sig <= 64; ++sig)
      if (sigs >> (sig - 1) & 1) proc_.signal_foreground(sig);
  if (cancelled_) return;
  auto cancel = env_->jobs.cancel_requested(slot_);
  if (!cancel) return;
  cancelled_ = true;
  if (exited_) return abandon_output();  // only its pipes are left: stop waiting for them
  stop(cancel->signal ? cancel->signal : SIGTERM,
       cancel->grace_ms == shm::kCancelGraceDefault ? grace_ns_ : uint64_t(cancel->grace_ms) * kMs);
}

void Job::on_bell() {
  take_control();
  if (done_) return;  // a cancel finished it
  feed_stdin();
  for (Stream s : kStreams) {
    if (!paused_[s] || !sink_->resume()) continue;
    paused_[s] = false;
    if (!env_->poller.watch(proc_.pipe(s), Tag::pipe(s, entry_, generation_))) stop(SIGKILL);
    // The EOF grace may have passed while it waited: it starts again.
    if (exited_ && !eof_deadline_ns_) eof_deadline_ns_ = monotonic_ns() + kEofGraceNs;
    // Redacted output may wait with nothing new in the pipe to wake us.
    if (redactors_[s]) on_pipe(s);
    if (done_) return;
  }
}

void Job::on_timer(uint64_t now) {
  if (deadline_ns_ && now >= deadline_ns_) {
    deadline_ns_ = 0;
    if (!exited_ && !stopping_) {  // a cancel already under way keeps its grace
      timed_out_ = !cancelled_;
      stop(SIGTERM, grace_ns_);
    }
  }
  if (kill_at_ns_ && now >= kill_at_ns_) {
    kill_at_ns_ = 0;
    stop(SIGKILL);
  }
  if (eof_deadline_ns_ && now >= eof_deadline_ns_) {
    eof_deadline_ns_ = 0;
    // Output still waiting for a slow reader is kept (unless nobody waits
    // for it any more); anything else is held open by a process that left
    // the job's group, and is not waited for.
    for (Stream s : kStreams)
      if (!paused_[s] || cancelled_) close_pipe(s);
    maybe_finish();
  }
}

void Job::shutdown() {
  cancelled_ = true;
  stop(SIGKILL);
  if (exited_) abandon_output();
}

uint64_t Job::next_deadline() const {
  uint64_t next = 0;
  for (uint64_t t : {deadline_ns_, kill_at_ns_, eof_deadline_ns_})
    if (t && (!next || t < next)) next = t;
  return next;
}

}  // namespace sp::worker
