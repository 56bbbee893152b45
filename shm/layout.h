// Layout of the shell-pool shared-memory segment: plain data only.
//
// Every struct here is standard-layout, holds no pointers, no heap objects and
// no locks (DESIGN.md, "Shared memory": Boost/pthread locks are not crash-safe).
// Words that several processes change are lock-free atomics changed by single
// CAS steps that carry an owner, so the supervisor can repair after any death.
// The code that acts on these structs lives beside them (ring.h, job_table.h,
// output.h, doorbell.h); this file only fixes the bytes. See docs/shm-layout.md.
//
// Region order after the header (all 64-byte aligned, sizes from Capacities):
//   WorkerSlot[kWorkerSlots] | JobSlot[job_slots] | ring cells[ring_cells] |
//   SessionSlot[session_slots] | session env blobs | JobRecord[job_records] |
//   spec arenas | output rings[output_rings] | input buffers |
//   ServiceSlot[service_slots] | service spec blobs | remote ring cells[ring_cells] |
//   HostSlot[host_slots] | output ring owners[output_rings]
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <utility>

namespace sp::shm {

inline constexpr uint64_t kMagic = 0x4d48534c4f4f5053ULL;  // "SPOOLSHM" little-endian
inline constexpr uint32_t kLayoutVersion = 18;  // bump with the pins at the end of this file
inline constexpr uint32_t kMaxWorkers = 64;
// Worker slots: room for a serving generation and a retiring one at once
// (a live reload that changes --workers), and the remote worker's, the last
// (it runs the jobs on remote hosts: remote/). Owner stamps (index + 1) fit
// a byte.
inline constexpr uint32_t kWorkerSlots = 2 * kMaxWorkers + 1;
inline constexpr uint32_t kRemoteWorker = kWorkerSlots - 1;
// Owner stamp of a queued job taken off the queue by the frontend or the
// supervisor (to cancel it) rather than by a worker.
inline constexpr uint8_t kOwnerController = 0xff;

// Capacities are configuration; defaults are documented in docs/shm-layout.md.
struct Capacities {
  uint32_t job_slots = 1024;          // queued + running jobs at once (queue capacity)
  uint32_t spec_bytes = 16 * 1024;    // per-job Cap'n Proto spec arena
  uint32_t output_bytes = 64 * 1024;  // per output ring (stdout+stderr records): a pipe's worth
  uint32_t session_slots = 64;
  uint32_t session_env_bytes = 8 * 1024;  // per-session "K=V\0K=V\0..." blob
  uint32_t job_records = 1024;            // detached jobs kept (unfinished + retained)
  uint32_t workers = 2;
  uint32_t jobs_per_worker = 64;            // jobs one worker runs at once
  uint32_t tick_ms = 1000;                  // idle wake-up and heartbeat period of the roles
  uint32_t input_bytes = 8 * 1024;          // per-job stdin ring (frontend -> worker)
  uint64_t spool_bytes = 256ull << 20;      // detached jobs' output files, all together
  uint32_t service_slots = 64;              // supervised services at once, all sessions together
  uint32_t services_per_session = 16;       // of which one session may hold
  uint32_t service_spec_bytes = 16 * 1024;  // per-service spec (the JSON of its params)
  uint32_t host_slots = 64;                 // remote hosts known at once
  uint32_t remote_jobs = 256;               // jobs the remote worker runs at once, all hosts
  // Output rings, taken by running jobs (local, remote, services) when their
  // first output comes and held until their slot is freed (output.h,
  // OutputRings); a job that finds none free stops reading its output until
  // one is (its command blocks once its pipe fills).
  uint32_t output_rings = 256;
};

// Resource limits of a job; 0: not set.
struct Rlimits {
  uint64_t cpu_seconds = 0;
  uint64_t address_space_bytes = 0;
  uint64_t open_files = 0;
  uint64_t processes = 0;
  uint64_t file_size_bytes = 0;
  uint64_t memory_bytes = 0;  // not an rlimit: the job cgroup's memory limit
};

// The limits by the names requests and flags use ("limits": {"processes": 64},
// --limit processes=64).
inline constexpr std::pair<std::string_view, uint64_t Rlimits::*> kLimitNames[] = {
    {"cpu_seconds", &Rlimits::cpu_seconds},
    {"address_space_bytes", &Rlimits::address_space_bytes},
    {"open_files", &Rlimits::open_files},
    {"processes", &Rlimits::processes},
    {"file_size_bytes", &Rlimits::file_size_bytes},
    {"memory_bytes", &Rlimits::memory_bytes}};

// How jobs are kept apart: the supervisor finds out at start
// (isolation/cgroups.h); the frontend reports it and refuses memory limits
// without cgroups.
enum class Isolation : uint32_t { kProcessGroup = 0, kCgroupV1 = 1, kCgroupV2 = 2 };

inline constexpr uint32_t kConfigPathBytes = 4096;  // PATH_MAX, with its NUL
inline constexpr uint32_t kEnvPassBytes = 2048;     // --env-pass names, NUL after each
inline constexpr uint32_t kMaxAllowUids = 64;       // --allow-uid entries
inline constexpr uint32_t kNoteBytes = 512;
inline constexpr uint32_t kConfigHostsBytes = 16384;  // --host specs, a newline after each

// The daemon's configuration as its roles see it: written by the supervisor
// into the header before it starts any role, and again at each live reload
// under a sequence lock (ReloadState::config_seq; role_config.h reads it).
// Each default is here and nowhere else; shell-poold's flags write into it
// (supervisor/flags.cpp), where the bounds of its lists are checked.
// Strings are NUL-terminated.
struct RoleConfig {
  // Jobs.
  uint64_t max_output_bytes = 16ull << 20;  // execute: kept per stream, then truncated
  uint64_t job_spool_bytes = 16ull << 20;   // detached: output kept per job (both streams)
  double default_timeout_s = 0;             // for jobs that give none; 0: none
  double max_timeout_s = 0;                 // ceiling for a job's timeout; 0: none
  uint32_t kill_grace_ms = 2000;            // TERM -> KILL on timeout and cancel
  Isolation isolation = Isolation::kProcessGroup;
  Rlimits default_limits;  // for jobs that set none; 0: none
  Rlimits max_limits;      // ceilings; also the default where no default is set
  // The frontend.
  uint64_t output_budget = 256ull << 20;  // execute output the frontend holds, all jobs
  uint64_t max_line_bytes = 1ull << 20;   // longest request line
  uint32_t max_connections = 1024;
  uint32_t max_inflight = 256;  // unanswered requests per connection before it is not read
  double retain_s = 3600;       // finished detached jobs are kept this long
  uint32_t allow_uid_count = 0;
  uint32_t allow_uids[kMaxAllowUids] = {};  // peers allowed besides the daemon's uid and root
  char env_pass[kEnvPassBytes] = {};        // daemon env names jobs also get
  char isolation_note[kNoteBytes] = {};     // which jobs get cgroups, or why none do
  // The workers and the frontend.
  char spool_dir[kConfigPathBytes] = {};  // the instance's spool directory
  int32_t log_level = 2;                  // spdlog::level::level_enum (2: info)
  // The frontend.
  char files_root[kConfigPathBytes] = {};  // --files-root, absolute and resolved
  // The remote worker: the daemon's own known_hosts file (host keys it
  // trusts and records), and one it only reads ("": none).
  char known_hosts[kConfigPathBytes] = {};
  char user_known_hosts[kConfigPathBytes] = {};
  // The frontend: the hosts of the configuration (--host), which it adds to
  // the host table at start and after each reload (frontend/hosts.h).
  char hosts[kConfigHostsBytes] = {};
};

// Who a role is and why it was restarted: the rows and columns of
// Counters::role_deaths (metrics: shell_pool_role_restarts_total{role,cause}).
enum class RoleKind : uint32_t { kFrontend = 0, kWorker = 1 };
inline constexpr uint32_t kRoleKinds = 2;
enum class DeathCause : uint32_t {
  kCrash = 0,        // killed by a signal we did not send
  kExit = 1,         // exited on its own
  kOom = 2,          // the kernel's OOM killer
  kHang = 3,         // we killed it for a stale heartbeat
  kStartFailed = 4,  // it could not be started at all (fork or exec failed)
};
inline constexpr uint32_t kDeathCauses = 5;

// Counters reported by `health` and `metrics`: monotonic, relaxed, any
// process may add.
struct Counters {
  std::atomic<uint64_t> submitted;
  std::atomic<uint64_t> started;
  std::atomic<uint64_t> finished;  // exited
  std::atomic<uint64_t> failed;
  std::atomic<uint64_t> timed_out;
  std::atomic<uint64_t> cancelled;
  std::atomic<uint64_t> lost;
  std::atomic<uint64_t> requeued;
  std::atomic<uint64_t> boot_failures;  // roles that died before they were ready by their own
                                        // doing, and roles that could not be started at all
  std::atomic<uint64_t> recycles;       // workers replaced by --recycle-after
  std::atomic<uint64_t> oom_kills;      // jobs killed by their cgroup's memory limit
  // Unplanned deaths (each one restarted unless the daemon stops), written by
  // the supervisor: [RoleKind][DeathCause].
  std::atomic<uint64_t> role_deaths[kRoleKinds][kDeathCauses];
};

// A histogram of durations: counts[i] holds the observations in
// (bound[i-1], bound[i]] of its bounds (shm/metrics.h), the last one those
// above every bound. Not cumulative, and no separate count: a reader sums
// what it read, so +Inf always equals _count whatever writers are doing.
inline constexpr uint32_t kHistogramBuckets = 16;
struct Histogram {
  std::atomic<uint64_t> counts[kHistogramBuckets];
  std::atomic<uint64_t> sum_ns;
};

// What `metrics` exposes beyond Counters. Relaxed adds by any process.
struct Metrics {
  Histogram job_duration;  // start to end of jobs that ran (repair.cpp: publish_terminal)
  Histogram queue_wait;    // queued to started (the worker, when it spawns)
  std::atomic<uint64_t> output_bytes[2];  // read from jobs' stdout, stderr (the workers)
};

// A doorbell is an eventfd (inherited from the supervisor) plus this word:
// the ringer writes the eventfd only when `pending` goes 0 -> 1; the sleeper
// clears it before it looks for work. After any death the supervisor writes
// every eventfd unconditionally, so a ringer killed between the two steps
// cannot leave a bell stuck.
struct alignas(64) BellWord {
  std::atomic<uint32_t> pending;
};

// How a role's last unplanned death counted (health). A role that dies after
// it reported ready is restarted forever. One that fails before it is ready
// by its own doing (an exit, a crash signal, a hang, the OOM killer, an
// exec that fails) is a boot failure and counts toward the crash-loop
// bound; one killed from outside while it starts (SIGKILL, SIGTERM...: a
// kill storm) is restarted and does not count.
enum class DeathKind : uint32_t {
  kNone = 0,
  kAfterReady = 1,
  kBootFailure = 2,
  kKilledStarting = 3
};

// Live reload: the supervisor publishes a new RoleConfig and the result of
// each reload; the frontend counts `reload` calls and waits for the answer.
inline constexpr uint32_t kReloadMessageBytes = 256;
struct ReloadState {
  std::atomic<uint64_t> config_seq;      // odd while the supervisor writes Header::config;
                                         // the config's generation is config_seq / 2
  std::atomic<uint64_t> loaded_unix_ms;  // when the config in use was loaded
  std::atomic<uint64_t> requested;       // `reload` calls so far (the frontend adds, then SIGHUPs)
  std::atomic<uint64_t> answered;        // requests the last finished reload covered (release:
                                         // after the fields below)
  std::atomic<uint64_t> reloads_ok, reloads_failed;
  std::atomic<uint64_t> last_unix_ms;      // when the last reload ended; 0: none yet
  std::atomic<uint32_t> last_ok;           // 1: it applied
  char last_message[kReloadMessageBytes];  // what it did or why it failed; NUL-terminated
};

// What a worker slot is used for. A retiring worker takes no new jobs and
// exits (recycled) once its jobs have ended; it is not restarted.
// The remote worker's slot (kRemoteWorker) is kRemote from the start.
enum class WorkerUse : uint32_t { kUnused = 0, kServing = 1, kRetiring = 2, kRemote = 3 };

struct alignas(64) Header {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t header_bytes;
  uint64_t total_bytes;
  Capacities caps;
  RoleConfig config;
  uint32_t ring_cells;  // power of two >= 2 * job_slots
  uint64_t workers_off, jobs_off, ring_off, sessions_off, session_envs_off, records_off, specs_off,
      outputs_off, inputs_off;
  std::atomic<uint64_t> spool_used;  // bytes spool files hold (workers add, frontend frees)
  std::atomic<uint32_t> frontend_incarnation;   // bumped by the supervisor before each start
  std::atomic<uint32_t> draining;               // 1: shutting down, accept no new jobs
  std::atomic<uint64_t> next_job_id;            // daemon-wide job ids, fetch_add by the frontend
  std::atomic<uint64_t> frontend_heartbeat_ns;  // CLOCK_MONOTONIC of the frontend's last loop turn
  std::atomic<uint64_t> started_unix_ms;        // when the supervisor created the segment
  std::atomic<uint32_t> frontend_ready;         // the frontend_incarnation that finished its start
  std::atomic<DeathKind> frontend_last_death;   // written by the supervisor
  BellWord frontend_bell;                       // workers/supervisor -> frontend
  BellWord submit_bell;                         // frontend/supervisor -> any idle worker
  alignas(64) std::atomic<uint64_t> ring_head;  // next position to consume
  alignas(64) std::atomic<uint64_t> ring_tail;  // next position to produce
  alignas(64) Counters counters;
  ReloadState reload;
  alignas(64) Metrics metrics;
  uint64_t services_off, service_specs_off;
  // Remote jobs: their own submission ring (consumer: the remote worker,
  // woken through its WorkerSlot's bell), and the host table.
  uint64_t remote_ring_off, hosts_off;
  alignas(64) std::atomic<uint64_t> remote_ring_head;
  alignas(64) std::atomic<uint64_t> remote_ring_tail;
  uint64_t output_owners_off;  // OutputRings' owner words
  // 1: a worker has a job waiting for an output ring; whoever frees a slot
  // (the frontend, after each turn) takes it and rings the workers' bells.
  std::atomic<uint32_t> rings_wanted;
};

// A job record named from shared memory: its index + 1, so that the zero a
// fresh or reset field holds means "none". The only place the + 1 is written.
struct RecordRef {
  uint32_t raw = 0;
  static constexpr RecordRef of(uint32_t index) { return {index + 1}; }
  constexpr explicit operator bool() const { return raw != 0; }
  constexpr uint32_t index() const { return raw - 1; }  // only when set
  // Set and naming one of `count` records (a field a dead writer left half
  // written may hold anything).
  constexpr bool within(uint32_t count) const { return raw && raw <= count; }
  bool operator==(const RecordRef&) const = default;
};

struct alignas(64) WorkerSlot {
  std::atomic<int32_t> pid;            // written by the supervisor; 0: not running
  std::atomic<uint32_t> incarnation;   // bumped by the supervisor before each start
  std::atomic<uint32_t> running;       // jobs this worker runs now (for stats)
  std::atomic<uint64_t> heartbeat_ns;  // CLOCK_MONOTONIC of the last loop turn
  // A spool write under way: bytes counted in Header::spool_used, for record
  // spool_record whose spool_end was spool_from. Given back by the repair
  // if the worker dies before that spool_end moved on.
  std::atomic<uint64_t> spool_reserved;
  std::atomic<uint64_t> spool_from;
  std::atomic<RecordRef> spool_record;
  std::atomic<uint32_t> ready;  // the incarnation that finished its start (the worker writes it)
  std::atomic<DeathKind> last_death;   // written by the supervisor
  std::atomic<WorkerUse> use;          // written by the supervisor
  std::atomic<uint32_t> jobs_at_once;  // this worker's bound, written before it starts
  BellWord bell;                       // frontend/supervisor -> this worker
};

// Job states. Terminal states are >= kExited.
enum class JobState : uint8_t {
  kFree = 0,
  kAllocated = 1,  // frontend is writing the spec
  kQueued = 2,     // on the ring, claimable
  kClaimed = 3,    // a worker owns it, not started yet (requeued if it dies)
  kRunning = 4,    // a process runs; pgid recorded
  kExited = 5,
  kTimedOut = 6,
  kCancelled = 7,
  kFailed = 8,  // could not start
  kLost = 9,    // its worker died while it ran
  // A plan step whose spec is written but which waits for its dependencies
  // (not on the ring); the frontend queues it, or frees it as skipped.
  kWaiting = 10,
  // Records only: a plan step that never ran (a dependency failed, the plan
  // stopped or was cancelled).
  kSkipped = 11,
};
inline constexpr bool is_terminal(JobState s) {
  return s >= JobState::kExited && s <= JobState::kLost;
}

// Control flags, set by the frontend or the supervisor, read by the worker.
inline constexpr uint32_t kControlCancel = 1u << 0;  // stop the job (TERM, grace, KILL)
inline constexpr uint32_t kControlOrphan = 1u << 1;  // its client is gone: whoever sees it
                                                     // terminal frees the slot
// A detached job: it outlives the frontend that submitted it. With a record
// (JobSlot::record) its output goes to a spool file; a service's generation
// (kControlService) has none and its output goes through the output ring to
// the service's log.
inline constexpr uint32_t kControlDetached = 1u << 2;
inline constexpr uint32_t kControlResize = 1u << 3;   // a PTY job's new size is in winsize
inline constexpr uint32_t kControlService = 1u << 4;  // with kControlDetached: a service's job
// A job on a remote host: it goes on the remote ring (also when requeued),
// and its pgid field stays 0 (its process group is on the host).
inline constexpr uint32_t kControlRemote = 1u << 5;
inline constexpr uint32_t kCancelGraceDefault = UINT32_MAX;  // JobSlot::cancel_grace_ms unset

// One job. `word` packs state | owner worker | owner incarnation | generation
// (see job_table.h); every transition is one CAS on it.
struct alignas(64) JobSlot {
  std::atomic<uint64_t> word;
  std::atomic<uint32_t> control;
  std::atomic<int32_t> pgid;  // process group of the running command, 0 if none
  uint32_t spec_words;        // size of the spec message, in 8-byte words
  uint64_t job_id;
  std::atomic<uint64_t> start_ns;  // CLOCK_MONOTONIC
  std::atomic<uint64_t> end_ns;
  uint32_t result_words;  // size of the result message
  RecordRef record;       // detached: its JobRecord; none: an attached job
  // Set by the frontend before it sets kControlCancel: the signal to stop with
  // (0: SIGTERM) and the grace before SIGKILL (kCancelGraceDefault: the spec's).
  std::atomic<uint32_t> cancel_signal;
  std::atomic<uint32_t> cancel_grace_ms;
  std::atomic<uint64_t> signals;  // bit N-1: deliver signal N to the job (frontend sets, worker
                                  // takes them with one exchange)
  alignas(8) unsigned char result[256];  // Cap'n Proto JobResult, written before the terminal CAS
  // CLOCK_MONOTONIC when the frontend queued it (a plan step: when its turn came).
  std::atomic<uint64_t> queued_ns;
  // Input ring (input.h; single writer: the frontend; single reader: the
  // worker running the job): bytes published, and the kInput* flags.
  std::atomic<uint64_t> in_head;
  std::atomic<uint32_t> in_state;
  // A PTY job's new size, rows << 16 | cols (the frontend stores it, then
  // sets kControlResize).
  std::atomic<uint32_t> winsize;
  // As `signals`, for the terminal's foreground process group of a PTY job
  // (its whole group for other jobs).
  std::atomic<uint64_t> fg_signals;
  // Output ring (single writer: the worker running the job; single reader: the frontend).
  alignas(64) std::atomic<uint64_t> out_head;  // bytes published by the writer (whole chunks)
  alignas(64) std::atomic<uint64_t> out_tail;  // bytes consumed by the reader
  std::atomic<uint32_t> out_writer_waiting;    // writer paused on a full ring
  std::atomic<uint64_t> in_tail;               // input bytes the worker took
  // The output ring the job holds, index + 1 (0: none yet; output.h,
  // OutputRings). Written by the worker before the ring's first chunk.
  std::atomic<uint32_t> out_ring;
};

// JobSlot::in_state. kInputOpen: the job's stdin is a pipe fed from its input
// ring (set by the frontend before the job is queued; else /dev/null).
// kInputEof: the frontend wrote its last byte (the worker closes the pipe
// once it has passed them on). kInputClosed: the worker closed the pipe (all
// passed on after kInputEof, or the process exited or stopped reading):
// nothing more is taken. kInputWriterWaiting: the frontend waits for room
// (the worker rings its bell when it frees some).
inline constexpr uint32_t kInputOpen = 1u << 0;
inline constexpr uint32_t kInputEof = 1u << 1;
inline constexpr uint32_t kInputClosed = 1u << 2;
inline constexpr uint32_t kInputWriterWaiting = 1u << 3;
// Set with kInputOpen: the job's stdin is one-shot ("stdin" without
// "stdin_open"), so a frontend that finds it unfinished after a restart
// ends it where it is (the bytes its predecessor held are gone).
inline constexpr uint32_t kInputOneShot = 1u << 4;
// Set with kInputOpen: the job runs on a PTY (its stdin is the terminal: EOF
// is a character there, not the end of the input).
inline constexpr uint32_t kInputTerminal = 1u << 5;

inline constexpr uint32_t kSessionIdBytes = 40;
inline constexpr uint32_t kSessionNameBytes = 128;
enum class SessionState : uint32_t { kFree = 0, kWriting = 1, kLive = 2 };

// Sessions are written by the frontend only; they live here so that they
// survive a frontend restart.
struct alignas(64) SessionSlot {
  std::atomic<uint32_t> state;
  uint32_t env_bytes;  // used bytes of this session's env blob
  uint64_t created_unix_ms;
  char id[kSessionIdBytes];      // NUL-terminated
  char name[kSessionNameBytes];  // NUL-terminated
  // The secrets' bytes after the env in the blob: each a 4-byte length,
  // then the bytes. Never shown; redacted from the session's jobs' output.
  uint32_t secret_bytes;
};

// A detached job: submitted with job_submit, kept after it ends for job_status,
// job_wait and job_output until it is forgotten or evicted. Written by the
// frontend only, except the spool words the worker running the job writes.
// While `final_state` is 0 the job lives in job slot `slot` (generation
// `slot_generation`); the frontend then copies its outcome here ("settles"
// it) and frees the slot. Output goes to the spool file "job-<seq>" in the
// spool directory (format in spool.h), never through the output ring.
inline constexpr uint32_t kJobIdBytes = 136;   // up to 64 bytes, or "<plan>/<step>" of two such
inline constexpr uint32_t kMaxPlanSteps = 64;  // steps of one plan: bits of JobRecord::deps
inline constexpr uint32_t kCommandBytes = 160;
enum class RecordState : uint32_t { kFree = 0, kWriting = 1, kLive = 2 };
enum class PlanKind : uint32_t { kNotAPlan = 0, kChain = 1, kParallel = 2, kDag = 3 };
inline constexpr uint32_t kPlanStopOnFailure = 1u << 0;  // after a failed step, skip all that
                                                         // did not start (chain, fail_fast)
inline constexpr uint32_t kPlanAfterAny = 1u << 1;       // a step runs after its dependencies
                                                         // end however they end (chain
                                                         // without stop_on_error)
inline constexpr uint32_t kPlanCancelled = 1u << 2;      // job_cancel: skip what did not start
inline constexpr uint32_t kPlanAttached = 1u << 3;       // execute_*: forgotten once answered,
                                                         // cancelled when its client goes
struct alignas(64) JobRecord {
  std::atomic<uint32_t> state;        // RecordState
  std::atomic<uint32_t> final_state;  // 0 until settled; then the JobState it ended in
  uint32_t slot;
  uint32_t slot_generation;
  uint64_t seq;  // daemon-wide job number (Header::next_job_id): names the spool file
  uint64_t submitted_unix_ms, started_unix_ms, finished_unix_ms;
  uint64_t output_cap;   // spool data bytes kept for this job (both streams)
  uint32_t kill_on_cap;  // 1: past output_cap the job is stopped, not truncated
  uint32_t result_words;
  char id[kJobIdBytes];                  // NUL-terminated
  char session_id[kSessionIdBytes];      // NUL-terminated; "" none
  char command[kCommandBytes];           // NUL-terminated, cut to fit: for listings
  alignas(8) unsigned char result[256];  // copy of the slot's result when settled
  // Plans (execute_chain / _parallel / _dag, attached or detached): a plan is
  // a record without a slot whose steps are records of their own; the
  // frontend queues a step when its dependencies allow.
  RecordRef plan;         // a step: its plan's record; none: not a step
  uint32_t step;          // a step: its index in the plan
  uint64_t plan_seq;      // a step: its plan's seq (records are reused)
  uint64_t deps;          // a step: bit i = waits for step i
  uint32_t plan_kind;     // a plan: PlanKind; kNotAPlan for jobs and steps
  uint32_t plan_flags;    // a plan: kPlan* flags
  uint32_t max_parallel;  // a plan: steps running at once; 0: no bound
  // Written by the worker running the job, in this order per chunk: the data
  // into the file, then out_bytes, then spool_end (release).
  alignas(64) std::atomic<uint64_t> spool_end;  // file bytes holding whole chunks
  std::atomic<uint64_t> out_bytes[2];           // stdout, stderr bytes kept
  std::atomic<uint32_t> truncated;              // 1: output beyond output_cap was dropped
};

// A supervised service: a named command the frontend keeps running by its
// restart policy, one detached job (a "generation") at a time, probing it
// for readiness. Written by the frontend only (shm/service_table.h
// allocates slots; frontend/services.h runs them); here so that a restarted
// frontend takes over every service where the last one left it. Its spec is
// the JSON of its service_start params, in the slot's spec blob.
inline constexpr uint32_t kServiceNameBytes = 72;     // up to 64 bytes, NUL-terminated
inline constexpr uint32_t kMaxServiceRestarts = 100;  // restart.max_restarts bound
inline constexpr uint32_t kServiceNoteBytes = 256;    // error, last probe's error
enum class ServiceSlotState : uint32_t { kFree = 0, kWriting = 1, kLive = 2 };
enum class ServicePhase : uint32_t {
  kStarting = 0,  // a generation runs; its readiness probe has not passed yet
  kReady = 1,     // a generation runs; its probe passed (`ready` follows later probes)
  kRunning = 2,   // a generation runs; no probe
  kBackoff = 3,   // the last generation failed; the next starts at next_start_ns
  kStopping = 4,  // a generation was told to stop; after_stop says what comes next
  kStopped = 5,   // service_stop (or the daemon's): not restarted
  kExited = 6,    // ended with exit code 0 under on-failure, or any end under never
  kFailed = 7,    // more than max_restarts failures within window_ms, or cannot start
};
// What follows a generation that is stopping once its processes are gone:
// its restart policy, stopped, the next generation at once, the service
// removed (its session went), or the policy as for a failure (not ready in
// time).
enum class AfterStop : uint32_t { kPolicy = 0, kStop = 1, kRestart = 2, kRemove = 3, kFailure = 4 };
struct alignas(64) ServiceSlot {
  std::atomic<uint32_t> state;  // ServiceSlotState
  uint32_t spec_bytes;          // JSON in the spec blob
  char name[kServiceNameBytes];
  char session_id[kSessionIdBytes];   // "" : the daemon's
  uint32_t phase;                     // ServicePhase
  uint32_t after_stop;                // AfterStop, while kStopping
  uint32_t generation;                // generations started; 0: none yet
  uint32_t restarts;                  // generations started after the first
  uint32_t job_slot, job_generation;  // the current generation's job (while one runs)
  uint64_t job_id;
  uint32_t ready;       // 1: the last probe passed
  uint32_t last_probe;  // 0: none yet, 1: ok, 2: failed (probe_error says why)
  uint32_t has_exit;    // 1: exit_code / exit_signal hold the last generation's end
  int32_t exit_code, exit_signal;
  uint32_t failures_at;  // next index into failures (a ring)
  uint64_t created_unix_ms, started_unix_ms, ready_unix_ms;
  uint64_t started_ns;                         // CLOCK_MONOTONIC: the current generation's start
  uint64_t next_start_ns;                      // kBackoff: when the next generation starts
  uint64_t stop_deadline_ns;                   // kStopping: SIGKILL then (stop.grace_ms)
  uint64_t failures[kMaxServiceRestarts + 1];  // CLOCK_MONOTONIC of recent failures
  // The log (frontend/service_log.h): a ring file of log_bytes in the spool
  // directory; [log_tail, log_head) are its logical bytes kept, and log_at
  // the bytes of each view (stdout, stderr, both) before log_head.
  uint64_t log_bytes, log_head, log_tail;
  uint64_t log_at[3];
  char error[kServiceNoteBytes];        // why it failed or stopped, NUL-terminated
  char probe_error[kServiceNoteBytes];  // the last failed probe's reason
};

// A remote host (host_add, or the configuration's --host, which the
// frontend applies at start and after each reload). Written by the frontend
// while kWriting; its settings are fixed while kLive. A job names a host by
// (slot, generation): a host removed and added again is another host.
// The pool's figures below `seq` are the remote worker's, under a sequence
// lock (odd while it writes them); host_list reads them.
inline constexpr uint32_t kHostNameBytes = 72;  // up to 64 bytes, NUL-terminated
inline constexpr uint32_t kHostAddressBytes = 256;
inline constexpr uint32_t kHostUserBytes = 64;
inline constexpr uint32_t kHostPathBytes = 512;
inline constexpr uint32_t kHostSecretBytes = 256;
inline constexpr uint32_t kFingerprintBytes = 64;  // "SHA256:" + 43 base64 characters, NUL
inline constexpr uint32_t kHostNoteBytes = 256;
enum class HostSlotState : uint32_t { kFree = 0, kWriting = 1, kLive = 2 };
enum class HostAuth : uint32_t { kKey = 0, kAgent = 1, kPassword = 2 };
enum class HostKeyPolicy : uint32_t { kStrict = 0, kAcceptNew = 1, kPinned = 2, kInsecure = 3 };
struct alignas(64) HostSlot {
  std::atomic<uint32_t> state;  // HostSlotState
  uint32_t generation;          // bumped by each add
  uint64_t created_unix_ms;
  uint32_t port, auth, policy;  // HostAuth, HostKeyPolicy
  uint32_t connect_timeout_ms, keepalive_ms, max_connections, idle_timeout_ms;
  uint32_t from_config;  // 1: from the configuration file
  char name[kHostNameBytes];
  char address[kHostAddressBytes];
  char user[kHostUserBytes];
  char key_file[kHostPathBytes];
  char agent_socket[kHostPathBytes];    // "": SSH_AUTH_SOCK of the daemon
  char secret[kHostSecretBytes];        // the key's passphrase or the password: never shown
  char fingerprint[kFingerprintBytes];  // the pinned key's
  // The remote worker's.
  alignas(64) std::atomic<uint32_t> seq;
  uint32_t seen_generation;  // the host generation these figures are of
  uint32_t connections, busy, channel_cap, connecting;
  uint64_t jobs_started;
  uint64_t last_error_unix_ms;
  char seen_fingerprint[kFingerprintBytes];  // the key the host showed last
  char key_type[32];
  char last_error[kHostNoteBytes];
};

// Output chunks: an 8-byte header, then `len` bytes, padded to 8.
inline constexpr uint8_t kStreamStdout = 1;
inline constexpr uint8_t kStreamStderr = 2;
inline constexpr uint8_t kStreamPad = 0xff;  // skip to the end of the ring
// A stream's index (0 stdout, 1 stderr: arrays, SpoolView) and back.
inline constexpr int stream_index(uint8_t stream) {
  return stream == kStreamStderr ? 1 : 0;
}
inline constexpr uint8_t stream_tag(int index) {
  return index ? kStreamStderr : kStreamStdout;
}
struct ChunkHeader {
  uint32_t len;
  uint8_t stream;
  uint8_t pad[3];
};

template <typename T>
inline constexpr bool kShmSafe = std::is_standard_layout_v<T>&& std::is_trivially_destructible_v<T>;
static_assert(kShmSafe<Header> && kShmSafe<WorkerSlot> && kShmSafe<JobSlot> &&
              kShmSafe<SessionSlot> && kShmSafe<JobRecord> && kShmSafe<ServiceSlot> &&
              kShmSafe<ChunkHeader> && kShmSafe<RoleConfig> && kShmSafe<HostSlot>);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::atomic<int32_t>::is_always_lock_free);
static_assert(std::atomic<RecordRef>::is_always_lock_free && sizeof(RecordRef) == 4);

// Layout pins. A change to any shared struct fails one of these: bump
// kLayoutVersion (a segment of another version is refused at open) and
// update the numbers together with it.
static_assert(kLayoutVersion == 18, "update the pins below with the layout version");
static_assert(sizeof(Capacities) == 72 && offsetof(Capacities, tick_ms) == 32 &&
              offsetof(Capacities, input_bytes) == 36 && offsetof(Capacities, spool_bytes) == 40 &&
              offsetof(Capacities, service_slots) == 48 && offsetof(Capacities, host_slots) == 60 &&
              offsetof(Capacities, remote_jobs) == 64 && offsetof(Capacities, output_rings) == 68);
static_assert(sizeof(Counters) == 168 && offsetof(Counters, role_deaths) == 88);
static_assert(sizeof(Histogram) == 136 && sizeof(Metrics) == 288);
static_assert(sizeof(BellWord) == 64);
static_assert(
    sizeof(Header) == 37248 && offsetof(Header, caps) == 24 && offsetof(Header, config) == 96 &&
    offsetof(Header, ring_cells) == 35856 && offsetof(Header, workers_off) == 35864 &&
    offsetof(Header, outputs_off) == 35920 && offsetof(Header, inputs_off) == 35928 &&
    offsetof(Header, spool_used) == 35936 && offsetof(Header, frontend_incarnation) == 35944 &&
    offsetof(Header, draining) == 35948 && offsetof(Header, next_job_id) == 35952 &&
    offsetof(Header, frontend_heartbeat_ns) == 35960 &&
    offsetof(Header, started_unix_ms) == 35968 && offsetof(Header, frontend_ready) == 35976 &&
    offsetof(Header, frontend_last_death) == 35980 && offsetof(Header, frontend_bell) == 36032 &&
    offsetof(Header, submit_bell) == 36096 && offsetof(Header, ring_head) == 36160 &&
    offsetof(Header, ring_tail) == 36224 && offsetof(Header, counters) == 36288 &&
    offsetof(Header, reload) == 36456 && sizeof(ReloadState) == 320 &&
    offsetof(Header, metrics) == 36800 && offsetof(Header, services_off) == 37088 &&
    offsetof(Header, remote_ring_off) == 37104 && offsetof(Header, hosts_off) == 37112 &&
    offsetof(Header, remote_ring_head) == 37120 && offsetof(Header, remote_ring_tail) == 37184 &&
    offsetof(Header, output_owners_off) == 37192 && offsetof(Header, rings_wanted) == 37200);
static_assert(sizeof(HostSlot) == 2240 && offsetof(HostSlot, port) == 16 &&
              offsetof(HostSlot, name) == 48 && offsetof(HostSlot, address) == 120 &&
              offsetof(HostSlot, secret) == 1464 && offsetof(HostSlot, fingerprint) == 1720 &&
              offsetof(HostSlot, seq) == 1792 && offsetof(HostSlot, jobs_started) == 1816 &&
              offsetof(HostSlot, seen_fingerprint) == 1832 &&
              offsetof(HostSlot, last_error) == 1928);
static_assert(sizeof(ServiceSlot) == 1600 && offsetof(ServiceSlot, phase) == 120 &&
              offsetof(ServiceSlot, job_slot) == 136 && offsetof(ServiceSlot, failures) == 224 &&
              offsetof(ServiceSlot, log_bytes) == 1032 && offsetof(ServiceSlot, error) == 1080);
static_assert(sizeof(WorkerSlot) == 128 && offsetof(WorkerSlot, heartbeat_ns) == 16 &&
              offsetof(WorkerSlot, spool_reserved) == 24 &&
              offsetof(WorkerSlot, spool_from) == 32 && offsetof(WorkerSlot, spool_record) == 40 &&
              offsetof(WorkerSlot, ready) == 44 && offsetof(WorkerSlot, last_death) == 48 &&
              offsetof(WorkerSlot, use) == 52 && offsetof(WorkerSlot, jobs_at_once) == 56 &&
              offsetof(WorkerSlot, bell) == 64);
static_assert(sizeof(JobSlot) == 512 && offsetof(JobSlot, control) == 8 &&
              offsetof(JobSlot, pgid) == 12 && offsetof(JobSlot, spec_words) == 16 &&
              offsetof(JobSlot, job_id) == 24 && offsetof(JobSlot, start_ns) == 32 &&
              offsetof(JobSlot, end_ns) == 40 && offsetof(JobSlot, result_words) == 48 &&
              offsetof(JobSlot, record) == 52 && offsetof(JobSlot, cancel_signal) == 56 &&
              offsetof(JobSlot, cancel_grace_ms) == 60 && offsetof(JobSlot, signals) == 64 &&
              offsetof(JobSlot, result) == 72 && offsetof(JobSlot, queued_ns) == 328 &&
              offsetof(JobSlot, in_head) == 336 && offsetof(JobSlot, in_state) == 344 &&
              offsetof(JobSlot, winsize) == 348 && offsetof(JobSlot, fg_signals) == 352 &&
              offsetof(JobSlot, out_head) == 384 && offsetof(JobSlot, out_tail) == 448 &&
              offsetof(JobSlot, out_writer_waiting) == 456 && offsetof(JobSlot, in_tail) == 464 &&
              offsetof(JobSlot, out_ring) == 472);
static_assert(sizeof(SessionSlot) == 192 && offsetof(SessionSlot, env_bytes) == 4 &&
              offsetof(SessionSlot, created_unix_ms) == 8 && offsetof(SessionSlot, id) == 16 &&
              offsetof(SessionSlot, name) == 56 && offsetof(SessionSlot, secret_bytes) == 184);
static_assert(sizeof(JobRecord) == 768 && offsetof(JobRecord, final_state) == 4 &&
              offsetof(JobRecord, slot) == 8 && offsetof(JobRecord, slot_generation) == 12 &&
              offsetof(JobRecord, seq) == 16 && offsetof(JobRecord, submitted_unix_ms) == 24 &&
              offsetof(JobRecord, output_cap) == 48 && offsetof(JobRecord, kill_on_cap) == 56 &&
              offsetof(JobRecord, result_words) == 60 && offsetof(JobRecord, id) == 64 &&
              offsetof(JobRecord, session_id) == 200 && offsetof(JobRecord, command) == 240 &&
              offsetof(JobRecord, result) == 400 && offsetof(JobRecord, plan) == 656 &&
              offsetof(JobRecord, step) == 660 && offsetof(JobRecord, plan_seq) == 664 &&
              offsetof(JobRecord, deps) == 672 && offsetof(JobRecord, plan_kind) == 680 &&
              offsetof(JobRecord, plan_flags) == 684 && offsetof(JobRecord, max_parallel) == 688 &&
              offsetof(JobRecord, spool_end) == 704 && offsetof(JobRecord, out_bytes) == 712 &&
              offsetof(JobRecord, truncated) == 728);
static_assert(sizeof(ChunkHeader) == 8);
static_assert(sizeof(RoleConfig) == 35760 && offsetof(RoleConfig, isolation) == 36 &&
              offsetof(RoleConfig, default_limits) == 40 &&
              offsetof(RoleConfig, output_budget) == 136 && offsetof(RoleConfig, retain_s) == 160 &&
              offsetof(RoleConfig, allow_uids) == 172 && offsetof(RoleConfig, env_pass) == 428 &&
              offsetof(RoleConfig, isolation_note) == 2476 &&
              offsetof(RoleConfig, spool_dir) == 2988 && offsetof(RoleConfig, log_level) == 7084 &&
              offsetof(RoleConfig, files_root) == 7088 &&
              offsetof(RoleConfig, known_hosts) == 11184 &&
              offsetof(RoleConfig, user_known_hosts) == 15280 &&
              offsetof(RoleConfig, hosts) == 19376);
static_assert(sizeof(Rlimits) == 48);

}  // namespace sp::shm
