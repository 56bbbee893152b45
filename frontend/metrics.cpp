#include "frontend/metrics.h"

#include <spdlog/fmt/fmt.h>

#include "common/clock.h"
#include "shm/metrics.h"

namespace sp::frontend {

namespace {

const char* type_name(Exposition::Type t) {
  switch (t) {
    case Exposition::Type::kCounter:
      return "counter";
    case Exposition::Type::kGauge:
      return "gauge";
    case Exposition::Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// A worker slot's state as `shell_pool_workers{state}` counts it.
enum WorkerState : uint32_t { kIdle, kBusy, kStarting, kDown, kRetiring, kWorkerStates };
constexpr const char* kWorkerStateNames[kWorkerStates] = {"idle", "busy", "starting", "down",
                                                          "retiring"};

WorkerState worker_state(const shm::WorkerSlot& w) {
  if (w.use.load() == shm::WorkerUse::kRetiring) return kRetiring;
  if (!w.pid.load()) return kDown;  // dead, waiting for its restart
  if (w.ready.load() != w.incarnation.load()) return kStarting;
  return w.running.load() ? kBusy : kIdle;
}

void job_families(Exposition& e, const shm::Segment& seg) {
  const shm::Counters& c = seg.header().counters;
  using T = Exposition::Type;
  e.family("shell_pool_jobs_submitted_total", T::kCounter, "Jobs put on the queue.");
  e.sample("", "", c.submitted.load());
  e.family("shell_pool_jobs_started_total", T::kCounter, "Jobs whose command was started.");
  e.sample("", "", c.started.load());
  e.family("shell_pool_jobs_finished_total", T::kCounter,
           "Jobs that ended, by their terminal status.");
  for (auto [status, n] : {std::pair{"exited", &c.finished},
                           {"timed_out", &c.timed_out},
                           {"cancelled", &c.cancelled},
                           {"failed", &c.failed},
                           {"lost", &c.lost}})
    e.sample("", fmt::format("status=\"{}\"", status), n->load());
  e.family("shell_pool_jobs_requeued_total", T::kCounter,
           "Jobs put back on the queue because their worker died before it started them.");
  e.sample("", "", c.requeued.load());
  e.family("shell_pool_job_oom_kills_total", T::kCounter,
           "Jobs killed by the memory limit of their cgroup.");
  e.sample("", "", c.oom_kills.load());
  const shm::Metrics& m = seg.header().metrics;
  e.histogram("shell_pool_job_duration_seconds",
              "From a job's start to its end, for jobs that were started.", m.job_duration,
              shm::kJobDurationBounds.data());
  e.histogram("shell_pool_queue_wait_seconds",
              "From a job's enqueue to its start (a plan step: from when its turn came).",
              m.queue_wait, shm::kQueueWaitBounds.data());
  const JobCounts jobs = count_jobs(seg.jobs());
  e.family("shell_pool_jobs_queued", T::kGauge, "Jobs waiting for a worker.");
  e.sample("", "", uint64_t(jobs.queued));
  e.family("shell_pool_jobs_running", T::kGauge, "Jobs a worker has taken and runs.");
  e.sample("", "", uint64_t(jobs.running));
  e.family("shell_pool_queue_capacity", T::kGauge, "Jobs that can be queued or run at once.");
  e.sample("", "", uint64_t(seg.caps().job_slots));
  const shm::OutputRings rings = seg.output_rings();
  e.family("shell_pool_output_rings", T::kGauge,
           "Output rings in shared memory: all of them, and those jobs hold now.");
  e.sample("", "state=\"total\"", uint64_t(rings.count()));
  e.sample("", "state=\"held\"", uint64_t(rings.in_use()));
  e.family("shell_pool_output_bytes_total", T::kCounter, "Bytes jobs wrote, by stream.");
  e.sample("", "stream=\"stdout\"", m.output_bytes[0].load());
  e.sample("", "stream=\"stderr\"", m.output_bytes[1].load());
}

void role_families(Exposition& e, const shm::Segment& seg) {
  using T = Exposition::Type;
  uint64_t states[kWorkerStates] = {};
  for (uint32_t i = 0; i < shm::kWorkerSlots; ++i) {
    const shm::WorkerSlot& w = seg.worker(i);
    const shm::WorkerUse use = w.use.load();
    if (use != shm::WorkerUse::kUnused && use != shm::WorkerUse::kRemote) ++states[worker_state(w)];
  }
  e.family("shell_pool_workers", T::kGauge,
           "Worker processes by state (busy: running jobs; down: waiting to be restarted; "
           "retiring: replaced by a reload, finishing its jobs).");
  for (uint32_t s = 0; s < kWorkerStates; ++s)
    e.sample("", fmt::format("state=\"{}\"", kWorkerStateNames[s]), states[s]);
  const shm::Counters& c = seg.header().counters;
  e.family("shell_pool_role_restarts_total", T::kCounter,
           "Frontend and worker processes that died and were restarted, by cause (recycle: "
           "replaced after --recycle-after jobs).");
  for (uint32_t r = 0; r < shm::kRoleKinds; ++r)
    for (uint32_t d = 0; d < shm::kDeathCauses; ++d)
      e.sample("",
               fmt::format("role=\"{}\",cause=\"{}\"", shm::role_kind_name(shm::RoleKind(r)),
                           shm::death_cause_name(shm::DeathCause(d))),
               c.role_deaths[r][d].load());
  e.sample("", "role=\"worker\",cause=\"recycle\"", c.recycles.load());
  e.family("shell_pool_boot_failures_total", T::kCounter,
           "Roles that failed before they were ready; too many in a row end the daemon.");
  e.sample("", "", c.boot_failures.load());
  const shm::ReloadState& r = seg.header().reload;
  e.family("shell_pool_reloads_total", T::kCounter, "Configuration reloads, by result.");
  e.sample("", "result=\"ok\"", r.reloads_ok.load());
  e.sample("", "result=\"failed\"", r.reloads_failed.load());
}

}  // namespace

JobCounts count_jobs(const shm::JobTable& jobs) {
  JobCounts n;
  for (uint32_t i = 0; i < jobs.size(); ++i) {
    shm::JobState s = jobs.load(i).state;
    n.queued += s == shm::JobState::kQueued;
    n.running += s == shm::JobState::kClaimed || s == shm::JobState::kRunning;
  }
  return n;
}

void Exposition::family(std::string_view name, Type type, std::string_view help) {
  name_ = name;
  fmt::format_to(std::back_inserter(text_), "# HELP {} {}\n# TYPE {} {}\n", name, help, name,
                 type_name(type));
}

void Exposition::start_sample(std::string_view suffix, std::string_view labels) {
  text_ += name_;
  text_ += suffix;
  if (!labels.empty()) fmt::format_to(std::back_inserter(text_), "{{{}}}", labels);
  text_ += ' ';
}

void Exposition::sample(std::string_view suffix, std::string_view labels, uint64_t value) {
  start_sample(suffix, labels);
  fmt::format_to(std::back_inserter(text_), "{}\n", value);
}

void Exposition::sample(std::string_view suffix, std::string_view labels, double value) {
  start_sample(suffix, labels);
  fmt::format_to(std::back_inserter(text_), "{}\n", value);
}

void Exposition::histogram(std::string_view name, std::string_view help, const shm::Histogram& h,
                           const uint64_t* bounds_ns) {
  family(name, Type::kHistogram, help);
  uint64_t cumulative = 0;
  for (uint32_t i = 0; i + 1 < shm::kHistogramBuckets; ++i) {
    cumulative += h.counts[i].load(std::memory_order_relaxed);
    sample("_bucket", fmt::format("le=\"{}\"", double(bounds_ns[i]) / 1e9), cumulative);
  }
  cumulative += h.counts[shm::kHistogramBuckets - 1].load(std::memory_order_relaxed);
  sample("_bucket", "le=\"+Inf\"", cumulative);
  sample("_sum", "", double(h.sum_ns.load(std::memory_order_relaxed)) / 1e9);
  sample("_count", "", cumulative);
}

std::string render_metrics(const shm::Segment& seg, const FrontendGauges& g) {
  Exposition e;
  using T = Exposition::Type;
  job_families(e, seg);
  role_families(e, seg);
  const shm::Header& h = seg.header();
  e.family("shell_pool_connections", T::kGauge, "Client connections open.");
  e.sample("", "", g.connections);
  e.family("shell_pool_sessions", T::kGauge, "Sessions.");
  e.sample("", "", g.sessions);
  e.family("shell_pool_detached_jobs", T::kGauge, "Detached jobs kept, unfinished and finished.");
  e.sample("", "", g.detached_jobs);
  e.family("shell_pool_spool_used_bytes", T::kGauge, "Disk the detached jobs' output takes.");
  e.sample("", "", seg.spool_budget().used());
  e.family("shell_pool_output_buffered_bytes", T::kGauge,
           "Output the frontend holds for clients (see --output-budget).");
  e.sample("", "", g.output_buffered_bytes);
  e.family("shell_pool_config_generation", T::kGauge,
           "Generation of the configuration in use (1 at start, one more per applied reload).");
  e.sample("", "", g.config_generation);
  e.family("shell_pool_draining", T::kGauge, "1 while the daemon drains to stop.");
  e.sample("", "", uint64_t(h.draining.load() != 0));
  e.family("shell_pool_start_time_seconds", T::kGauge, "When the daemon started, Unix time.");
  e.sample("", "", double(h.started_unix_ms.load()) / 1e3);
  return e.take();
}

}  // namespace sp::frontend
