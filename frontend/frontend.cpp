// The frontend's loop: wires its parts (transport, method table, job queue,
// attached jobs, detached jobs and plans, sessions) and runs them on one
// epoll set with the doorbell the workers ring and a signalfd.
#include "frontend/frontend.h"

#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cstring>
#include <optional>

#include "common/clock.h"
#include "common/log.h"
#include "common/signals.h"
#include "common/sys.h"
#include "frontend/attached_jobs.h"
#include "frontend/codec/json_codec.h"
#include "frontend/connections.h"
#include "frontend/detached_jobs.h"
#include "frontend/env.h"
#include "frontend/file_methods.h"
#include "frontend/hosts.h"
#include "frontend/job_queue.h"
#include "frontend/job_views.h"
#include "frontend/method_table.h"
#include "frontend/metrics.h"
#include "frontend/metrics_http.h"
#include "frontend/names.h"
#include "frontend/plans.h"
#include "frontend/records.h"
#include "frontend/reloads.h"
#include "frontend/services.h"
#include "frontend/session_methods.h"
#include "frontend/stdin_feeds.h"
#include "frontend/stdin_methods.h"
#include "shm/doorbell.h"
#include "shm/metrics.h"
#include "shm/role_config.h"
#include "shm/segment.h"
#include "shm/session_table.h"

extern char** environ;

namespace sp::frontend {

namespace {

// Epoll tags below Connections::kFirstConnId that are the loop's own.
enum Tag : uint64_t { kBell = 2, kSignal = 3, kMetricsListen = 4 };
static_assert(Connections::kListenTag < kBell && kMetricsListen < Connections::kFirstConnId &&
              Connections::kFirstConnId < MetricsHttp::kFirstConnTag);
constexpr uint64_t kStopFlushNs = 1'000'000'000;  // on SIGTERM: time to write last answers

UniqueFd open_dir(const char* path) {
  if (!*path) return {};
  return UniqueFd(::open(path, O_PATH | O_DIRECTORY | O_CLOEXEC));
}

UniqueFd make_epoll() {
  return UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
}

Connections::Limits connection_limits(const shm::RoleConfig& o) {
  std::span<const uint32_t> uids = shm::allow_uids(o);
  return {o.max_connections, o.max_line_bytes, o.max_inflight, {uids.begin(), uids.end()}};
}

class Frontend {
 public:
  Frontend(shm::Segment seg, const Fds& fds)
      : seg_(std::move(seg)),
        o_(shm::read_config(seg_.header())),
        config_generation_(shm::config_generation(seg_.header())),
        fds_(fds),
        epoll_(make_epoll()),
        bell_(&seg_.header().frontend_bell, fds.bell),
        spool_dir_(open_dir(o_.spool_dir)),
        sessions_(seg_),
        records_(seg_, spool_dir_ ? spool_dir_.get() : -1, uint64_t(o_.retain_s * 1000),
                 o_.job_spool_bytes),
        queue_(o_, fds, seg_, base_env(environ, shm::env_pass(o_))),
        out_(connection_limits(o_), epoll_.get(), UniqueFd(fds.listen),
             {[this](rpc::Call& call, Reply r) { methods_.dispatch(call, std::move(r)); },
              [this](uint64_t conn) { client_gone(conn); },
              [this](uint64_t conn) { client_drained(conn); }}),
        stdin_(seg_, [this](shm::JobWord w) { queue_.ring_owner(w); }),
        methods_(&out_),
        attached_(o_, seg_, queue_, out_, bell_),
        views_(records_, queue_.jobs(), o_.max_output_bytes),
        plans_(records_, queue_, views_),
        detached_(records_, queue_, plans_, views_, stdin_, attached_, out_),
        session_methods_(sessions_, out_,
                         [this](const std::string& id) { services_.session_gone(id); }),
        stdin_methods_(records_, attached_, stdin_, views_, queue_, out_),
        reloads_(seg_, out_),
        files_(o_, attached_, detached_, out_),
        services_(seg_, queue_, attached_, out_, spool_dir_ ? spool_dir_.get() : -1),
        hosts_(seg_, queue_, attached_, out_) {
    queue_.set_stdin_feeds(&stdin_);
    stdin_methods_.add_methods(methods_);
    attached_.add_methods(methods_);
    detached_.add_methods(methods_);
    session_methods_.add_methods(methods_);
    reloads_.add_methods(methods_);
    files_.add_methods(methods_);
    services_.add_methods(methods_);
    hosts_.add_methods(methods_);
    methods_.add("health", [this](Reply r) { out_.answer(r, health()); });
    methods_.add("metrics", [this](Reply r) {
      out_.answer(r, rpc::Object{{"content_type", kMetricsContentType}, {"text", metrics()}});
    });
    if (fds.metrics >= 0)
      metrics_http_.emplace(epoll_.get(), UniqueFd(fds.metrics), kMetricsListen,
                            [this] { return metrics(); });
  }

  Status init();
  int run();

 private:
  void service_all();
  void check_draining();
  void client_gone(uint64_t conn) {
    attached_.client_gone(conn);
    detached_.client_gone(conn);
    services_.client_gone(conn);
  }
  void client_drained(uint64_t conn) {
    detached_.service();  // its parked waits whose answers were held
    attached_.client_drained(conn);
    hosts_.service();
  }
  rpc::Object health() const;
  std::string metrics() const {
    return render_metrics(seg_, {out_.size(), sessions_.count(), records_.live_count(),
                                 attached_.held_bytes(), config_generation_});
  }
  void follow_config();

  shm::Segment seg_;
  // Our copy of the segment's configuration, which the parts read; taken
  // again when the supervisor publishes a new generation (a live reload).
  shm::RoleConfig o_;
  uint64_t config_generation_;
  Fds fds_;
  UniqueFd epoll_, signal_fd_;
  shm::Doorbell bell_;
  UniqueFd spool_dir_;
  shm::SessionTable sessions_;
  JobRecords records_;
  JobQueue queue_;
  Connections out_;
  StdinFeeds stdin_;
  MethodTable methods_;
  AttachedJobs attached_;
  JobViews views_;
  Plans plans_;
  DetachedJobs detached_;
  SessionMethods session_methods_;
  StdinMethods stdin_methods_;
  Reloads reloads_;
  FileMethods files_;
  Services services_;
  Hosts hosts_;
  std::optional<MetricsHttp> metrics_http_;  // --metrics-listen
  bool stopping_ = false;
};

// A live reload published a new configuration: take it. What the parts
// copied at start is set again; the rest they read from o_. (What cannot
// change live, the supervisor refuses: the spool directory, --env-pass.)
void Frontend::follow_config() {
  const uint64_t generation = shm::config_generation(seg_.header());
  if (generation == config_generation_) return;
  config_generation_ = generation;
  o_ = shm::read_config(seg_.header());
  out_.set_limits(connection_limits(o_));
  records_.set_retention(uint64_t(o_.retain_s * 1000), o_.job_spool_bytes);
  views_.set_max_output(o_.max_output_bytes);
  hosts_.apply_config(o_);
  spdlog::set_level(spdlog::level::level_enum(o_.log_level));
  spdlog::info("configuration generation {} in use", generation);
}

Status Frontend::init() {
  if (!epoll_) return Error{errno, "epoll_create1"};
  sessions_.recover();
  if (o_.spool_dir[0] && !spool_dir_)
    return Error{errno, "open spool directory " + std::string(o_.spool_dir)};
  // Detached jobs and plans the last frontend accepted are ours now.
  records_.recover();
  stdin_.recover();
  plans_.recover();
  detached_.recover();
  services_.recover();
  hosts_.recover();
  hosts_.apply_config(o_);
  // accept4 must not block our loop (SOCK_NONBLOCK only applies to the new socket).
  if (auto r =
          sys("fcntl O_NONBLOCK", [&] { return ::fcntl(out_.listen_fd(), F_SETFL, O_NONBLOCK); });
      !r)
    return r.error();
  ::signal(SIGPIPE, SIG_IGN);  // we never spawn: ignoring is inherited by no one
  auto sfd = open_signalfd({SIGTERM, SIGINT, SIGHUP});
  if (!sfd) return sfd.error();
  signal_fd_ = std::move(*sfd);
  if (Status s = out_.start(); !s) return s;
  if (metrics_http_)
    if (Status s = metrics_http_->start(); !s) return s;
  for (auto [fd, t] : {std::pair{fds_.bell, kBell}, {signal_fd_.get(), kSignal}}) {
    epoll_event ev{EPOLLIN, {.u64 = t}};
    if (auto r =
            sys("epoll_ctl", [&] { return ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev); });
        !r)
      return r.error();
  }
  return {};
}

void Frontend::service_all() {
  stdin_.service();
  detached_.service();
  attached_.service_all();
  hosts_.service();
  services_.service();
  reloads_.service();
}

void Frontend::check_draining() {
  if (out_.listen_fd() < 0 || !seg_.header().draining.load()) return;
  out_.stop_listening();
  spdlog::info("draining: not accepting connections; stopping services");
  services_.drain();
}

int Frontend::run() {
  shm::Header& h = seg_.header();
  // A beat first: from ready on the supervisor wants one within --hang-timeout
  // of the last, and a slow start (ASan, a loaded machine) must not count.
  h.frontend_heartbeat_ns.store(monotonic_ns(), std::memory_order_relaxed);
  h.frontend_ready.store(h.frontend_incarnation.load());  // we serve (restart policy)
  spdlog::info("ready (incarnation {})", h.frontend_ready.load());
  check_draining();
  epoll_event events[128];
  uint64_t stop_deadline = 0;
  const uint64_t tick_ns = uint64_t(seg_.caps().tick_ms) * 1'000'000;
  uint64_t next_tick_ns = monotonic_ns() + tick_ns;
  for (;;) {
    follow_config();  // one atomic load: a new generation is taken before any request
    // Bounded: see n == 0.
    int timeout = attached_.next_wait_ms(
        detached_.next_wait_ms(services_.next_wait_ms(int(seg_.caps().tick_ms))));
    if (stopping_) {
      if (!out_.any_unsent() || monotonic_ns() >= stop_deadline) break;
      timeout = 10;
    }
    seg_.header().frontend_heartbeat_ns.store(monotonic_ns(), std::memory_order_relaxed);
    int n = ::epoll_wait(epoll_.get(), events, 128, timeout);
    if (n < 0 && errno != EINTR) {
      spdlog::critical("epoll_wait: {}", std::strerror(errno));
      return 1;
    }
    // The tick: re-check what a doorbell would have said (a lost wake-up, or
    // a job held for the output budget whose turn came without one). By time,
    // not only when idle: a busy connection must not starve it.
    if (uint64_t now = monotonic_ns(); n == 0 || now >= next_tick_ns) {
      next_tick_ns = now + tick_ns;
      check_draining();
      service_all();
      detached_.expire();
      if (metrics_http_) metrics_http_->expire(now);
    }
    for (int i = 0; i < n; ++i) {
      uint64_t t = events[i].data.u64;
      if (t == Connections::kListenTag) {
        out_.accept_all();
      } else if (t == kMetricsListen) {
        metrics_http_->accept_all();
      } else if (metrics_http_ && metrics_http_->owns(t)) {
        metrics_http_->on_event(t, events[i].events);
      } else if (t == kBell) {
        bell_.acknowledge();
        check_draining();
        service_all();
      } else if (t == kSignal) {
        drain_signalfd(signal_fd_.get());
        if (!stopping_) {
          // The supervisor stops us last: deliver what the workers finished.
          stopping_ = true;
          out_.stop_reading();
          queue_.stop_accepting();
          stop_deadline = monotonic_ns() + kStopFlushNs;
          service_all();
        }
      } else {
        out_.on_event(t, events[i].events);
      }
    }
    out_.flush_dirty();
    // Jobs held for the budget may go on once answers were written; what
    // they answer is written now too (EPOLLOUT is armed only for a full socket).
    if (attached_.want_service()) {
      attached_.service_all();
      out_.flush_dirty();
    }
    queue_.wake_ring_waiters();  // after the slots this turn freed
  }
  spdlog::info("stopped");
  return 0;
}

// Pool state and counters: what an operator or a load balancer asks.
rpc::Object Frontend::health() const {
  const shm::Header& h = seg_.header();
  const shm::Capacities& caps = seg_.caps();
  const shm::JobTable& jobs = queue_.jobs();
  uint64_t now = monotonic_ns();
  rpc::Array workers;
  uint64_t max_concurrent = 0;
  auto describe = [&](uint32_t i, const char* state) {
    const shm::WorkerSlot& w = seg_.worker(i);
    uint64_t beat = w.heartbeat_ns.load();
    return rpc::Object{{"index", i},
                       {"state", state},
                       {"pid", w.pid.load()},
                       {"running", w.running.load()},
                       {"incarnation", w.incarnation.load()},
                       {"ready", w.ready.load() == w.incarnation.load()},
                       {"last_death", death_kind_name(w.last_death.load())},
                       {"heartbeat_age_ms", beat && now > beat ? (now - beat) / 1'000'000 : 0}};
  };
  for (uint32_t i = 0; i < shm::kWorkerSlots; ++i) {
    const shm::WorkerUse use = seg_.worker(i).use.load();
    if (use == shm::WorkerUse::kUnused || use == shm::WorkerUse::kRemote) continue;
    if (use == shm::WorkerUse::kServing) max_concurrent += seg_.worker(i).jobs_at_once.load();
    workers.push_back(describe(i, use == shm::WorkerUse::kServing ? "serving" : "retiring"));
  }
  rpc::Object remote = describe(shm::kRemoteWorker, "serving");
  remote["max_concurrent"] = seg_.worker(shm::kRemoteWorker).jobs_at_once.load();
  remote["hosts"] = hosts_.count();
  remote["host_capacity"] = caps.host_slots;
  const JobCounts job_counts = count_jobs(jobs);
  const shm::Counters& c = h.counters;
  rpc::Object counters{{"submitted", c.submitted.load()},
                       {"started", c.started.load()},
                       {"finished", c.finished.load()},
                       {"failed", c.failed.load()},
                       {"timed_out", c.timed_out.load()},
                       {"cancelled", c.cancelled.load()},
                       {"lost", c.lost.load()},
                       {"requeued", c.requeued.load()},
                       {"worker_restarts", shm::deaths_of(c, shm::RoleKind::kWorker)},
                       {"frontend_restarts", shm::deaths_of(c, shm::RoleKind::kFrontend)},
                       {"boot_failures", c.boot_failures.load()},
                       {"hang_kills", shm::deaths_by(c, shm::DeathCause::kHang)},
                       {"deaths_by_signal", shm::deaths_by(c, shm::DeathCause::kCrash)},
                       {"deaths_by_exit", shm::deaths_by(c, shm::DeathCause::kExit)},
                       {"deaths_by_oom", shm::deaths_by(c, shm::DeathCause::kOom)},
                       {"recycles", c.recycles.load()},
                       {"oom_kills", c.oom_kills.load()}};
  return rpc::Object{
      {"status", h.draining.load() ? "draining" : "ok"},
      {"uptime_ms", unix_ms() - h.started_unix_ms.load()},
      {"workers", std::move(workers)},
      {"remote_worker", std::move(remote)},
      {"frontend", rpc::Object{{"incarnation", h.frontend_incarnation.load()},
                               {"last_death", death_kind_name(h.frontend_last_death.load())}}},
      {"jobs", rpc::Object{{"queued", job_counts.queued},
                           {"running", job_counts.running},
                           {"queue_capacity", caps.job_slots},
                           {"max_concurrent", max_concurrent}}},
      {"connections", out_.size()},
      {"metrics_listen", metrics_http_ ? rpc::Value(metrics_http_->address()) : rpc::Value()},
      {"output_buffered_bytes", attached_.held_bytes()},
      {"output_budget", o_.output_budget},
      {"output_budget_holds", attached_.budget_holds()},
      {"sessions", sessions_.count()},
      {"services", rpc::Object{{"count", services_.count()}, {"capacity", caps.service_slots}}},
      {"detached", rpc::Object{{"jobs", records_.live_count()},
                               {"unfinished", detached_.unfinished()},
                               {"capacity", records_.size()},
                               {"spool_used_bytes", seg_.spool_budget().used()},
                               {"spool_bytes", caps.spool_bytes}}},
      {"config", reloads_.describe(config_generation_)},
      {"isolation", isolation_name(o_.isolation)},
      {"isolation_note", o_.isolation_note},  // which jobs get cgroups, or why none do
      {"counters", std::move(counters)}};
}

}  // namespace

int run(const std::string& shm_name, const Fds& fds) {
  // Every chunk of a stream is built in buffers of a ring's size and freed:
  // with glibc's start values (128 KiB) the heap's top was given back and
  // faulted in again for each chunk (two brk calls and dozens of page faults
  // per chunk). Up to kHeapSlack stays; larger blocks (a 16 MiB answer) are
  // mapped and go back when freed.
  constexpr int kHeapSlack = 8 << 20;
  ::mallopt(M_MMAP_THRESHOLD, kHeapSlack / 2);
  ::mallopt(M_TRIM_THRESHOLD, kHeapSlack);
  auto seg = shm::Segment::open(shm_name);
  if (!seg) {
    spdlog::critical("{}", seg.error().message());
    return 1;
  }
  Frontend f(std::move(seg).value(), fds);
  if (Status s = f.init(); !s) {
    spdlog::critical("{}", s.error().message());
    return 1;
  }
  return f.run();
}

}  // namespace sp::frontend
