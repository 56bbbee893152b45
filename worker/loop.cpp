#include "worker/loop.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/timerfd.h>

#include <algorithm>
#include <utility>

#include "common/clock.h"
#include "common/crash_point.h"
#include "common/log.h"
#include "common/roles.h"
#include "common/signals.h"
#include "common/sys.h"
#include "shm/role_config.h"

namespace sp::worker {

Loop::Loop(const Options& o, shm::Segment seg)
    : o_(o),
      seg_(std::move(seg)),
      ring_(seg_.ring()),
      rec_(seg_.worker(o.index)),
      submit_(&seg_.header().submit_bell, o.submit_fd),
      bell_(&rec_.bell, o.bell_fd),
      frontend_(&seg_.header().frontend_bell, o.frontend_fd),
      owner_(shm::owner_stamp(o.index)),
      incarnation_(uint16_t(rec_.incarnation.load())),
      cgroups_(isolation::Cgroups::decode(o.cgroups)),
      env_{.seg = seg_,
           .jobs = seg_.jobs(),
           .rec = rec_,
           .cgroups = cgroups_,
           .poller = poller_,
           .default_grace_ms = shm::read_config(seg_.header()).kill_grace_ms,
           .spool_scratch = spool_scratch_,
           .redact_scratch = redact_scratch_},
      entries_(std::max<uint32_t>(rec_.jobs_at_once.load(), 1)) {}

Status Loop::init() {
  // Inherited at fixed numbers by dup2, which clears FD_CLOEXEC: set it again,
  // or every command would inherit (and could drain) our doorbells.
  for (int fd : {o_.submit_fd, o_.bell_fd, o_.frontend_fd})
    if (auto r = sys("fcntl FD_CLOEXEC", [&] { return ::fcntl(fd, F_SETFD, FD_CLOEXEC); }); !r)
      return r.error();
  if (Status s = poller_.open(); !s) return s;
  // A command that stops reading its stdin must give us EPIPE, not kill us;
  // commands get every disposition back to the default (spawn.cpp).
  ::signal(SIGPIPE, SIG_IGN);
  env_.dispositions = SignalDispositions::current();  // ours are set: none changes later
  auto sfd = open_signalfd({SIGTERM, SIGINT, SIGHUP});
  if (!sfd) return sfd.error();
  signal_fd_ = std::move(*sfd);
  auto tfd = new_fd("timerfd_create",
                    [] { return ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK); });
  if (!tfd) return tfd.error();
  timer_ = std::move(*tfd);
  auto dn = new_fd("open /dev/null", [] { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); });
  if (!dn) return dn.error();
  devnull_ = std::move(*dn);
  env_.devnull = devnull_.get();
  const shm::RoleConfig config = shm::read_config(seg_.header());
  if (const char* spool_dir = config.spool_dir; *spool_dir) {
    auto dir = new_fd("open the spool directory",
                      [&] { return ::open(spool_dir, O_PATH | O_DIRECTORY | O_CLOEXEC); });
    if (!dir) return Error{dir.error().code, dir.error().context + " " + spool_dir};
    spool_dir_ = std::move(*dir);
    env_.spool_dir = spool_dir_.get();
  }
  for (auto [fd, k] : {std::pair{o_.bell_fd, Kind::kBell},
                       {signal_fd_.get(), Kind::kSignal},
                       {timer_.get(), Kind::kTimer}})
    if (Status s = poller_.watch(fd, {k}); !s) return s;
  set_submit_interest(true);
  return {};
}

int Loop::run() {
  crash_point("worker_start");
  // A beat first: from ready on the supervisor wants one within --hang-timeout
  // of the last, and a slow start (ASan, a loaded machine) must not count.
  rec_.heartbeat_ns.store(monotonic_ns(), std::memory_order_relaxed);
  rec_.ready.store(rec_.incarnation.load());  // tells the supervisor we serve (restart policy)
  spdlog::info("ready, up to {} jobs at once", entries_.size());
  epoll_event events[64];
  for (;;) {
    // Between batches (and first of all: jobs may have been queued before we
    // started): claim new jobs, arm the timer for them, wake the frontend.
    // An entry freed in a batch may still have events in it, which the
    // generation check then drops.
    claim_more();
    arm_timer();
    if (env_.notify_frontend) {
      env_.notify_frontend = false;
      frontend_.ring();
    }
    if (env_.shutting_down && active_ == 0) break;
    if (recycling() && active_ == 0) {
      spdlog::info("{} after {} jobs",
                   rec_.use.load() == shm::WorkerUse::kRetiring ? "retired" : "recycled", claimed_);
      return roles::kExitRecycled;
    }
    rec_.heartbeat_ns.store(monotonic_ns(), std::memory_order_relaxed);
    follow_log_level();
    auto n = poller_.wait(events, int(seg_.caps().tick_ms));
    if (!n) {
      spdlog::critical("{}", n.error().message());
      return 1;
    }
    // Bounded wait: an idle tick re-checks what a doorbell would have said,
    // so a lost wake-up delays work by one tick (≤ 1 s), never forever; it is
    // also the heartbeat the supervisor watches.
    if (*n == 0) on_bell();
    for (int i = 0; i < *n; ++i) dispatch(Tag::unpack(events[i].data.u64), events[i].events);
  }
  spdlog::info("stopped");
  return 0;
}

// A live reload may change the log level; the rest of the configuration a
// worker reads only at start (a new generation of workers reads the new one).
void Loop::follow_log_level() {
  const uint64_t generation = shm::config_generation(seg_.header());
  if (generation == config_generation_) return;
  config_generation_ = generation;
  spdlog::set_level(spdlog::level::level_enum(shm::read_config(seg_.header()).log_level));
}

void Loop::dispatch(Tag t, uint32_t events) {
  switch (t.kind) {
    case Kind::kSubmit:
      submit_.acknowledge();
      return;  // claim_more() runs after the batch
    case Kind::kBell:
      on_bell();
      return;
    case Kind::kSignal: {
      drain_signalfd(signal_fd_.get());
      begin_shutdown();
      return;
    }
    case Kind::kTimer: {
      uint64_t expirations;
      sys_raw([&] { return ::read(timer_.get(), &expirations, sizeof expirations); });
      on_timer();
      return;
    }
    case Kind::kPidfd:
    case Kind::kStdout:
    case Kind::kStderr:
    case Kind::kStdin:
      break;
    case Kind::kSocket:  // the remote worker's
    case Kind::kResolver:
      return;
  }
  if (t.entry >= entries_.size()) return;
  Entry& e = entries_[t.entry];
  if (!e.job || e.generation != t.generation) return;  // stale event for a finished job
  if (t.kind == Kind::kPidfd)
    e.job->on_exit();
  else if (t.kind == Kind::kStdin)
    e.job->on_stdin_writable();
  else
    e.job->on_pipe(t.kind == Kind::kStdout ? kStdout : kStderr, events & EPOLLHUP);
  drop_if_done(e);
}

void Loop::set_submit_interest(bool want) {
  if (want == want_submit_) return;
  want_submit_ = want;
  if (want) {
    // EPOLLEXCLUSIVE: one submission wakes one idle worker, not all of them.
    if (Status s = poller_.watch(o_.submit_fd, {Kind::kSubmit}, EPOLLIN | EPOLLEXCLUSIVE); !s)
      spdlog::error("{}", s.error().message());
  } else {
    poller_.unwatch(o_.submit_fd);
  }
}

// Taking no new jobs, to exit once the running ones have ended: after
// --recycle-after jobs, or retired by a live reload that replaced us.
bool Loop::recycling() const {
  return (o_.recycle_after && claimed_ >= o_.recycle_after) ||
         rec_.use.load(std::memory_order_relaxed) == shm::WorkerUse::kRetiring;
}

void Loop::claim_more() {
  const bool stopping = env_.shutting_down;
  while (!stopping && !recycling() && active_ < entries_.size()) {
    auto slot = ring_.claim(env_.jobs, owner_, incarnation_);
    if (!slot) break;
    crash_point("after_claim");
    ++claimed_;
    start(*slot);
  }
  bool full = active_ >= entries_.size() || recycling();
  // Not taking work with work left: pass the wake-up on to another worker.
  if (full && !stopping && ring_.depth() > 0) submit_.force();
  set_submit_interest(!full && !stopping);
}

void Loop::start(uint32_t slot) {
  uint32_t entry = 0;
  while (entries_[entry].job) ++entry;  // claim_more() keeps one free
  Entry& e = entries_[entry];
  std::optional<Job> job = Job::start(env_, slot, entry, e.generation + 1);
  if (!job) return;  // it ended before it ran
  ++e.generation;
  e.job = std::move(job);
  ++active_;
  rec_.running.store(active_, std::memory_order_relaxed);
}

void Loop::drop_if_done(Entry& e) {
  if (!e.job || !e.job->done()) return;
  e.job.reset();
  --active_;
  rec_.running.store(active_, std::memory_order_relaxed);
}

void Loop::on_bell() {
  bell_.acknowledge();
  for (Entry& e : entries_) {
    if (!e.job) continue;
    e.job->on_bell();
    drop_if_done(e);
  }
}

void Loop::on_timer() {
  armed_ns_ = 0;  // the one-shot timer fired: arm_timer() must set it again
  uint64_t now = monotonic_ns();
  for (Entry& e : entries_) {
    if (!e.job) continue;
    e.job->on_timer(now);
    drop_if_done(e);
  }
}

void Loop::arm_timer() {
  uint64_t next = 0;
  for (const Entry& e : entries_)
    if (uint64_t t = e.job ? e.job->next_deadline() : 0; t && (!next || t < next)) next = t;
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
  if (env_.shutting_down) return;
  env_.shutting_down = true;
  spdlog::info("stopping: {} running jobs are killed", active_);
  set_submit_interest(false);
  for (Entry& e : entries_) {
    if (!e.job) continue;
    e.job->shutdown();
    drop_if_done(e);
  }
}

}  // namespace sp::worker
