// The supervisor: owns the listening socket, the shm segment and the
// doorbell eventfds; fork+execs the frontend and the workers; reaps, repairs
// and restarts them; drains and stops the daemon on SIGTERM/SIGINT.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/clock.h"
#include "common/log.h"
#include "common/roles.h"
#include "common/signals.h"
#include "common/sys.h"
#include "isolation/cgroups.h"
#include "shm/doorbell.h"
#include "shm/metrics.h"
#include "shm/repair.h"
#include "shm/role_config.h"
#include "shm/segment.h"
#include "supervisor/config.h"
#include "supervisor/config_check.h"
#include "supervisor/flags.h"
#include "supervisor/listener.h"
#include "supervisor/log_limiter.h"
#include "supervisor/restart_policy.h"
#include "supervisor/role_process.h"
#include "supervisor/systemd.h"

namespace sp::supervisor {

namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kStopKillAfterNs = 5000 * kMs;   // children still alive then get SIGKILL
constexpr uint64_t kStartTimeoutNs = 10'000 * kMs;  // a role not ready by then is hung

struct Role {
  Role(std::string n, shm::RoleKind k, const Config& c)
      : name(std::move(n)), kind(k), restarts(c.max_restarts, uint64_t(c.restart_window_s * 1e9)) {}
  // Its words in the segment (the frontend's in the Header, a worker's in its WorkerSlot).
  void bind(std::atomic<uint32_t>& incarnation_word, std::atomic<uint32_t>& ready_word,
            std::atomic<shm::DeathKind>& last_death_word) {
    incarnation = &incarnation_word;
    ready = &ready_word;
    last_death = &last_death_word;
  }
  // The incarnation started last finished its start: it serves.
  bool reported_ready() const { return ready->load() == incarnation->load(); }
  // A worker slot's use (the frontend is always serving).
  shm::WorkerUse slot_use() const { return use ? use->load() : shm::WorkerUse::kServing; }

  std::string name;  // "frontend", "worker 0"
  shm::RoleKind kind;
  std::atomic<uint32_t>* incarnation = nullptr;
  std::atomic<uint32_t>* ready = nullptr;
  std::atomic<shm::DeathKind>* last_death = nullptr;
  std::atomic<shm::WorkerUse>* use = nullptr;  // a worker's slot use
  RoleProcess process;
  uint64_t started_ns = 0;
  uint64_t restart_at_ns = 0;  // 0: no restart pending
  bool hang_killed = false;    // we killed it for a stale heartbeat
  bool oom_killed = false;     // its last death was the kernel's OOM killer
  std::string cgroup;          // its memory cgroup's name (Cgroups::prepare_role)
  uint64_t oom_base = 0;       // OOM kills in that cgroup when it was started
  RestartPolicy restarts;
  // Its deaths are logged 5 times per 10 s at most (a kill storm); the rest
  // at debug level, counted in the next one logged.
  LogLimiter death_log{5, 10'000'000'000};
  bool quiet = false;  // this death is past the bound
};

// Whether `name` is "<prefix><digits><suffix>".
bool numbered(std::string_view name, std::string_view prefix, std::string_view suffix) {
  if (name.size() <= prefix.size() + suffix.size() || name.substr(0, prefix.size()) != prefix ||
      name.substr(name.size() - suffix.size()) != suffix)
    return false;
  name = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  return name.find_first_not_of("0123456789") == std::string_view::npos;
}

// Removes the job files ("job-<digits>") and service logs
// ("service-<digits>.log") a daemon left in its spool directory, and
// nothing else.
uint32_t clear_spool(const std::string& dir) {
  uint32_t n = 0;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  while (dirent* e = ::readdir(d)) {
    std::string_view name(e->d_name);
    bool ours = numbered(name, "job-", "") || numbered(name, "service-", ".log");
    if (ours && ::unlinkat(::dirfd(d), e->d_name, 0) == 0) ++n;
  }
  ::closedir(d);
  return n;
}

std::string describe_status(int status) {
  if (WIFSIGNALED(status)) return "killed by signal " + signal_name(WTERMSIG(status)).substr(3);
  return "exited with status " + std::to_string(WEXITSTATUS(status));
}

class Supervisor {
 public:
  explicit Supervisor(const Config& c)
      : cfg_(c), frontend_("frontend", shm::RoleKind::kFrontend, c) {}
  int run();

 private:
  Status setup();
  Status make_roles();
  void start_frontend();
  void start_worker(uint32_t i);
  void start(Role& role, std::vector<std::string> args, std::vector<int> fds);
  void reap();
  void on_death(Role& role, int status, bool is_frontend, uint32_t index);
  void check_hangs(uint64_t now);
  void count_death(const Role& role, int status) const;
  bool killed_by_oom(const Role& role, int status) const;
  std::string death_cause(const Role& role, int status) const;
  void schedule_restart(Role& role, shm::DeathKind kind);
  shm::DeathKind death_kind(const Role& role, int status) const;
  void begin_drain();
  void begin_stop();
  void step_running(uint64_t now);
  void step_draining(uint64_t now);
  bool step_stopping(uint64_t now);  // false: every child is gone
  void sweep_adopted();
  void kill_job_cgroups(uint32_t index);
  void ring_all() const;
  bool children_alive() const;
  std::vector<std::string> common_args() const;
  Status make_spool();
  Status write_role_config();
  void cleanup();
  bool take_systemd_socket();
  bool all_ready() const;
  std::string status_line() const;
  void notify(uint64_t now);
  void retire(uint32_t index);
  std::string resize_workers(uint32_t count);
  uint32_t serving_workers() const;
  void reload();
  Result<std::string> apply_reload();

  Config cfg_;
  ServiceManager manager_;             // systemd's notify protocol and watchdog
  std::vector<std::string> role_env_;  // the roles' environment (without systemd's variables)
  bool activated_ = false;             // the socket came from systemd: never unlinked
  bool ready_sent_ = false;
  uint64_t extend_sent_ns_ = 0;  // the last EXTEND_TIMEOUT_USEC while draining
  std::string spool_dir_;        // the instance's spool directory (make_spool); "": none yet
  std::string shm_name_;
  UniqueFd listen_;
  UniqueFd metrics_listen_;  // --metrics-listen; the frontend serves it
  std::optional<shm::Segment> seg_;
  isolation::Cgroups cgroups_;
  UniqueFd submit_efd_, frontend_efd_;
  std::vector<UniqueFd> worker_efds_;
  Role frontend_;
  std::vector<Role> workers_;
  enum class Phase { kRunning, kDraining, kStopping } phase_ = Phase::kRunning;
  uint64_t drain_deadline_ns_ = 0;
  uint64_t kill_deadline_ns_ = 0;
  bool frontend_stop_sent_ = false;
  int exit_code_ = 0;
};

// The doorbells, and the roles bound to their words in the segment.
Status Supervisor::make_roles() {
  auto efd = [](UniqueFd& out) -> Status {
    auto fd = new_fd("eventfd", [] { return ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); });
    if (!fd) return fd.error();
    out = std::move(*fd);
    return {};
  };
  if (Status s = efd(submit_efd_); !s) return s;
  if (Status s = efd(frontend_efd_); !s) return s;
  // Every slot gets its doorbell now: the frontend inherits them all, so a
  // reload that starts workers in other slots needs no new frontend.
  worker_efds_.resize(shm::kWorkerSlots);
  for (uint32_t i = 0; i < shm::kWorkerSlots; ++i) {
    if (Status s = efd(worker_efds_[i]); !s) return s;
    const bool remote = i == shm::kRemoteWorker;
    workers_.emplace_back(remote ? "remote worker" : "worker " + std::to_string(i),
                          shm::RoleKind::kWorker, cfg_);
    shm::WorkerSlot& slot = seg_->worker(i);
    workers_[i].bind(slot.incarnation, slot.ready, slot.last_death);
    workers_[i].use = &slot.use;
    slot.use.store(remote                  ? shm::WorkerUse::kRemote
                   : i < cfg_.caps.workers ? shm::WorkerUse::kServing
                                           : shm::WorkerUse::kUnused);
    // A worker's jobs without cgroups of their own share its cgroup, and
    // their OOM kills would count as its own: only with every job in its own
    // cgroup does a worker get one.
    if (cgroups_.every_job()) workers_[i].cgroup = "worker-" + std::to_string(i);
  }
  frontend_.cgroup = "frontend";
  shm::Header& h = seg_->header();
  frontend_.bind(h.frontend_incarnation, h.frontend_ready, h.frontend_last_death);
  return {};
}

Status Supervisor::setup() {
  const shm::RoleConfig& role = cfg_.role;
  if (!activated_) switch (probe_socket(cfg_.socket_path)) {
      case SocketState::kLive:
        return Error{EADDRINUSE, "another shell-poold is already listening on " + cfg_.socket_path};
      case SocketState::kStale:
        spdlog::warn("removing stale socket {} left by an earlier instance", cfg_.socket_path);
        break;
      case SocketState::kAbsent:
        break;
    }
  shm_name_ = shm::Segment::name_for_socket(cfg_.socket_path);
  if (shm::Segment::remove(shm_name_))
    spdlog::warn("removed stale shared memory /dev/shm/{} left by an earlier instance", shm_name_);

  if (!activated_) {
    auto sock = listen_on(cfg_.socket_path);
    if (!sock) return sock.error();
    listen_ = std::move(sock).value();
  }
  if (!cfg_.metrics_listen.empty()) {
    auto sock = listen_tcp(cfg_.metrics_listen);
    if (!sock) return sock.error();
    metrics_listen_ = std::move(sock).value();
  }
  if (Status st = make_spool(); !st) return st;
  auto seg = shm::Segment::create(shm_name_, cfg_.caps);
  if (!seg) return seg.error();
  seg_.emplace(std::move(seg).value());
  auto cgroups = isolation::Cgroups::create(shm_name_, cfg_.cgroups);
  if (!cgroups)
    return Error{cgroups.error().code, "--cgroups always: " + cgroups.error().message()};
  cgroups_ = std::move(cgroups).value();
  if (cgroups_.enabled()) {
    spdlog::info("{} run in cgroups of their own (cgroup v{})", cgroups_.scope(),
                 cgroups_.isolation() == shm::Isolation::kCgroupV2 ? 2 : 1);
  } else {
    spdlog::info("jobs are isolated by process group only: {}", cgroups_.why_not());
    if (role.default_limits.memory_bytes || role.max_limits.memory_bytes)
      return Error{ENOTSUP, "memory_bytes limits need per-job cgroups: " + cgroups_.why_not()};
  }

  if (Status st = make_roles(); !st) return st;
  if (Status st = write_role_config(); !st) return st;
  // Connections and job pipes are fds: use the whole hard limit (inherited by the roles).
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);
  }
  // Orphaned job processes of a dead worker are re-parented to us, so we can
  // kill them even if the worker died before recording their process group.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  return {};
}

std::vector<std::string> Supervisor::common_args() const {
  // Roles log as we do: "auto" resolved here, on the stderr they inherit.
  const LogFormat format =
      resolve_log_format(parse_log_format(cfg_.log_format).value_or(LogFormat::kAuto));
  return {"--shm",        shm_name_,      "--log-level",
          cfg_.log_level, "--log-format", log_format_name(format)};
}

// What the roles read from the segment: the flags' values, and what the
// supervisor found out at start (the spool directory, the isolation).
Status Supervisor::write_role_config() {
  auto c = role_config(cfg_);
  if (!c) return c.error();
  if (Status st = shm::set_spool_dir(*c, spool_dir_); !st) return st;
  shm::set_isolation(*c, cgroups_.isolation(),
                     cgroups_.enabled() ? "cgroups for " + cgroups_.scope() : cgroups_.why_not());
  shm::publish_config(seg_->header(), *c);
  seg_->header().reload.loaded_unix_ms.store(unix_ms());
  return {};
}

// A live reload (SIGHUP, the `reload` method): the command line and
// --config parsed again and checked whole; on any error the configuration
// in use stays. The calls it answers are those counted before it began
// (ReloadState); one that comes while it runs gets the next reload.
void Supervisor::reload() {
  shm::ReloadState& state = seg_->header().reload;
  const uint64_t covered = state.requested.load();
  manager_.reloading();
  spdlog::info("reloading the configuration");
  Result<std::string> done = apply_reload();
  const std::string message = done ? *done : done.error().message();
  const size_t n = std::min(message.size(), sizeof state.last_message - 1);
  std::memcpy(state.last_message, message.data(), n);
  state.last_message[n] = '\0';
  state.last_ok.store(done ? 1 : 0);
  state.last_unix_ms.store(unix_ms());
  (done ? state.reloads_ok : state.reloads_failed).fetch_add(1);
  state.answered.store(covered, std::memory_order_release);
  if (done) {
    spdlog::info("reload: {}", message);
    manager_.ready("serving: " + status_line() + "; reloaded: " + message);
  } else {
    spdlog::error("reload failed, the configuration in use is unchanged: {}", message);
    manager_.ready("serving: " + status_line() + "; reload failed: " + message);
  }
  ring_all();  // the frontend answers the reload calls and takes the new configuration
}

Result<std::string> Supervisor::apply_reload() {
  auto parsed = parse_daemon_flags(cfg_.args);
  if (!parsed) return parsed.error();
  Config next = std::move(*parsed);
  if (activated_) next.socket_path = cfg_.socket_path;  // systemd's, not the flag's
  derive(next);
  if (Status st = check(next); !st) return st.error();
  if (std::vector<std::string> flags = restart_required(cfg_, next); !flags.empty()) {
    std::string list;
    for (const std::string& f : flags) list += (list.empty() ? "" : ", ") + f;
    return Error{0, "restart required to change " + list + " (nothing was changed)"};
  }
  const shm::RoleConfig& role = next.role;
  if (!cgroups_.enabled() && (role.default_limits.memory_bytes || role.max_limits.memory_bytes))
    return Error{ENOTSUP, "memory_bytes limits need per-job cgroups: " + cgroups_.why_not()};
  // Workers to replace: a new generation in free slots, the old one retires.
  const bool resize = next.caps.workers != cfg_.caps.workers ||
                      next.caps.jobs_per_worker != cfg_.caps.jobs_per_worker;
  if (resize && serving_workers() + next.caps.workers > shm::kWorkerSlots)
    return Error{0,
                 "a replacement of the workers is still under way (the retiring ones finish "
                 "their jobs first); reload again when health shows none retiring"};
  cfg_ = std::move(next);
  if (Status st = write_role_config(); !st) return st.error();
  std::string workers = resize ? "; " + resize_workers(cfg_.caps.workers) : "";
  spdlog::set_level(spdlog::level::level_enum(cfg_.role.log_level));
  const uint64_t window = uint64_t(cfg_.restart_window_s * 1e9);
  frontend_.restarts.set_bound(cfg_.max_restarts, window);
  for (Role& w : workers_) w.restarts.set_bound(cfg_.max_restarts, window);
  return "configuration generation " + std::to_string(shm::config_generation(seg_->header())) +
         " in use" + workers;
}

// Starts `role` with `args` and `fds` (at their fixed numbers, common/roles.h).
// A role that cannot even be started is a boot failure: it is retried with
// backoff, and a crash loop of them ends the daemon.
void Supervisor::start(Role& role, std::vector<std::string> args, std::vector<int> fds) {
  // Its own memory cgroup, where there are cgroups: tells its OOM kills apart.
  RoleProcess::Spec spec{"/proc/self/exe", std::move(args), std::move(fds),
                         cgroups_.prepare_role(role.cgroup), &role_env_};
  role.oom_base = cgroups_.role_oom_kills(role.cgroup);
  role.hang_killed = false;
  auto process = RoleProcess::start(spec);
  // Its heartbeat is due from here on: after the exec (which start() waited
  // for), not before it, so a slow exec of a large binary is not a hang.
  role.started_ns = monotonic_ns();
  if (!process) {
    spdlog::error("cannot start {}: {}", role.name, process.error().message());
    seg_->header().counters.boot_failures.fetch_add(1);
    shm::count_death(seg_->header().counters, role.kind, shm::DeathCause::kStartFailed);
    role.last_death->store(shm::DeathKind::kBootFailure);
    return schedule_restart(role, shm::DeathKind::kBootFailure);
  }
  role.process = std::move(process).value();
  spdlog::info("started {} (pid {})", role.name, role.process.pid());
}

void Supervisor::start_frontend() {
  seg_->header().frontend_incarnation.fetch_add(1);
  std::vector<int> fds{listen_.get(), frontend_efd_.get(), submit_efd_.get()};
  static_assert(roles::kListen == 3 && roles::kFrontendBell == 4 && roles::kFrontendSubmit == 5 &&
                roles::kFirstWorkerBell == 6);
  for (const UniqueFd& bell : worker_efds_) fds.push_back(bell.get());
  auto args = common_args();
  args.insert(args.begin(), "frontend");
  if (metrics_listen_) {  // after the worker bells, its number in argv
    args.insert(args.end(), {"--metrics-fd", std::to_string(roles::kListen + int(fds.size()))});
    fds.push_back(metrics_listen_.get());
  }
  frontend_stop_sent_ = false;
  start(frontend_, std::move(args), std::move(fds));
}

void Supervisor::start_worker(uint32_t i) {
  shm::WorkerSlot& rec = seg_->worker(i);
  rec.incarnation.fetch_add(1);
  rec.running.store(0);
  const bool remote = i == shm::kRemoteWorker;
  rec.jobs_at_once.store(remote ? cfg_.caps.remote_jobs : cfg_.caps.jobs_per_worker);
  auto args = common_args();
  args.insert(args.begin(), {"worker", "--index", std::to_string(i)});
  if (remote) args.insert(args.begin() + 3, "--ssh");
  if (cfg_.recycle_after && !remote) {  // up to 10 % jitter, so workers do not recycle at once
    uint64_t n = cfg_.recycle_after + uint64_t(std::rand()) % (cfg_.recycle_after / 10 + 1);
    args.insert(args.end(), {"--recycle-after", std::to_string(n)});
  }
  static_assert(roles::kWorkerSubmit == 3 && roles::kWorkerBell == 4 &&
                roles::kWorkerFrontendBell == 5);
  args.insert(args.end(), {"--submit-fd", std::to_string(roles::kWorkerSubmit), "--bell-fd",
                           std::to_string(roles::kWorkerBell), "--frontend-fd",
                           std::to_string(roles::kWorkerFrontendBell)});
  if (cgroups_.enabled()) args.insert(args.end(), {"--cgroups", cgroups_.encode()});
  start(workers_[i], std::move(args),
        {submit_efd_.get(), worker_efds_[i].get(), frontend_efd_.get()});
  rec.pid.store(workers_[i].process.pid());
}

void Supervisor::ring_all() const {
  shm::Header& h = seg_->header();
  shm::Doorbell(&h.frontend_bell, frontend_efd_.get()).force();
  shm::Doorbell(&h.submit_bell, submit_efd_.get()).force();
  for (uint32_t i = 0; i < workers_.size(); ++i)
    shm::Doorbell(&seg_->worker(i).bell, worker_efds_[i].get()).force();
}

void Supervisor::reap() {
  for (;;) {
    int status;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    if (pid == frontend_.process.pid()) {
      on_death(frontend_, status, true, 0);
      continue;
    }
    for (uint32_t i = 0; i < workers_.size(); ++i)
      if (pid == workers_[i].process.pid()) on_death(workers_[i], status, false, i);
    // Anything else is an adopted orphan we killed: reaped, nothing to do.
  }
}

void Supervisor::on_death(Role& role, int status, bool is_frontend, uint32_t index) {
  role.process.reaped();
  const bool retiring = role.slot_use() == shm::WorkerUse::kRetiring;
  if (!is_frontend && WIFEXITED(status) && WEXITSTATUS(status) == roles::kExitRecycled) {
    // A planned exit with no job left: no repair, no crash count; restarted
    // at once, unless a reload retired it.
    seg_->worker(index).pid.store(0);
    if (retiring) return retire(index);
    seg_->header().counters.recycles.fetch_add(1);
    if (phase_ != Phase::kStopping) role.restart_at_ns = monotonic_ns();
    return;
  }
  const bool expected = phase_ == Phase::kStopping;
  role.oom_killed = killed_by_oom(role, status);
  const shm::DeathKind kind = death_kind(role, status);
  uint64_t left_out = 0;
  role.quiet = !role.death_log.allow(monotonic_ns(), &left_out);
  if (left_out)
    spdlog::warn("{}: {} more deaths were logged at debug level only (at most 5 per 10 s)",
                 role.name, left_out);
  auto log = role.quiet ? spdlog::level::debug
             : expected ? spdlog::level::info
                        : spdlog::level::warn;
  const char* counted = expected ? ""
                        : kind == shm::DeathKind::kBootFailure
                            ? " before it was ready (a boot failure)"
                        : kind == shm::DeathKind::kKilledStarting
                            ? " from outside while it started (not a boot failure)"
                            : "";
  spdlog::log(log, "{} {}{}", role.name, death_cause(role, status), counted);
  if (!expected) {
    count_death(role, status);
    if (kind == shm::DeathKind::kBootFailure) seg_->header().counters.boot_failures.fetch_add(1);
    role.last_death->store(kind);
  }
  if (is_frontend) {
    shm::RepairReport r = shm::repair_after_frontend_death(*seg_);
    if (r.cancelled || r.released)
      spdlog::log(log, "frontend repair: {} jobs cancelled, {} slots freed", r.cancelled,
                  r.released);
  } else {
    seg_->worker(index).pid.store(0);
    kill_job_cgroups(index);
    std::string why = "lost: worker " + std::to_string(index) + " " + death_cause(role, status) +
                      " while the job ran";
    shm::RepairReport r = shm::repair_after_worker_death(*seg_, index, why);
    sweep_adopted();
    if (r.lost || r.requeued)
      spdlog::log(log, "worker {} repair: {} jobs lost, {} requeued", index, r.lost, r.requeued);
    // Stopping: no worker will run what the repair requeued.
    if (phase_ == Phase::kStopping)
      shm::cancel_queued(*seg_, "cancelled: the daemon is shutting down");
  }
  ring_all();
  if (retiring) return retire(index);  // its successor serves already
  // While draining, running and requeued jobs still need their workers; a
  // frontend is not restarted then (the listening socket is already closed).
  if (phase_ == Phase::kRunning || (phase_ == Phase::kDraining && !is_frontend))
    schedule_restart(role, kind);
}

// How a death counts. Before ready, the role's own doing (an exit, a crash
// signal, a hang we killed it for, the OOM killer) is a boot failure; a
// kill from outside (SIGKILL, SIGTERM, ... from an operator or a kill storm)
// is not, since it says nothing about whether the role can start.
shm::DeathKind Supervisor::death_kind(const Role& role, int status) const {
  if (role.reported_ready()) return shm::DeathKind::kAfterReady;
  if (role.hang_killed || role.oom_killed || !WIFSIGNALED(status))
    return shm::DeathKind::kBootFailure;
  switch (WTERMSIG(status)) {
    case SIGSEGV:
    case SIGBUS:
    case SIGILL:
    case SIGFPE:
    case SIGABRT:
    case SIGSYS:
    case SIGTRAP:
    case SIGXCPU:
    case SIGXFSZ:
      return shm::DeathKind::kBootFailure;
    default:
      return shm::DeathKind::kKilledStarting;
  }
}

// A retired worker is gone: its slot is free for a later generation.
void Supervisor::retire(uint32_t index) {
  workers_[index].restart_at_ns = 0;
  seg_->worker(index).use.store(shm::WorkerUse::kUnused);
  spdlog::info("worker {} retired", index);
}

// Unplanned deaths by role and cause, for `health` and `metrics`.
void Supervisor::count_death(const Role& role, int status) const {
  const shm::DeathCause cause = role.hang_killed      ? shm::DeathCause::kHang
                                : role.oom_killed     ? shm::DeathCause::kOom
                                : WIFSIGNALED(status) ? shm::DeathCause::kCrash
                                                      : shm::DeathCause::kExit;
  shm::count_death(seg_->header().counters, role.kind, cause);
}

// A SIGKILL we did not send, while the OOM count of the role's own memory
// cgroup rose since it started: the OOM killer's. (Roles without a cgroup
// of their own are never told apart.)
bool Supervisor::killed_by_oom(const Role& role, int status) const {
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && !role.hang_killed &&
         cgroups_.role_oom_kills(role.cgroup) > role.oom_base;
}

std::string Supervisor::death_cause(const Role& role, int status) const {
  if (role.hang_killed)
    return "hung (no heartbeat for " + std::to_string(cfg_.hang_timeout_s) + " s) and was killed";
  if (role.oom_killed) return describe_status(status) + " (out of memory: the kernel's OOM killer)";
  return describe_status(status);
}

// A role that stopped beating (stuck, or SIGSTOPped) is killed; the reaper
// then repairs and restarts it like any other death.
void Supervisor::check_hangs(uint64_t now) {
  if (cfg_.hang_timeout_s <= 0 || phase_ == Phase::kStopping) return;
  const auto beat_limit = uint64_t(cfg_.hang_timeout_s * 1e9);
  auto check = [&](Role& role, uint64_t beat) {
    if (!role.process.running() || role.hang_killed) return;
    // A role beats from its loop, which it enters when it is ready: until
    // then its start may take longer than a short --hang-timeout (a large
    // binary, a sanitizer build, a busy machine), up to kStartTimeoutNs.
    const uint64_t limit =
        role.reported_ready() ? beat_limit : std::max(beat_limit, kStartTimeoutNs);
    uint64_t last = std::max(beat, role.started_ns);  // a beat from before the restart is stale
    if (now <= last || now - last < limit) return;
    spdlog::warn("{} (pid {}) has not beaten its heartbeat for {} ms: killing it", role.name,
                 role.process.pid(), (now - last) / kMs);
    role.hang_killed = true;
    role.process.signal(SIGKILL);
  };
  check(frontend_, seg_->header().frontend_heartbeat_ns.load());
  for (uint32_t i = 0; i < workers_.size(); ++i)
    check(workers_[i], seg_->worker(i).heartbeat_ns.load());
}

// A role that served is restarted however often it dies; one that keeps
// dying before it is ready is a crash loop, which ends the daemon so that its
// service manager takes over.
void Supervisor::schedule_restart(Role& role, shm::DeathKind kind) {
  uint64_t now = monotonic_ns();
  auto delay = role.restarts.on_death(role.started_ns, now, kind, [](uint64_t n) {
    return n ? uint64_t(std::rand()) % (n + 1) : 0;  // jitter: restarts do not align
  });
  if (!delay) {
    spdlog::critical(
        "{} failed to start {} times within {} s: giving up (a crash loop), exit status {}",
        role.name, role.restarts.boot_failures(), cfg_.restart_window_s, kExitCrashLoop);
    exit_code_ = kExitCrashLoop;
    begin_stop();
    return;
  }
  role.restart_at_ns = now + *delay;
  const auto level = role.quiet ? spdlog::level::debug : spdlog::level::info;
  role.quiet = false;
  if (kind != shm::DeathKind::kBootFailure)
    spdlog::log(level, "restarting {} in {} ms (restarted however often it is killed)", role.name,
                *delay / kMs);
  else
    spdlog::log(level, "restarting {} in {} ms (boot failure {} of at most {} within {} s)",
                role.name, *delay / kMs, role.restarts.boot_failures(), cfg_.max_restarts,
                cfg_.restart_window_s);
}

void Supervisor::begin_drain() {
  if (phase_ != Phase::kRunning) return;
  phase_ = Phase::kDraining;
  spdlog::info("draining: no new jobs; running jobs have {} s to finish", cfg_.drain_timeout_s);
  seg_->header().draining.store(1);
  if (!activated_) ::unlink(cfg_.socket_path.c_str());  // new clients see the daemon gone at once
  listen_.reset();  // (an activated socket stays open in systemd, which queues new clients)
  drain_deadline_ns_ = monotonic_ns() + uint64_t(cfg_.drain_timeout_s * 1e9);
  ring_all();
  notify(monotonic_ns());
}

void Supervisor::begin_stop() {
  if (phase_ == Phase::kStopping) return;
  if (phase_ == Phase::kRunning) {
    seg_->header().draining.store(1);
    if (!activated_) ::unlink(cfg_.socket_path.c_str());
    listen_.reset();
  }
  phase_ = Phase::kStopping;
  uint32_t n = shm::cancel_queued(*seg_, "cancelled: the daemon is shutting down");
  spdlog::info("stopping: {} queued jobs cancelled, stopping workers", n);
  manager_.stopping(exit_code_ ? "stopping after a crash loop" : "stopping", 2 * kStopKillAfterNs);
  for (Role& w : workers_) {
    w.restart_at_ns = 0;
    w.process.signal(SIGTERM);
  }
  frontend_.restart_at_ns = 0;
  kill_deadline_ns_ = monotonic_ns() + kStopKillAfterNs;
  ring_all();
}

// The cgroups of a dead worker's running jobs: whatever left their process
// groups dies too (the repair kills the groups).
void Supervisor::kill_job_cgroups(uint32_t index) {
  if (!cgroups_.enabled()) return;
  shm::JobTable jobs = seg_->jobs();
  for (uint32_t i = 0; i < jobs.size(); ++i) {
    shm::JobWord w = jobs.load(i);
    if (w.owner == shm::owner_stamp(index) && w.state == shm::JobState::kRunning) cgroups_.kill(i);
  }
}

void Supervisor::sweep_adopted() {
  std::string path = "/proc/self/task/" + std::to_string(::getpid()) + "/children";
  std::ifstream in(path);
  pid_t pid;
  while (in >> pid) {
    if (pid == frontend_.process.pid()) continue;
    if (std::any_of(workers_.begin(), workers_.end(),
                    [&](const Role& w) { return w.process.pid() == pid; }))
      continue;
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
  }
}

bool Supervisor::children_alive() const {
  return frontend_.process.running() ||
         std::any_of(workers_.begin(), workers_.end(),
                     [](const Role& w) { return w.process.running(); });
}

// The instance's own spool directory, "<shm name>.spool" in --spool-dir
// (default: the socket's directory): two daemons never share one, and the
// daemon removes only what it made.
Status Supervisor::make_spool() {
  std::string parent = cfg_.spool_dir;
  if (parent.empty() && cfg_.socket_path[0] == '@') {        // an abstract socket has no directory
    const char* runtime = std::getenv("RUNTIME_DIRECTORY");  // systemd's RuntimeDirectory=
    parent = runtime && *runtime ? std::string(runtime).substr(0, std::string(runtime).find(':'))
                                 : "/tmp";
  }
  if (parent.empty()) {
    size_t slash = cfg_.socket_path.rfind('/');
    parent = slash == std::string::npos ? "."
             : slash == 0               ? "/"
                                        : cfg_.socket_path.substr(0, slash);
  }
  const std::string dir = parent + "/" + shm_name_ + ".spool";
  if (::mkdir(dir.c_str(), 0700) != 0) {
    if (errno != EEXIST) return Error{errno, "make the spool directory " + dir};
    // Left by an earlier instance on our socket (which was free): it must be
    // a directory of ours that nobody else can write into.
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0) return Error{errno, "spool directory " + dir};
    if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 022))
      return Error{EPERM, "spool directory " + dir +
                              " is not a directory only this user can write; remove it"};
    if (uint32_t n = clear_spool(dir))
      spdlog::warn("removed {} stale job output files from {}", n, dir);
  }
  spool_dir_ = dir;
  return {};
}

void Supervisor::cleanup() {
  sweep_adopted();
  if (!spool_dir_.empty()) {
    clear_spool(spool_dir_);
    ::rmdir(spool_dir_.c_str());
  }
  cgroups_.remove();
  if (seg_) shm::Segment::remove(shm_name_);
}

// The socket systemd passed, if any (socket activation). False: what was
// passed is unusable (a configuration error).
bool Supervisor::take_systemd_socket() {
  auto passed = take_activated_socket();
  if (!passed) {
    spdlog::critical("socket activation: {}", passed.error().message());
    manager_.failed("cannot start: socket activation: " + passed.error().message(),
                    passed.error().code);
    return false;
  }
  if (!*passed) return true;
  if (cfg_.socket_path != (*passed)->path)
    spdlog::info("listening on the socket systemd passed, {} (not {})", (*passed)->path,
                 cfg_.socket_path);
  cfg_.socket_path = (*passed)->path;
  listen_ = std::move((*passed)->fd);
  activated_ = true;
  return true;
}

int Supervisor::run() {
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, s);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);

  manager_ = ServiceManager::from_environment();
  if (!take_systemd_socket()) return kExitConfig;
  role_env_ = ServiceManager::child_environment();
  derive(cfg_);
  if (Status s = check(cfg_); !s) {
    spdlog::critical("{}", s.error().message());
    manager_.failed("cannot start: " + s.error().message(), EINVAL);
    return kExitConfig;
  }
  if (Status s = setup(); !s) {
    spdlog::critical("{}", s.error().message());
    manager_.failed("cannot start: " + s.error().message(), s.error().code ? s.error().code : EIO);
    cgroups_.remove();
    if (seg_) shm::Segment::remove(shm_name_);
    if (!spool_dir_.empty()) ::rmdir(spool_dir_.c_str());
    if (listen_ && !activated_) ::unlink(cfg_.socket_path.c_str());
    return kExitStartFailed;
  }
  spdlog::info("listening on {} with {} workers, up to {} jobs at once, queue {}, shm {} ({} MiB)",
               cfg_.socket_path, cfg_.caps.workers, cfg_.caps.jobs_per_worker * cfg_.caps.workers,
               cfg_.caps.job_slots, shm_name_, seg_->size() >> 20);
  for (uint32_t i = 0; i < cfg_.caps.workers; ++i) start_worker(i);
  start_worker(shm::kRemoteWorker);
  start_frontend();

  for (;;) {
    uint64_t now = monotonic_ns();
    uint64_t next = now + 1000 * kMs;
    auto consider = [&](uint64_t t) {
      if (t) next = std::min(next, std::max(t, now));
    };
    if (phase_ != Phase::kStopping) {
      if (phase_ == Phase::kRunning) consider(frontend_.restart_at_ns);
      for (const Role& w : workers_) consider(w.restart_at_ns);
    }
    if (phase_ == Phase::kDraining) consider(now + 20 * kMs);  // poll for the last job's end
    if (phase_ == Phase::kStopping) consider(kill_deadline_ns_);
    if (phase_ == Phase::kRunning && !ready_sent_) consider(now + 5 * kMs);  // poll for READY
    consider(manager_.next_ping_ns());
    uint64_t wait = next - now;
    timespec ts{time_t(wait / 1'000'000'000u), long(wait % 1'000'000'000u)};
    siginfo_t info;
    int sig = ::sigtimedwait(&mask, &info, &ts);
    if (sig == SIGCHLD) reap();
    if (sig == SIGHUP) {
      if (phase_ == Phase::kRunning)
        reload();
      else
        spdlog::info("SIGHUP received while stopping: no reload");
    }
    if (sig == SIGTERM || sig == SIGINT) {
      if (phase_ == Phase::kRunning) {
        spdlog::info("{} received", signal_name(sig));
        begin_drain();
      } else {
        spdlog::info("{} received again: stopping now", signal_name(sig));
        begin_stop();
      }
    }
    now = monotonic_ns();
    check_hangs(now);
    if (phase_ == Phase::kRunning) step_running(now);
    if (phase_ == Phase::kDraining) step_draining(now);
    if (phase_ == Phase::kStopping && !step_stopping(now)) break;
    notify(now);
  }
  cleanup();
  spdlog::info("stopped");
  return exit_code_;
}

// Every role's current incarnation finished its start.
bool Supervisor::all_ready() const {
  auto ready = [](const Role& r) {
    const shm::WorkerUse use = r.slot_use();
    return (use != shm::WorkerUse::kServing && use != shm::WorkerUse::kRemote) ||
           (r.process.running() && r.reported_ready());
  };
  return ready(frontend_) && std::all_of(workers_.begin(), workers_.end(), ready);
}

std::string Supervisor::status_line() const {
  uint32_t busy = 0, queued = 0, running = 0;
  for (uint32_t i = 0; i < workers_.size(); ++i) busy += seg_->worker(i).running.load() > 0;
  const uint32_t serving = serving_workers();
  const shm::JobTable jobs = seg_->jobs();
  for (uint32_t i = 0; i < jobs.size(); ++i) {
    shm::JobState s = jobs.load(i).state;
    queued += s == shm::JobState::kQueued;
    running += s == shm::JobState::kClaimed || s == shm::JobState::kRunning;
  }
  return std::to_string(serving) + " workers (" + std::to_string(busy) + " busy), " +
         std::to_string(queued) + " jobs queued, " + std::to_string(running) + " running";
}

// The service manager hears: READY once every role is ready, the pool's
// state (rate-limited), how long a drain may still take, and the watchdog.
void Supervisor::notify(uint64_t now) {
  manager_.ping_if_due(now);
  if (phase_ == Phase::kRunning) {
    if (ready_sent_) {  // the job table is scanned only when a STATUS= is due
      if (manager_.status_due(now)) manager_.status("serving: " + status_line(), now);
      return;
    }
    if (!all_ready()) return;
    ready_sent_ = true;
    std::string status = "serving: " + status_line();
    spdlog::info("ready, {}", status);
    manager_.ready(status);
  } else if (phase_ == Phase::kDraining && now >= extend_sent_ns_ + 1000 * kMs) {
    extend_sent_ns_ = now;
    uint64_t left = drain_deadline_ns_ > now ? drain_deadline_ns_ - now : 0;
    manager_.stopping(
        "draining: " + std::to_string(shm::unfinished_jobs(*seg_)) + " jobs unfinished",
        left + 2 * kStopKillAfterNs);
  }
}

uint32_t Supervisor::serving_workers() const {
  return uint32_t(std::count_if(workers_.begin(), workers_.end(), [](const Role& w) {
    return w.slot_use() == shm::WorkerUse::kServing;
  }));
}

// A reload changed the worker count (or each one's bound): `count` new
// workers start in free slots and take new jobs at once; the serving ones
// retire: they claim nothing more, finish what they run, and exit. No
// queued job waits for a retiring worker, and none runs twice.
std::string Supervisor::resize_workers(uint32_t count) {
  std::vector<uint32_t> old, fresh;
  for (uint32_t i = 0; i < workers_.size(); ++i) {
    shm::WorkerUse use = workers_[i].slot_use();
    if (use == shm::WorkerUse::kServing) old.push_back(i);
    if (use == shm::WorkerUse::kUnused && fresh.size() < count) fresh.push_back(i);
  }
  for (uint32_t i : fresh) {
    seg_->worker(i).use.store(shm::WorkerUse::kServing);
    workers_[i].restarts = RestartPolicy(cfg_.max_restarts, uint64_t(cfg_.restart_window_s * 1e9));
    start_worker(i);
  }
  for (uint32_t i : old) {
    seg_->worker(i).use.store(shm::WorkerUse::kRetiring);
    workers_[i].restart_at_ns = 0;
    // One that is down (waiting for its restart) has nothing to finish.
    if (!workers_[i].process.running()) retire(i);
  }
  ring_all();  // the retiring ones see it; the new ones find the queued jobs
  return std::to_string(count) + " new workers; " + std::to_string(old.size()) +
         " retiring once their jobs end";
}

// Running: restarts that are due.
void Supervisor::step_running(uint64_t now) {
  if (frontend_.restart_at_ns && now >= frontend_.restart_at_ns) {
    frontend_.restart_at_ns = 0;
    start_frontend();
  }
  for (uint32_t i = 0; i < workers_.size(); ++i)
    if (workers_[i].restart_at_ns && now >= workers_[i].restart_at_ns) {
      workers_[i].restart_at_ns = 0;
      start_worker(i);
    }
}

// Draining: running and requeued jobs still need their workers (the
// frontend is not restarted: the socket is closed); the stop begins when the
// last job ends or the drain timeout passes.
void Supervisor::step_draining(uint64_t now) {
  for (uint32_t i = 0; i < workers_.size(); ++i)
    if (workers_[i].restart_at_ns && now >= workers_[i].restart_at_ns) {
      workers_[i].restart_at_ns = 0;
      start_worker(i);
    }
  if (shm::unfinished_jobs(*seg_) == 0 || now >= drain_deadline_ns_) begin_stop();
}

// Stopping: the workers got SIGTERM; the frontend goes last, so it can still
// tell clients how their jobs ended; whatever is left at the deadline is
// killed.
bool Supervisor::step_stopping(uint64_t now) {
  bool workers_gone = std::none_of(workers_.begin(), workers_.end(),
                                   [](const Role& w) { return w.process.running(); });
  if (workers_gone && frontend_.process.running() && !frontend_stop_sent_) {
    frontend_stop_sent_ = true;
    ring_all();
    frontend_.process.signal(SIGTERM);
  }
  if (!children_alive()) return false;
  if (now >= kill_deadline_ns_) {
    spdlog::warn("children still alive after {} ms: killing them", kStopKillAfterNs / kMs);
    frontend_.process.signal(SIGKILL);
    for (Role& w : workers_) w.process.signal(SIGKILL);
    kill_deadline_ns_ = now + kStopKillAfterNs;
  }
  return true;
}

}  // namespace

int run(const Config& config) {
  return Supervisor(config).run();
}

}  // namespace sp::supervisor
