#include "remote/loop.h"

#include <fcntl.h>
#include <libssh2.h>
#include <signal.h>

#include <algorithm>

#include "common/clock.h"
#include "common/log.h"
#include "common/signals.h"
#include "common/sys.h"
#include "remote/remote.h"
#include "shm/metrics.h"
#include "shm/repair.h"
#include "shm/role_config.h"

namespace sp::remote {

namespace {
constexpr uint64_t kMs = 1'000'000;
// How long a stop waits for the kills of remote groups: below the
// supervisor's 5 s before it kills its children.
constexpr uint64_t kStopBudgetNs = 4000 * kMs;
}  // namespace

RemoteLoop::RemoteLoop(const worker::Options& o, shm::Segment seg)
    : o_(o),
      seg_(std::move(seg)),
      ring_(seg_.remote_ring()),
      rec_(seg_.worker(o.index)),
      hosts_(seg_),
      bell_(&rec_.bell, o.bell_fd),
      frontend_(&seg_.header().frontend_bell, o.frontend_fd),
      owner_(shm::owner_stamp(o.index)),
      incarnation_(uint16_t(rec_.incarnation.load())),
      env_{.seg = seg_,
           .jobs = seg_.jobs(),
           .rec = rec_,
           .default_grace_ms = shm::read_config(seg_.header()).kill_grace_ms,
           .scratch = scratch_},
      max_jobs_(std::max<uint32_t>(rec_.jobs_at_once.load(), 1)) {}

RemoteLoop::~RemoteLoop() {
  pools_.clear();  // sessions before libssh2_exit
  libssh2_exit();
}

Status RemoteLoop::init() {
  for (int fd : {o_.submit_fd, o_.bell_fd, o_.frontend_fd})
    if (fd >= 0)
      if (auto r = sys("fcntl FD_CLOEXEC", [&] { return ::fcntl(fd, F_SETFD, FD_CLOEXEC); }); !r)
        return r.error();
  if (libssh2_init(0) != 0) return Error{0, "libssh2_init failed"};
  if (Status s = poller_.open(); !s) return s;
  ::signal(SIGPIPE, SIG_IGN);
  auto sfd = open_signalfd({SIGTERM, SIGINT, SIGHUP});
  if (!sfd) return sfd.error();
  signal_fd_ = std::move(*sfd);
  const shm::RoleConfig config = shm::read_config(seg_.header());
  if (const char* spool_dir = config.spool_dir; *spool_dir) {
    auto dir = new_fd("open the spool directory",
                      [&] { return ::open(spool_dir, O_PATH | O_DIRECTORY | O_CLOEXEC); });
    if (!dir) return Error{dir.error().code, dir.error().context + " " + spool_dir};
    spool_dir_ = std::move(*dir);
    env_.spool_dir = spool_dir_.get();
  }
  keys_ = std::make_unique<HostKeys>(config.known_hosts, config.user_known_hosts);
  if (Status s = resolver_.start(); !s) return s;
  env_.resolver = &resolver_;
  if (Status s = poller_.watch(resolver_.fd(), {worker::Kind::kResolver}); !s) return s;
  for (auto [fd, k] :
       {std::pair{o_.bell_fd, worker::Kind::kBell}, {signal_fd_.get(), worker::Kind::kSignal}})
    if (Status s = poller_.watch(fd, {k}); !s) return s;
  return {};
}

bool RemoteLoop::killing() const {
  return std::any_of(pools_.begin(), pools_.end(),
                     [](const auto& p) { return p.second->killing(); });
}

uint32_t RemoteLoop::active() const {
  uint32_t n = 0;
  for (const auto& [id, pool] : pools_) n += pool->jobs();
  return n;
}

void RemoteLoop::end_unstarted(uint32_t slot, shm::JobState state, const Failure& f) {
  shm::publish_terminal(seg_, slot, env_.jobs.load(slot), state, -1, 0, f.message, uint8_t(f.code),
                        uint8_t(f.phase));
  env_.notify_frontend = true;
}

void RemoteLoop::start(uint32_t slot) {
  shm::JobSlot& s = env_.jobs.slot(slot);
  if (uint64_t queued = s.queued_ns.load(std::memory_order_relaxed), now = monotonic_ns();
      queued && queued <= now)
    shm::observe(seg_.header().metrics.queue_wait, shm::kQueueWaitBounds, now - queued);
  if (env_.jobs.cancel_requested(slot))
    return end_unstarted(slot, shm::JobState::kCancelled,
                         {RemoteError::kNone, RemotePhase::kNone, "cancelled before it started"});
  if (Status st = shm::decode_spec(seg_.spec(slot), s.spec_words, spec_); !st)
    return end_unstarted(slot, shm::JobState::kFailed,
                         {RemoteError::kNone, RemotePhase::kNone, st.error().message()});
  const uint32_t host = spec_.host_slot - 1;
  if (!spec_.host_slot || !hosts_.live(host, spec_.host_generation))
    return end_unstarted(slot, shm::JobState::kFailed,
                         {RemoteError::kHostRemoved, RemotePhase::kNone,
                          "the host was removed before the job started"});
  if (s.record && (!s.record.within(seg_.caps().job_records) || env_.spool_dir < 0))
    return end_unstarted(slot, shm::JobState::kFailed,
                         {RemoteError::kNone, RemotePhase::kNone, "detached job without a spool"});
  // The slot read may be a new host's already, if this one was removed since.
  shm::HostConfig cfg = hosts_.read(host);
  if (cfg.generation != spec_.host_generation)
    return end_unstarted(slot, shm::JobState::kFailed,
                         {RemoteError::kHostRemoved, RemotePhase::kNone,
                          "the host was removed before the job started"});
  HostPool* pool = nullptr;
  for (auto& [id, p] : pools_)
    if (p->slot() == host && p->generation() == spec_.host_generation && !p->removing())
      pool = p.get();
  if (!pool) {
    const uint32_t id = next_pool_id_++ & 0xffffff;  // a Tag's entry: 24 bits
    pool = pools_
               .emplace(id,
                        std::make_unique<HostPool>(env_, *keys_, poller_, id, host, std::move(cfg)))
               .first->second.get();
  }
  if (spec_.host_check)
    pool->add_check(slot);
  else
    pool->add(std::make_unique<RemoteJob>(env_, slot, spec_));
}

void RemoteLoop::claim_more() {
  while (!env_.shutting_down && active() < max_jobs_) {
    auto slot = ring_.claim(env_.jobs, owner_, incarnation_);
    if (!slot) break;
    start(*slot);
  }
}

// A removed host's pool ends its jobs, then goes with its connections; an
// unused pool goes too.
void RemoteLoop::forget_removed_hosts() {
  for (auto it = pools_.begin(); it != pools_.end();) {
    HostPool& pool = *it->second;
    if (!pool.removing() && !hosts_.live(pool.slot(), pool.generation())) {
      spdlog::info("host in slot {} was removed: its jobs end", pool.slot());
      pool.remove_host();
    }
    // A live host's pool stays (bounded by --hosts): its figures go on.
    if (pool.removing() && pool.drained())
      it = pools_.erase(it);
    else
      ++it;
  }
}

void RemoteLoop::on_bell() {
  bell_.acknowledge();
  for (auto& [id, pool] : pools_) pool->on_bell();
}

void RemoteLoop::on_resolved() {
  const uint64_t now = monotonic_ns();
  for (const Resolver::Answer& a : resolver_.take())
    if (auto it = pools_.find(uint32_t(a.token >> 32)); it != pools_.end())
      it->second->on_resolved(uint32_t(a.token), a, now);
}

void RemoteLoop::begin_shutdown() {
  if (env_.shutting_down) return;
  env_.shutting_down = true;
  spdlog::info("stopping: {} remote jobs are killed", active());
  for (auto& [id, pool] : pools_) pool->shutdown();
}

// A live reload may change the log level; the rest of the configuration
// (the known_hosts files) is read at start.
void RemoteLoop::follow_log_level() {
  const uint64_t generation = shm::config_generation(seg_.header());
  if (generation == config_generation_) return;
  config_generation_ = generation;
  spdlog::set_level(spdlog::level::level_enum(shm::read_config(seg_.header()).log_level));
}

int RemoteLoop::wait_ms(uint64_t now) const {
  uint64_t next = now + uint64_t(seg_.caps().tick_ms) * kMs;
  for (const auto& [id, pool] : pools_)
    if (uint64_t t = pool->next_deadline(); t && t < next) next = t;
  return next <= now ? 0 : int((next - now + kMs - 1) / kMs);
}

int RemoteLoop::run() {
  rec_.heartbeat_ns.store(monotonic_ns(), std::memory_order_relaxed);
  rec_.ready.store(rec_.incarnation.load());
  spdlog::info("ready, up to {} remote jobs at once", max_jobs_);
  epoll_event events[64];
  uint64_t stop_by = 0;
  for (;;) {
    claim_more();
    uint64_t now = monotonic_ns();
    for (auto& [id, pool] : pools_) pool->on_timer(now);
    for (auto& [id, pool] : pools_) pool->turn(now);
    forget_removed_hosts();
    rec_.running.store(active(), std::memory_order_relaxed);
    if (env_.notify_frontend) {
      env_.notify_frontend = false;
      frontend_.ring();
    }
    // Kills of remote groups need their channels: a stop waits for them, a while.
    if (env_.shutting_down && ((active() == 0 && !killing()) || (stop_by && now >= stop_by))) break;
    rec_.heartbeat_ns.store(now, std::memory_order_relaxed);
    follow_log_level();
    auto n = poller_.wait(events, wait_ms(now));
    if (!n) {
      spdlog::critical("{}", n.error().message());
      return 1;
    }
    if (*n == 0) on_bell();
    for (int i = 0; i < *n; ++i) {
      worker::Tag t = worker::Tag::unpack(events[i].data.u64);
      if (t.kind == worker::Kind::kBell) {
        on_bell();
      } else if (t.kind == worker::Kind::kSignal) {
        drain_signalfd(signal_fd_.get());
        begin_shutdown();
        stop_by = monotonic_ns() + kStopBudgetNs;
      } else if (t.kind == worker::Kind::kResolver) {
        on_resolved();
      } else if (t.kind == worker::Kind::kSocket) {
        if (auto it = pools_.find(t.entry); it != pools_.end())
          it->second->on_socket(t.generation, events[i].events, monotonic_ns());
      }
    }
  }
  spdlog::info("stopped");
  return 0;
}

int run(const worker::Options& options) {
  auto seg = shm::Segment::open(options.shm_name);
  if (!seg) {
    spdlog::critical("{}", seg.error().message());
    return 1;
  }
  RemoteLoop loop(options, std::move(seg).value());
  if (Status s = loop.init(); !s) {
    spdlog::critical("{}", s.error().message());
    return 1;
  }
  return loop.run();
}

}  // namespace sp::remote
