#include "worker/worker.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "common/clock.h"
#include "common/crash_point.h"
#include "common/log.h"
#include "common/sys.h"
#include "isolation/cgroups.h"
#include "shm/codec.h"
#include "shm/doorbell.h"
#include "shm/output.h"
#include "shm/repair.h"
#include "shm/segment.h"
#include "shm/spool.h"
#include "worker/spawn.h"

namespace sp::worker {

namespace {

using isolation::Cgroups;
using shm::JobState;
using shm::JobWord;

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kEofGraceNs = 1000 * kMs;  // after the leader exits, how long escaped
                                              // processes may keep its pipes open
// epoll tags: kind:8 | entry:24 | generation:32.
enum Kind : uint64_t { kSubmit = 1, kBell, kSignal, kTimer, kPidfd, kStdout, kStderr };

struct Job {
  bool active = false;
  uint32_t generation = 0;  // bumped per use of this entry, guards stale epoll events
  uint32_t slot = 0;
  JobWord word;
  pid_t pid = -1;
  UniqueFd pidfd;
  UniqueFd pipe[2];  // [0] stdout, [1] stderr
  bool paused[2] = {};
  bool exited = false;
  int exit_code = -1;
  int signal = 0;
  bool stopping = false;
  bool timed_out = false;
  bool cancelled = false;
  bool in_cgroup = false;        // runs in its own cgroup (Cgroups::wanted)
  bool oom_killed = false;       // by its cgroup's memory limit
  uint64_t deadline_ns = 0;      // timeout
  uint64_t kill_at_ns = 0;       // SIGKILL after the grace period
  uint64_t eof_deadline_ns = 0;  // stop waiting for pipe EOF
  uint64_t grace_ns = 0;
  // Detached jobs: output goes to a spool file instead of the output ring.
  shm::JobRecord* record = nullptr;
  UniqueFd spool;
  uint64_t spool_end = 0;      // file bytes written
  bool spool_failed = false;   // output beyond this point is dropped (cap, budget, error)
  bool output_killed = false;  // stopped for its output cap
};

class Loop {
 public:
  Loop(const Options& o, shm::Segment seg)
      : o_(o),
        seg_(std::move(seg)),
        jobs_(seg_.jobs()),
        ring_(seg_.ring()),
        rec_(seg_.worker(o.index)),
        submit_(&seg_.header().submit_bell, o.submit_fd),
        bell_(&rec_.bell, o.bell_fd),
        frontend_(&seg_.header().frontend_bell, o.frontend_fd),
        owner_(uint8_t(o.index + 1)),
        incarnation_(uint16_t(rec_.incarnation.load())),
        cgroups_(Cgroups::decode(o.cgroups)),
        entries_(seg_.caps().jobs_per_worker) {}

  Status init();
  int run();

 private:
  static uint64_t tag(Kind k, uint32_t entry = 0, uint32_t gen = 0) {
    return uint64_t(k) << 56 | uint64_t(entry) << 32 | gen;
  }
  Status watch(int fd, uint64_t t, uint32_t events = EPOLLIN) {
    epoll_event ev{events, {.u64 = t}};
    return sys("epoll_ctl ADD", [&] { return ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev); })
        .status();
  }
  void unwatch(int fd) { ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr); }

  void dispatch(uint64_t t);
  void claim_more();
  bool recycling() const;
  void set_submit_interest(bool want);
  void start(uint32_t slot);
  void finish_unstarted(uint32_t slot, JobState state, std::string_view why);
  void on_pipe(Job& j, int stream);
  void on_exit(Job& j);
  void on_bell();
  void on_timer();
  void stop(Job& j, int sig, uint64_t grace_ns = 0);
  void on_spool_pipe(Job& j, int stream);
  void keep(Job& j, int stream, std::string_view data);
  void take_control(Job& j);
  void close_pipe(Job& j, int stream);
  void maybe_finish(Job& j);
  void publish(uint32_t slot, JobWord from, JobState state, int exit_code, int sig,
               std::string_view why);
  void arm_timer();
  void begin_shutdown();
  shm::OutputWriter writer(uint32_t slot) {
    return {jobs_.slot(slot), seg_.output(slot), seg_.caps().output_bytes};
  }

  Options o_;
  shm::Segment seg_;
  shm::JobTable jobs_;
  shm::SubmitRing ring_;
  shm::WorkerRecord& rec_;
  shm::Doorbell submit_, bell_, frontend_;
  uint8_t owner_;
  uint16_t incarnation_;
  Cgroups cgroups_;
  std::vector<Job> entries_;
  uint32_t active_ = 0;
  bool want_submit_ = false;
  bool shutting_down_ = false;
  uint64_t claimed_ = 0;  // jobs taken, for --recycle-after
  bool notify_frontend_ = false;
  uint64_t armed_ns_ = 0;  // deadline the timerfd is armed for, 0: disarmed
  UniqueFd epoll_, signal_fd_, timer_, devnull_, spool_dir_;
  std::vector<char> spool_buf_ = std::vector<char>(64 * 1024);
  shm::DecodedSpec spec_;  // reused across jobs
};

Status Loop::init() {
  // Inherited at fixed numbers by dup2, which clears FD_CLOEXEC: set it again,
  // or every command would inherit (and could drain) our doorbells.
  for (int fd : {o_.submit_fd, o_.bell_fd, o_.frontend_fd})
    if (auto r = sys("fcntl FD_CLOEXEC", [&] { return ::fcntl(fd, F_SETFD, FD_CLOEXEC); }); !r)
      return r.error();
  auto ep = sys("epoll_create1", [] { return ::epoll_create1(EPOLL_CLOEXEC); });
  if (!ep) return ep.error();
  epoll_.reset(*ep);
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, s);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  auto sfd = sys("signalfd", [&] { return ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK); });
  if (!sfd) return sfd.error();
  signal_fd_.reset(*sfd);
  auto tfd = sys("timerfd_create",
                 [] { return ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK); });
  if (!tfd) return tfd.error();
  timer_.reset(*tfd);
  auto dn = sys("open /dev/null", [] { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); });
  if (!dn) return dn.error();
  devnull_.reset(*dn);
  if (!o_.spool_dir.empty()) {
    auto dir = sys("open the spool directory",
                   [&] { return ::open(o_.spool_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC); });
    if (!dir) return Error{dir.error().code, dir.error().context + " " + o_.spool_dir};
    spool_dir_.reset(*dir);
  }
  for (auto [fd, k] :
       {std::pair{o_.bell_fd, kBell}, {signal_fd_.get(), kSignal}, {timer_.get(), kTimer}})
    if (auto s = watch(fd, tag(k)); !s) return s;
  set_submit_interest(true);
  return {};
}

int Loop::run() {
  spdlog::info("ready, up to {} jobs at once", entries_.size());
  epoll_event events[64];
  for (;;) {
    // Between batches (and first of all: jobs may have been queued before we
    // started): claim new jobs, arm the timer for them, wake the frontend.
    // An entry freed in a batch may still have events in it, which the
    // generation check then drops.
    claim_more();
    arm_timer();
    if (notify_frontend_) {
      notify_frontend_ = false;
      frontend_.ring();
    }
    if (shutting_down_ && active_ == 0) break;
    if (recycling() && active_ == 0) {
      spdlog::info("recycled after {} jobs", claimed_);
      return kExitRecycled;
    }
    rec_.heartbeat_ns.store(monotonic_ns(), std::memory_order_relaxed);
    int n = ::epoll_wait(epoll_.get(), events, 64, int(seg_.caps().tick_ms));
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::critical("epoll_wait: {}", std::strerror(errno));
      return 1;
    }
    // Bounded wait: an idle tick re-checks what a doorbell would have said,
    // so a lost wake-up delays work by one tick (≤ 1 s), never forever; it is
    // also the heartbeat the supervisor watches.
    if (n == 0) on_bell();
    for (int i = 0; i < n; ++i) dispatch(events[i].data.u64);
  }
  spdlog::info("stopped");
  return 0;
}

void Loop::dispatch(uint64_t t) {
  auto kind = Kind(t >> 56);
  uint32_t entry = uint32_t(t >> 32) & 0xffffff;
  uint32_t gen = uint32_t(t);
  switch (kind) {
    case kSubmit:
      submit_.acknowledge();
      return;  // claim_more() runs after the batch
    case kBell:
      on_bell();
      return;
    case kSignal: {
      signalfd_siginfo si;
      while (::read(signal_fd_.get(), &si, sizeof si) == sizeof si) {
      }
      begin_shutdown();
      return;
    }
    case kTimer: {
      uint64_t expirations;
      [[maybe_unused]] ssize_t r = ::read(timer_.get(), &expirations, sizeof expirations);
      on_timer();
      return;
    }
    default:
      break;
  }
  if (entry >= entries_.size()) return;
  Job& j = entries_[entry];
  if (!j.active || j.generation != gen) return;  // stale event for a finished job
  if (kind == kPidfd) on_exit(j);
  if (kind == kStdout) on_pipe(j, 0);
  if (kind == kStderr) on_pipe(j, 1);
}

void Loop::set_submit_interest(bool want) {
  if (want == want_submit_) return;
  want_submit_ = want;
  if (want) {
    // EPOLLEXCLUSIVE: one submission wakes one idle worker, not all of them.
    if (auto s = watch(o_.submit_fd, tag(kSubmit), EPOLLIN | EPOLLEXCLUSIVE); !s)
      spdlog::error("{}", s.error().message());
  } else {
    unwatch(o_.submit_fd);
  }
}

bool Loop::recycling() const {
  return o_.recycle_after && claimed_ >= o_.recycle_after;
}

void Loop::claim_more() {
  while (!shutting_down_ && !recycling() && active_ < entries_.size()) {
    auto slot = ring_.claim(jobs_, owner_, incarnation_);
    if (!slot) break;
    crash_point("after_claim");
    ++claimed_;
    start(*slot);
  }
  bool full = active_ >= entries_.size() || recycling();
  // Not taking work with work left: pass the wake-up on to another worker.
  if (full && !shutting_down_ && ring_.depth() > 0) submit_.force();
  set_submit_interest(!full && !shutting_down_);
}

void Loop::start(uint32_t slot) {
  shm::JobSlot& s = jobs_.slot(slot);
  JobWord word = jobs_.load(slot);
  if (jobs_.cancel_requested(slot))
    return finish_unstarted(slot, JobState::kCancelled, "cancelled before it started");
  if (Status st = shm::decode_spec(seg_.spec(slot), s.spec_words, spec_); !st)
    return finish_unstarted(slot, JobState::kFailed, st.error().message());
  auto program = resolve_program(spec_);
  if (!program) return finish_unstarted(slot, JobState::kFailed, program.error().message());
  shm::JobRecord* record = nullptr;
  if (s.record) {
    if (s.record > seg_.caps().job_records || !spool_dir_)
      return finish_unstarted(slot, JobState::kFailed, "detached job without a spool");
    record = &seg_.record(s.record - 1);
  }
  bool in_cgroup = cgroups_.wanted(spec_.limits.memory_bytes, spec_.limits.processes);
  if (in_cgroup)
    if (Status st = cgroups_.prepare(slot, spec_.limits.memory_bytes, spec_.limits.processes); !st)
      return finish_unstarted(slot, JobState::kFailed,
                              "cannot set up the job's cgroup: " + st.error().message());
  // Running before the process exists: if we die from here on, the job ends
  // lost (and the supervisor kills the orphan); it is never started twice.
  JobWord running = word.with_state(JobState::kRunning);
  jobs_.transition(slot, word, running);  // we own it: nobody else moves a Claimed job
  auto child = spawn(spec_, *program, devnull_.get(), in_cgroup ? cgroups_.procs() : nullptr);
  if (!child) {
    if (in_cgroup) cgroups_.release(slot);
    publish(slot, running, JobState::kFailed, -1, 0, child.error().message());
    return;
  }
  uint64_t now = monotonic_ns();
  s.pgid.store(child->pid, std::memory_order_release);
  crash_point("after_spawn");
  s.start_ns.store(now, std::memory_order_relaxed);
  seg_.header().counters.started.fetch_add(1, std::memory_order_relaxed);

  uint32_t entry = 0;
  while (entries_[entry].active) ++entry;
  Job& j = entries_[entry];
  uint32_t gen = j.generation + 1;
  j = Job{};
  j.active = true;
  j.generation = gen;
  j.slot = slot;
  j.word = running;
  j.pid = child->pid;
  j.in_cgroup = in_cgroup;
  j.pidfd = std::move(child->pidfd);
  j.pipe[0] = std::move(child->out);
  j.pipe[1] = std::move(child->err);
  j.deadline_ns = spec_.timeout_ms ? now + spec_.timeout_ms * kMs : 0;
  j.grace_ns = uint64_t(spec_.kill_grace_ms ? spec_.kill_grace_ms : o_.kill_grace_ms) * kMs;
  j.record = record;
  ++active_;
  rec_.running.store(active_, std::memory_order_relaxed);
  bool ok = watch(j.pidfd.get(), tag(kPidfd, entry, gen)) &&
            watch(j.pipe[0].get(), tag(kStdout, entry, gen)) &&
            watch(j.pipe[1].get(), tag(kStderr, entry, gen));
  if (!ok) {
    spdlog::error("cannot watch job {}: epoll_ctl failed", s.job_id);
    stop(j, SIGKILL);
  }
}

void Loop::finish_unstarted(uint32_t slot, JobState state, std::string_view why) {
  publish(slot, jobs_.load(slot), state, -1, 0, why);
}

void Loop::publish(uint32_t slot, JobWord from, JobState state, int exit_code, int sig,
                   std::string_view why) {
  if (!shm::publish_terminal(seg_, slot, from, state, exit_code, sig, why))
    spdlog::error("job slot {} changed under its owner", slot);
  notify_frontend_ = true;
}

void Loop::on_pipe(Job& j, int stream) {
  if (!j.pipe[stream] || j.paused[stream]) return;  // stale event from this batch
  if (j.record) return on_spool_pipe(j, stream);
  shm::OutputWriter w = writer(j.slot);
  int fd = j.pipe[stream].get();
  // Bounded turns per event so one chatty job cannot starve the others.
  for (int turn = 0; turn < 8; ++turn) {
    auto room = w.reserve();
    if (room.empty()) {
      if (w.pause()) continue;
      unwatch(fd);  // backpressure: the child blocks once its pipe fills
      j.paused[stream] = true;
      return;
    }
    ssize_t n = ::read(fd, room.data(), room.size());
    if (n > 0) {
      crash_point("mid_output_record");
      w.commit(stream == 0 ? shm::kStreamStdout : shm::kStreamStderr, uint32_t(n));
      notify_frontend_ = true;
      if (size_t(n) < room.size()) return;  // drained; epoll tells us when there is more
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    close_pipe(j, stream);  // EOF (or a read error, which ends the stream too)
    maybe_finish(j);
    return;
  }
}

// A detached job's pipe: into its spool file, never paused (the spool is
// bounded by the job's output cap and the daemon's spool budget instead).
void Loop::on_spool_pipe(Job& j, int stream) {
  int fd = j.pipe[stream].get();
  for (int turn = 0; turn < 8; ++turn) {
    ssize_t n = ::read(fd, spool_buf_.data(), spool_buf_.size());
    if (n > 0) {
      keep(j, stream, {spool_buf_.data(), size_t(n)});
      if (size_t(n) < spool_buf_.size()) return;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    close_pipe(j, stream);
    maybe_finish(j);
    return;
  }
}

// Appends what the job printed to its spool, within its output cap and the
// daemon's spool budget. From the first byte that does not fit on, the job's
// output is dropped (no holes: what is kept is a prefix) and marked
// truncated, or with output_policy "kill" the job is stopped.
void Loop::keep(Job& j, int stream, std::string_view data) {
  shm::JobRecord& r = *j.record;
  if (j.spool_failed) return;
  uint64_t kept = r.out_bytes[0].load(std::memory_order_relaxed) +
                  r.out_bytes[1].load(std::memory_order_relaxed);
  uint64_t room = r.output_cap > kept ? r.output_cap - kept : 0;
  bool over = data.size() > room;
  bool spool_error = false;
  data = data.substr(0, room);
  const uint64_t need = sizeof(shm::RecordHeader) + data.size();
  shm::SpoolBudget budget = seg_.spool_budget();
  // Counted before the write, so the supervisor gives it back if we die there.
  if (!data.empty() && !budget.reserve(rec_, jobs_.slot(j.slot).record - 1, j.spool_end, need)) {
    data = {};
    over = true;
  }
  if (!data.empty() && !j.spool) {  // made on the first output: a silent job costs no file
    std::string name = shm::spool_file_name(r.seq);
    auto fd = sys("create the job's spool file", [&] {
      return ::openat(spool_dir_.get(), name.c_str(),
                      O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    });
    if (fd) j.spool.reset(*fd);
    if (!fd) spdlog::error("job {}: {}", jobs_.slot(j.slot).job_id, fd.error().message());
  }
  if (!data.empty()) {
    auto wrote =
        j.spool ? shm::spool_append(j.spool.get(), j.spool_end,
                                    stream == 0 ? shm::kStreamStdout : shm::kStreamStderr, data)
                : Result<uint64_t>(Error{EBADF, "no spool file"});
    crash_point("mid_spool_record");
    if (wrote) {
      j.spool_end += *wrote;
      r.out_bytes[stream].fetch_add(data.size(), std::memory_order_relaxed);
      r.spool_end.store(j.spool_end, std::memory_order_release);
      shm::SpoolBudget::commit(rec_);  // the record's bytes now
      notify_frontend_ = true;
    } else {
      budget.abort(rec_);
      spool_error = true;
      spdlog::error("job {}: {}; its further output is dropped", jobs_.slot(j.slot).job_id,
                    wrote.error().message());
      over = true;
    }
  }
  if (!over) return;
  j.spool_failed = true;
  r.truncated.store(1, std::memory_order_relaxed);
  // The kill policy is about room (the cap, the budget), not a failing disk.
  if (r.kill_on_cap && !spool_error && !j.output_killed && !j.cancelled) {
    j.output_killed = true;
    j.cancelled = true;
    stop(j, SIGTERM, j.grace_ns);
  }
}

void Loop::on_exit(Job& j) {
  // Kill what is left of the group while the leader is an unreaped zombie, so
  // its pgid cannot have been reused by an unrelated process yet.
  ::kill(-j.pid, SIGKILL);
  // Before reaping: once reaped, the pgid may be reused, and a repair after
  // our death must not kill(-pgid) a stranger.
  jobs_.slot(j.slot).pgid.store(0, std::memory_order_release);
  siginfo_t info{};
  if (::waitid(P_PID, id_t(j.pid), &info, WEXITED) == 0) {
    if (info.si_code == CLD_EXITED) {
      j.exit_code = info.si_status;
    } else {
      j.signal = info.si_status;
    }
  }
  // Where the job has a cgroup, also what left the group (after the reap: an
  // unreaped leader would be listed, and killed again, as a zombie).
  if (j.in_cgroup) {
    cgroups_.kill(j.slot);
    j.oom_killed = cgroups_.oom_killed(j.slot);  // the leader, or a process it waited for
  }
  j.exited = true;
  j.pidfd.reset();                   // closing drops it from epoll: after exec nobody else holds it
  j.deadline_ns = j.kill_at_ns = 0;  // nothing left to signal
  // The group is dead: its pipes are at EOF unless an escaped process holds
  // them. Read them now rather than in another loop turn.
  for (int stream = 0; stream < 2; ++stream) {
    // Nobody waits for a cancelled attached job's output; a detached job's is kept.
    if (j.cancelled && !j.record) close_pipe(j, stream);
    if (j.pipe[stream] && !j.paused[stream]) on_pipe(j, stream);
  }
  if (!j.active) return;  // on_pipe finished it
  if (j.pipe[0] || j.pipe[1]) j.eof_deadline_ns = monotonic_ns() + kEofGraceNs;
  maybe_finish(j);
}

void Loop::close_pipe(Job& j, int stream) {
  if (!j.pipe[stream]) return;
  j.pipe[stream].reset();  // closing drops it from epoll: after exec nobody else holds it
  j.paused[stream] = false;
}

void Loop::maybe_finish(Job& j) {
  if (!j.exited || j.pipe[0] || j.pipe[1]) return;
  JobState state = j.cancelled   ? JobState::kCancelled
                   : j.timed_out ? JobState::kTimedOut
                                 : JobState::kExited;
  std::string why(j.cancelled && shutting_down_ ? "the daemon is shutting down"
                  : j.oom_killed ? "out of memory: the kernel killed a process of the job "
                                   "at its memory_bytes limit"
                                 : "");
  if (j.output_killed && !shutting_down_) {
    const shm::JobRecord& r = *j.record;
    why = r.out_bytes[0].load() + r.out_bytes[1].load() >= r.output_cap
              ? "killed: its output exceeded " + std::to_string(r.output_cap) + " bytes"
              : std::string("killed: the spool is full (--spool-bytes), its output cannot be kept");
  }
  if (j.oom_killed) seg_.header().counters.oom_kills.fetch_add(1, std::memory_order_relaxed);
  if (j.in_cgroup) cgroups_.release(j.slot);
  j.spool.reset();
  publish(j.slot, j.word, state, j.exit_code, j.signal, why);
  j.active = false;
  --active_;
  rec_.running.store(active_, std::memory_order_relaxed);
}

// `sig` to the job's group; unless it is SIGKILL, SIGKILL follows after
// `grace_ns` if the job has not exited by then.
void Loop::stop(Job& j, int sig, uint64_t grace_ns) {
  if (j.exited) return;
  ::kill(-j.pid, sig);
  if (sig == SIGKILL) {
    if (j.in_cgroup) cgroups_.kill(j.slot);
    j.kill_at_ns = 0;
    return;
  }
  // A stop already under way keeps its earlier SIGKILL (a cancel's long
  // grace must not extend a timed-out job's).
  uint64_t kill_at = monotonic_ns() + grace_ns;
  j.kill_at_ns = j.stopping && j.kill_at_ns ? std::min(j.kill_at_ns, kill_at) : kill_at;
  j.stopping = true;
}

// What the frontend asked for the job: signals to deliver (job_signal), and
// a cancel with its signal and grace.
void Loop::take_control(Job& j) {
  if (uint64_t sigs = jobs_.take_signals(j.slot); sigs && !j.exited)
    for (int sig = 1; sig <= 64; ++sig)
      if (sigs >> (sig - 1) & 1) ::kill(-j.pid, sig);
  if (j.cancelled) return;
  auto cancel = jobs_.cancel_requested(j.slot);
  if (!cancel) return;
  j.cancelled = true;
  if (j.exited) {  // only its pipes are left: stop waiting for them
    close_pipe(j, 0);
    close_pipe(j, 1);
    maybe_finish(j);
    return;
  }
  stop(
      j, cancel->signal ? cancel->signal : SIGTERM,
      cancel->grace_ms == shm::kCancelGraceDefault ? j.grace_ns : uint64_t(cancel->grace_ms) * kMs);
}

void Loop::on_bell() {
  bell_.acknowledge();
  for (Job& j : entries_) {
    if (!j.active) continue;
    shm::JobSlot& s = jobs_.slot(j.slot);
    take_control(j);
    if (!j.active) continue;  // a cancel finished it
    for (int stream = 0; stream < 2; ++stream) {
      if (!j.paused[stream] || writer(j.slot).reserve().empty()) continue;
      j.paused[stream] = false;
      s.out_writer_waiting.store(0, std::memory_order_relaxed);
      uint32_t entry = uint32_t(&j - entries_.data());
      if (!watch(j.pipe[stream].get(), tag(stream ? kStderr : kStdout, entry, j.generation)))
        stop(j, SIGKILL);
    }
  }
}

void Loop::on_timer() {
  armed_ns_ = 0;  // the one-shot timer fired: arm_timer() must set it again
  uint64_t now = monotonic_ns();
  for (Job& j : entries_) {
    if (!j.active) continue;
    if (j.deadline_ns && now >= j.deadline_ns) {
      j.deadline_ns = 0;
      if (!j.exited && !j.stopping) {  // a cancel already under way keeps its grace
        j.timed_out = !j.cancelled;
        stop(j, SIGTERM, j.grace_ns);
      }
    }
    if (j.kill_at_ns && now >= j.kill_at_ns) {
      j.kill_at_ns = 0;
      stop(j, SIGKILL);
    }
    if (j.eof_deadline_ns && now >= j.eof_deadline_ns) {
      j.eof_deadline_ns = 0;
      // Output still waiting for a slow reader is kept (unless nobody waits
      // for it any more); anything else is held open by a process that left
      // the job's group, and is not waited for.
      for (int stream = 0; stream < 2; ++stream)
        if (!j.paused[stream] || j.cancelled) close_pipe(j, stream);
      maybe_finish(j);
    }
  }
}

void Loop::arm_timer() {
  uint64_t next = 0;
  for (const Job& j : entries_) {
    if (!j.active) continue;
    for (uint64_t t : {j.deadline_ns, j.kill_at_ns, j.eof_deadline_ns})
      if (t && (!next || t < next)) next = t;
  }
  if (next == armed_ns_) return;  // unchanged: no syscall
  armed_ns_ = next;
  itimerspec its{};
  if (next) {
    its.it_value.tv_sec = time_t(next / 1'000'000'000u);
    its.it_value.tv_nsec = long(next % 1'000'000'000u);
  }
  ::timerfd_settime(timer_.get(), TFD_TIMER_ABSTIME, &its, nullptr);
}

void Loop::begin_shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  spdlog::info("stopping: {} running jobs are killed", active_);
  set_submit_interest(false);
  for (Job& j : entries_) {
    if (!j.active) continue;
    j.cancelled = true;
    stop(j, SIGKILL);
    if (j.exited) {
      close_pipe(j, 0);
      close_pipe(j, 1);
      maybe_finish(j);
    }
  }
}

}  // namespace

int run(const Options& options) {
  auto seg = shm::Segment::open(options.shm_name);
  if (!seg) {
    spdlog::critical("{}", seg.error().message());
    return 1;
  }
  Loop loop(options, std::move(seg).value());
  if (Status s = loop.init(); !s) {
    spdlog::critical("{}", s.error().message());
    return 1;
  }
  return loop.run();
}

}  // namespace sp::worker
