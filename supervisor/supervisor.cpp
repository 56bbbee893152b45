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
#include <deque>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/clock.h"
#include "common/log.h"
#include "common/sys.h"
#include "shm/doorbell.h"
#include "shm/repair.h"
#include "shm/segment.h"
#include "supervisor/config.h"
#include "supervisor/listener.h"
#include "isolation/cgroups.h"
#include "worker/worker.h"

namespace sp::supervisor {

namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kStopKillAfterNs = 5000 * kMs;  // children still alive then get SIGKILL
constexpr uint64_t kHealthyNs = 60'000 * kMs;      // a role up this long has its backoff reset

// Fixed fd numbers in the children (see docs/architecture.md).
constexpr int kChildFdBase = 3;

struct Role {
  std::string name;  // "frontend", "worker 0"
  pid_t pid = 0;
  uint64_t started_ns = 0;
  uint64_t restart_at_ns = 0;  // 0: no restart pending
  bool hang_killed = false;    // we killed it for a stale heartbeat
  bool oom_killed = false;     // its last death was the kernel's OOM killer
  std::string cgroup;          // its memory cgroup's name (Cgroups::prepare_role)
  uint64_t oom_base = 0;       // OOM kills in that cgroup when it was started
  std::deque<uint64_t> crashes;
};

// Limits as --limit/--max-limit arguments for the frontend.
void add_limit_args(std::vector<std::string>& args, const char* flag, const shm::Rlimits& l) {
  for (const auto& [name, field] : shm::kLimitNames)
    if (l.*field)
      args.insert(args.end(), {flag, std::string(name) + "=" + std::to_string(l.*field)});
}

// Removes the job files ("job-<digits>") a daemon left in its spool
// directory, and nothing else.
uint32_t clear_spool(const std::string& dir) {
  uint32_t n = 0;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  while (dirent* e = ::readdir(d)) {
    std::string_view name(e->d_name);
    bool job = name.size() > 4 && name.substr(0, 4) == "job-" &&
               name.find_first_not_of("0123456789", 4) == std::string_view::npos;
    if (job && ::unlinkat(::dirfd(d), e->d_name, 0) == 0) ++n;
  }
  ::closedir(d);
  return n;
}

std::string describe_status(int status) {
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + sigabbrev_np(WTERMSIG(status));
  return "exited with status " + std::to_string(WEXITSTATUS(status));
}

class Supervisor {
 public:
  explicit Supervisor(const Config& c) : cfg_(c) {}
  int run();

 private:
  Status setup();
  void start_frontend();
  void start_worker(uint32_t i);
  pid_t spawn(const std::vector<std::string>& args, const std::vector<int>& fds, Role& role);
  void reap();
  void on_death(Role& role, int status, bool is_frontend, uint32_t index);
  void check_hangs(uint64_t now);
  void count_death(const Role& role, int status) const;
  bool killed_by_oom(const Role& role, int status) const;
  std::string death_cause(const Role& role, int status) const;
  void schedule_restart(Role& role);
  void begin_drain();
  void begin_stop();
  void sweep_adopted();
  void kill_job_cgroups(uint32_t index);
  void ring_all() const;
  bool children_alive() const;
  std::vector<std::string> common_args() const;
  Status make_spool();
  void cleanup();

  Config cfg_;
  std::string spool_dir_;  // the instance's spool directory (make_spool); "": none yet
  std::string shm_name_;
  UniqueFd listen_;
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

Status Supervisor::setup() {
  // Defaults above their ceilings would refuse jobs for params they never sent.
  if (cfg_.max_timeout_s > 0 && cfg_.default_timeout_s > cfg_.max_timeout_s)
    return Error{EINVAL, "--default-timeout is above --max-timeout"};
  for (const auto& [name, field] : shm::kLimitNames)
    if (cfg_.max_limits.*field && cfg_.default_limits.*field > cfg_.max_limits.*field)
      return Error{EINVAL, "--limit " + std::string(name) + " is above its --max-limit"};
  switch (probe_socket(cfg_.socket_path)) {
    case SocketState::kLive:
      return Error{EADDRINUSE, "another shell-poold is already listening on " + cfg_.socket_path};
    case SocketState::kStale:
      spdlog::warn("removing stale socket {} left by an earlier instance", cfg_.socket_path);
      break;
    case SocketState::kAbsent:
      break;
  }
  shm_name_ = shm::Segment::name_for_socket(cfg_.socket_path);
  cfg_.caps.jobs_per_worker = cfg_.jobs_per_worker();
  // Roles beat at least 4 times per hang timeout, so an idle one is never taken for hung.
  if (cfg_.hang_timeout_s > 0)
    cfg_.caps.tick_ms = uint32_t(std::clamp(cfg_.hang_timeout_s * 1000 / 4, 10.0, 1000.0));
  if (shm::Segment::remove(shm_name_))
    spdlog::warn("removed stale shared memory /dev/shm/{} left by an earlier instance", shm_name_);

  auto sock = listen_on(cfg_.socket_path);
  if (!sock) return sock.error();
  listen_ = std::move(sock).value();
  if (Status st = make_spool(); !st) return st;
  auto seg = shm::Segment::create(shm_name_, cfg_.caps);
  if (!seg) return seg.error();
  seg_.emplace(std::move(seg).value());
  auto cgroups = isolation::Cgroups::create(shm_name_, cfg_.cgroups);
  if (!cgroups)
    return Error{cgroups.error().code, "--cgroups always: " + cgroups.error().message()};
  cgroups_ = std::move(cgroups).value();
  if (cgroups_.enabled()) {
    spdlog::info("{} run in cgroups of their own ({})", cgroups_.scope(), cgroups_.isolation());
  } else {
    spdlog::info("jobs are isolated by process group only: {}", cgroups_.why_not());
    if (cfg_.default_limits.memory_bytes || cfg_.max_limits.memory_bytes)
      return Error{ENOTSUP, "memory_bytes limits need per-job cgroups: " + cgroups_.why_not()};
  }

  auto efd = [](UniqueFd& out) -> Status {
    auto fd = sys("eventfd", [] { return ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); });
    if (!fd) return fd.error();
    out.reset(*fd);
    return {};
  };
  if (Status s = efd(submit_efd_); !s) return s;
  if (Status s = efd(frontend_efd_); !s) return s;
  worker_efds_.resize(cfg_.caps.workers);
  workers_.resize(cfg_.caps.workers);
  for (uint32_t i = 0; i < cfg_.caps.workers; ++i) {
    if (Status s = efd(worker_efds_[i]); !s) return s;
    workers_[i].name = "worker " + std::to_string(i);
    // A worker's jobs without cgroups of their own share its cgroup, and
    // their OOM kills would count as its own: only with every job in its own
    // cgroup does a worker get one.
    if (cgroups_.every_job()) workers_[i].cgroup = "worker-" + std::to_string(i);
  }
  frontend_.name = "frontend";
  frontend_.cgroup = "frontend";
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
  return {"--shm", shm_name_, "--log-level", cfg_.log_level};
}

pid_t Supervisor::spawn(const std::vector<std::string>& args, const std::vector<int>& fds,
                        Role& role) {
  // Its own memory cgroup, where there are cgroups: tells its OOM kills apart.
  std::string procs = cgroups_.prepare_role(role.cgroup);
  role.oom_base = cgroups_.role_oom_kills(role.cgroup);
  std::vector<const char*> argv;
  argv.push_back("shell-poold");
  for (const auto& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();  // the supervisor's heap is small: fork is cheap here
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) _exit(1);
    if (!procs.empty()) {  // best effort: without it only its OOM kills go uncounted
      int fd = ::open(procs.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd >= 0) [[maybe_unused]]
        ssize_t w = ::write(fd, "0", 1);  // exec closes fd
    }
    // Move the inherited fds out of the way first, then to their fixed numbers
    // (dup2 clears FD_CLOEXEC on the copies; everything else closes on exec).
    int tmp[128];
    for (size_t i = 0; i < fds.size(); ++i) tmp[i] = ::fcntl(fds[i], F_DUPFD_CLOEXEC, 256);
    for (size_t i = 0; i < fds.size(); ++i) ::dup2(tmp[i], kChildFdBase + int(i));
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv("/proc/self/exe", const_cast<char* const*>(argv.data()));
    _exit(127);
  }
  if (pid < 0) spdlog::error("fork: {}", std::strerror(errno));
  return pid;
}

void Supervisor::start_frontend() {
  seg_->header().frontend_incarnation.fetch_add(1);
  std::vector<int> fds{listen_.get(), frontend_efd_.get(), submit_efd_.get()};
  std::string worker_fds;
  for (uint32_t i = 0; i < cfg_.caps.workers; ++i) {
    fds.push_back(worker_efds_[i].get());
    worker_fds += (i ? "," : "") + std::to_string(kChildFdBase + 3 + int(i));
  }
  auto args = common_args();
  args.insert(args.begin(), "frontend");
  for (std::string a : {"--listen-fd", "3", "--frontend-fd", "4", "--submit-fd", "5"})
    args.push_back(a);
  args.insert(
      args.end(),
      {"--worker-fds", worker_fds, "--max-output", std::to_string(cfg_.max_output_bytes),
       "--output-budget", std::to_string(cfg_.output_budget), "--max-connections",
       std::to_string(cfg_.max_connections), "--max-line", std::to_string(cfg_.max_line_bytes),
       "--default-timeout", std::to_string(cfg_.default_timeout_s), "--kill-grace-ms",
       std::to_string(cfg_.kill_grace_ms), "--max-inflight", std::to_string(cfg_.max_inflight)});
  for (const std::string& name : cfg_.env_pass) args.insert(args.end(), {"--env-pass", name});
  for (uint32_t uid : cfg_.allow_uids)
    args.insert(args.end(), {"--allow-uid", std::to_string(uid)});
  add_limit_args(args, "--limit", cfg_.default_limits);
  add_limit_args(args, "--max-limit", cfg_.max_limits);
  args.insert(args.end(), {"--max-timeout", std::to_string(cfg_.max_timeout_s), "--isolation",
                           cgroups_.isolation()});
  args.insert(args.end(),
              {"--spool-dir", spool_dir_, "--retain-seconds", std::to_string(cfg_.retain_s),
               "--job-output-bytes", std::to_string(cfg_.job_spool_bytes)});
  args.insert(args.end(),
              {"--isolation-note",
               cgroups_.enabled() ? "cgroups for " + cgroups_.scope() : cgroups_.why_not()});
  frontend_.pid = spawn(args, fds, frontend_);
  frontend_.started_ns = monotonic_ns();
  frontend_.hang_killed = false;
  frontend_stop_sent_ = false;
  if (frontend_.pid < 0) {
    frontend_.pid = 0;
    return schedule_restart(frontend_);
  }
  spdlog::info("started frontend (pid {})", frontend_.pid);
}

void Supervisor::start_worker(uint32_t i) {
  shm::WorkerRecord& rec = seg_->worker(i);
  rec.incarnation.fetch_add(1);
  rec.running.store(0);
  auto args = common_args();
  args.insert(args.begin(), {"worker", "--index", std::to_string(i)});
  if (cfg_.recycle_after) {  // up to 10 % jitter, so workers do not recycle at once
    uint64_t n = cfg_.recycle_after + uint64_t(std::rand()) % (cfg_.recycle_after / 10 + 1);
    args.insert(args.end(), {"--recycle-after", std::to_string(n)});
  }
  args.insert(args.end(), {"--kill-grace-ms", std::to_string(cfg_.kill_grace_ms), "--submit-fd",
                           "3", "--bell-fd", "4", "--frontend-fd", "5"});
  if (cgroups_.enabled()) args.insert(args.end(), {"--cgroups", cgroups_.encode()});
  args.insert(args.end(), {"--spool-dir", spool_dir_});
  workers_[i].pid =
      spawn(args, {submit_efd_.get(), worker_efds_[i].get(), frontend_efd_.get()}, workers_[i]);
  workers_[i].started_ns = monotonic_ns();
  workers_[i].hang_killed = false;
  if (workers_[i].pid < 0) {
    workers_[i].pid = 0;
    return schedule_restart(workers_[i]);
  }
  rec.pid.store(workers_[i].pid);
  spdlog::info("started worker {} (pid {})", i, workers_[i].pid);
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
    if (pid == frontend_.pid) {
      on_death(frontend_, status, true, 0);
      continue;
    }
    for (uint32_t i = 0; i < workers_.size(); ++i)
      if (pid == workers_[i].pid) on_death(workers_[i], status, false, i);
    // Anything else is an adopted orphan we killed: reaped, nothing to do.
  }
}

void Supervisor::on_death(Role& role, int status, bool is_frontend, uint32_t index) {
  role.pid = 0;
  if (!is_frontend && WIFEXITED(status) && WEXITSTATUS(status) == worker::kExitRecycled) {
    // A planned exit with no job left: restart now, no repair, no crash count.
    seg_->worker(index).pid.store(0);
    seg_->header().counters.recycles.fetch_add(1);
    if (phase_ != Phase::kStopping) role.restart_at_ns = monotonic_ns();
    return;
  }
  bool expected = phase_ == Phase::kStopping;
  role.oom_killed = killed_by_oom(role, status);
  auto log = expected ? spdlog::level::info : spdlog::level::warn;
  spdlog::log(log, "{} {}", role.name, death_cause(role, status));
  if (is_frontend) {
    shm::RepairReport r = shm::repair_after_frontend_death(*seg_);
    if (r.cancelled || r.released)
      spdlog::log(log, "frontend repair: {} jobs cancelled, {} slots freed", r.cancelled,
                  r.released);
    if (!expected) {
      seg_->header().counters.frontend_restarts.fetch_add(1);
      count_death(role, status);
    }
  } else {
    seg_->worker(index).pid.store(0);
    kill_job_cgroups(index);
    std::string why = "lost: worker " + std::to_string(index) + " " + death_cause(role, status) +
                      " while the job ran";
    shm::RepairReport r = shm::repair_after_worker_death(*seg_, index, why);
    sweep_adopted();
    if (r.lost || r.requeued)
      spdlog::log(log, "worker {} repair: {} jobs lost, {} requeued", index, r.lost, r.requeued);
    if (!expected) {
      seg_->header().counters.worker_restarts.fetch_add(1);
      count_death(role, status);
    }
    // Stopping: no worker will run what the repair requeued.
    if (phase_ == Phase::kStopping)
      shm::cancel_queued(*seg_, "cancelled: the daemon is shutting down");
  }
  ring_all();
  // While draining, running and requeued jobs still need their workers; a
  // frontend is not restarted then (the listening socket is already closed).
  if (phase_ == Phase::kRunning || (phase_ == Phase::kDraining && !is_frontend))
    schedule_restart(role);
}

// Deaths by cause, for `health` (hang kills are counted when we kill).
void Supervisor::count_death(const Role& role, int status) const {
  auto& c = seg_->header().counters;
  if (role.hang_killed) return;
  if (role.oom_killed) return (void)c.deaths_oom.fetch_add(1);
  (WIFSIGNALED(status) ? c.deaths_signal : c.deaths_exit).fetch_add(1);
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
  const auto limit = uint64_t(cfg_.hang_timeout_s * 1e9);
  auto check = [&](Role& role, uint64_t beat) {
    if (role.pid <= 0 || role.hang_killed) return;
    uint64_t last = std::max(beat, role.started_ns);  // a beat from before the restart is stale
    if (now <= last || now - last < limit) return;
    spdlog::warn("{} (pid {}) has not beaten its heartbeat for {} ms: killing it", role.name,
                 role.pid, (now - last) / kMs);
    role.hang_killed = true;
    seg_->header().counters.hang_kills.fetch_add(1);
    ::kill(role.pid, SIGKILL);
  };
  check(frontend_, seg_->header().frontend_heartbeat_ns.load());
  for (uint32_t i = 0; i < workers_.size(); ++i)
    check(workers_[i], seg_->worker(i).heartbeat_ns.load());
}

void Supervisor::schedule_restart(Role& role) {
  uint64_t now = monotonic_ns();
  if (now - role.started_ns > kHealthyNs) role.crashes.clear();
  uint64_t window = uint64_t(cfg_.restart_window_s * 1e9);
  while (!role.crashes.empty() && now - role.crashes.front() > window) role.crashes.pop_front();
  role.crashes.push_back(now);
  if (role.crashes.size() > cfg_.max_restarts) {
    spdlog::critical("{} died {} times within {} s: giving up (crash loop)", role.name,
                     role.crashes.size(), cfg_.restart_window_s);
    exit_code_ = 1;
    begin_stop();
    return;
  }
  // First restart at once; then 100 ms doubling up to 5 s.
  size_t n = role.crashes.size();
  uint64_t delay =
      n <= 1 ? 0 : std::min<uint64_t>(100 * kMs << std::min<size_t>(n - 2, 6), 5000 * kMs);
  delay += delay ? uint64_t(std::rand()) % (delay / 4 + 1) : 0;  // jitter: restarts do not align
  role.restart_at_ns = now + delay;
  if (delay) spdlog::info("restarting {} in {} ms", role.name, delay / kMs);
}

void Supervisor::begin_drain() {
  if (phase_ != Phase::kRunning) return;
  phase_ = Phase::kDraining;
  spdlog::info("draining: no new jobs; running jobs have {} s to finish", cfg_.drain_timeout_s);
  seg_->header().draining.store(1);
  ::unlink(cfg_.socket_path.c_str());  // new clients see the daemon gone at once
  listen_.reset();
  drain_deadline_ns_ = monotonic_ns() + uint64_t(cfg_.drain_timeout_s * 1e9);
  ring_all();
}

void Supervisor::begin_stop() {
  if (phase_ == Phase::kStopping) return;
  if (phase_ == Phase::kRunning) {
    seg_->header().draining.store(1);
    ::unlink(cfg_.socket_path.c_str());
    listen_.reset();
  }
  phase_ = Phase::kStopping;
  uint32_t n = shm::cancel_queued(*seg_, "cancelled: the daemon is shutting down");
  spdlog::info("stopping: {} queued jobs cancelled, stopping workers", n);
  for (Role& w : workers_) {
    w.restart_at_ns = 0;
    if (w.pid > 0) ::kill(w.pid, SIGTERM);
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
    if (w.owner == index + 1 && w.state == shm::JobState::kRunning) cgroups_.kill(i);
  }
}

void Supervisor::sweep_adopted() {
  std::string path = "/proc/self/task/" + std::to_string(::getpid()) + "/children";
  std::ifstream in(path);
  pid_t pid;
  while (in >> pid) {
    if (pid == frontend_.pid) continue;
    if (std::any_of(workers_.begin(), workers_.end(), [&](const Role& w) { return w.pid == pid; }))
      continue;
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
  }
}

bool Supervisor::children_alive() const {
  return frontend_.pid > 0 ||
         std::any_of(workers_.begin(), workers_.end(), [](const Role& w) { return w.pid > 0; });
}

// The instance's own spool directory, "<shm name>.spool" in --spool-dir
// (default: the socket's directory): two daemons never share one, and the
// daemon removes only what it made.
Status Supervisor::make_spool() {
  std::string parent = cfg_.spool_dir;
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

int Supervisor::run() {
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, s);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);

  if (Status s = setup(); !s) {
    spdlog::critical("{}", s.error().message());
    cgroups_.remove();
    if (seg_) shm::Segment::remove(shm_name_);
    if (!spool_dir_.empty()) ::rmdir(spool_dir_.c_str());
    if (listen_) ::unlink(cfg_.socket_path.c_str());
    return 1;
  }
  spdlog::info("listening on {} with {} workers, up to {} jobs at once, queue {}, shm {} ({} MiB)",
               cfg_.socket_path, cfg_.caps.workers, cfg_.caps.jobs_per_worker * cfg_.caps.workers,
               cfg_.caps.job_slots, shm_name_, seg_->size() >> 20);
  for (uint32_t i = 0; i < workers_.size(); ++i) start_worker(i);
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
    uint64_t wait = next - now;
    timespec ts{time_t(wait / 1'000'000'000u), long(wait % 1'000'000'000u)};
    siginfo_t info;
    int sig = ::sigtimedwait(&mask, &info, &ts);
    if (sig == SIGCHLD) reap();
    if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
      if (phase_ == Phase::kRunning) {
        spdlog::info("{} received", sigabbrev_np(sig));
        begin_drain();
      } else {
        spdlog::info("{} received again: stopping now", sigabbrev_np(sig));
        begin_stop();
      }
    }
    now = monotonic_ns();
    check_hangs(now);
    if (phase_ != Phase::kStopping) {
      if (phase_ == Phase::kRunning && frontend_.restart_at_ns && now >= frontend_.restart_at_ns) {
        frontend_.restart_at_ns = 0;
        start_frontend();
      }
      for (uint32_t i = 0; i < workers_.size(); ++i)
        if (workers_[i].restart_at_ns && now >= workers_[i].restart_at_ns) {
          workers_[i].restart_at_ns = 0;
          start_worker(i);
        }
    }
    if (phase_ == Phase::kDraining &&
        (shm::unfinished_jobs(*seg_) == 0 || now >= drain_deadline_ns_))
      begin_stop();
    if (phase_ == Phase::kStopping) {
      bool workers_gone =
          std::none_of(workers_.begin(), workers_.end(), [](const Role& w) { return w.pid > 0; });
      // The frontend goes last, so it can still tell clients how their jobs ended.
      if (workers_gone && frontend_.pid > 0 && !frontend_stop_sent_) {
        frontend_stop_sent_ = true;
        ring_all();
        ::kill(frontend_.pid, SIGTERM);
      }
      if (!children_alive()) break;
      if (now >= kill_deadline_ns_) {
        spdlog::warn("children still alive after {} ms: killing them", kStopKillAfterNs / kMs);
        if (frontend_.pid > 0) ::kill(frontend_.pid, SIGKILL);
        for (Role& w : workers_)
          if (w.pid > 0) ::kill(w.pid, SIGKILL);
        kill_deadline_ns_ = now + kStopKillAfterNs;
      }
    }
  }
  cleanup();
  spdlog::info("stopped");
  return exit_code_;
}

}  // namespace

int run(const Config& config) {
  return Supervisor(config).run();
}

}  // namespace sp::supervisor
