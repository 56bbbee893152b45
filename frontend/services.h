// Services: supervised services (service_start, service_stop,
// service_restart, service_remove, service_status, service_list,
// service_wait, service_logs). A service is a named command kept running
// by its restart policy, one generation at a time: each generation is a
// detached job without a record (shm::kControlService), whose output comes
// through its output ring into the service's log (service_log.h). Readiness
// probes are jobs too (AttachedJobs::run_internal of the probe helper,
// `shell-poold probe ...`, or the probe's command), one at a time with
// their own timeout, so nothing here blocks the loop.
//
// State lives in shm (shm::ServiceTable): a restarted frontend takes every
// service over where the last one left it (recover()); a generation whose
// job went meanwhile counts as a failure. A generation whose worker died
// ends lost and counts as a failure. A new generation starts only after
// the old one ended, and a job ends only once its process group (or
// cgroup) is dead.
//
// Bounds: --services slots (--services-per-session for one session), a
// spec of --service-spec-bytes, a log of its log_bytes; parked calls
// (service_wait, waiting service_logs, service_start with wait_ready,
// service_stop, service_restart) are bounded by --max-inflight per
// connection. Used from the frontend's single thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "common/unique_fd.h"
#include "frontend/attached_jobs.h"
#include "frontend/connections.h"
#include "frontend/job_queue.h"
#include "frontend/method_table.h"
#include "frontend/service_log.h"
#include "shm/segment.h"
#include "shm/service_table.h"
#include "shm/session_table.h"

namespace sp::frontend {

class Services {
 public:
  Services(const shm::Segment& seg, JobQueue& queue, AttachedJobs& attached, Connections& out,
           int spool_dir)
      : seg_(seg),
        table_(seg),
        sessions_(seg),
        jobs_(seg.jobs()),
        queue_(queue),
        attached_(attached),
        out_(out),
        spool_dir_(spool_dir) {}

  void add_methods(MethodTable& methods);
  // After a frontend restart: the services the last frontend ran are ours,
  // and a generation none of them names is killed.
  void recover();
  // Moves output into logs, settles ended generations, starts what is due
  // (generations after their backoff, probes), answers parked calls.
  void service();
  // The daemon drains: every service stops with its stop signal and grace
  // and none starts again.
  void drain();
  // session_destroy: the session's services stop, and go once stopped.
  void session_gone(const std::string& session_id);
  void client_gone(uint64_t conn_id);
  // The loop's epoll timeout: `tick_ms`, or sooner for a backoff, a probe
  // or a parked call's deadline.
  int next_wait_ms(int tick_ms) const;
  size_t count() const { return runs_.size(); }

 private:
  // What this frontend keeps of a live service beside its shm slot.
  struct Run {
    rpc::ServiceSpec spec;
    uint64_t created_unix_ms = 0;  // tells a slot reused by another service
    UniqueFd log;
    LogPos hint;           // where the last service_logs read stopped
    bool probing = false;  // a probe job runs
    uint64_t next_probe_ns = 0;
    uint32_t probe_generation = 0;  // the generation the running probe is for
  };
  struct Waiter {
    enum Kind { kWait, kLogs, kStart, kStop, kRestart };
    Waiter(Kind k, Reply r) : kind(k), reply(std::move(r)) {}
    Kind kind;
    Reply reply;
    std::string name;  // for the answer if the service goes meanwhile
    uint32_t slot = 0;
    uint64_t created_unix_ms = 0;
    uint64_t deadline_ns = 0;  // 0: none
    rpc::ServiceUntil until = rpc::ServiceUntil::kReady;
    rpc::ServiceLogsParams logs;
    bool existing = false;    // kStart: answers "existing"
    uint64_t seen_head = 0;   // kLogs: the log's head when it last read nothing new
    uint32_t generation = 0;  // kStop: the generation it stopped
  };

  void start(rpc::ServiceStartParams& p, Reply r);
  void stop(std::string& name, Reply r);
  void restart(rpc::ServiceRestartParams& p, Reply r);
  void remove(std::string& name, Reply r);
  void wait(rpc::ServiceWaitParams& p, Reply r);
  void logs(rpc::ServiceLogsParams& p, Reply r);

  // The live service `name`, or r answered with -32001.
  std::optional<uint32_t> find(const std::string& name, Reply& r);
  void fail(Reply& r, ServiceFault::Kind kind, uint32_t i, std::string detail = {});
  rpc::Object status(uint32_t i) const;
  // Starts the next generation; why not if it cannot be queued for good
  // (the service failed, with that reason). A full queue is tried again.
  std::optional<SubmitError> start_generation(uint32_t i);
  // Tells the running generation to stop; `after` says what follows.
  void stop_generation(uint32_t i, shm::AfterStop after, const std::string& why);
  // Sends the stop signal to the running generation unless it was sent.
  void send_stop(uint32_t i, const std::string& why);
  bool being_removed(uint32_t i) const;  // stopping, to go with its session
  // A new service, its log and its first generation; or the call's error.
  std::variant<uint32_t, rpc::RpcError> create(rpc::ServiceStartParams& p);
  // The daemon drains or stops: r is answered -32003 (true).
  bool shutting_down(Reply& r);
  // Why service i cannot take `p`'s spec (its session's bound, the spec's
  // size), if it cannot.
  std::optional<ServiceFault::Kind> check_spec(uint32_t i, const rpc::ServiceStartParams& p) const;
  // Service i takes `p`'s spec (checked), and counts failures afresh.
  void use_spec(uint32_t i, rpc::ServiceStartParams& p);
  void count_afresh(uint32_t i);  // a start or restart by hand
  // Output into the log; a generation that ended is settled. True if it ended.
  bool follow_job(uint32_t i);
  void generation_ended(uint32_t i, shm::JobState state, const shm::JobOutcome& outcome);
  void start_probe(uint32_t i);
  void probe_done(uint32_t i, uint64_t created, uint32_t generation, AttachedJobs::Ended e);
  void marker(uint32_t i, const std::string& text);
  void set_error(uint32_t i, const std::string& text);
  void forget(uint32_t i);  // frees the slot and its log
  // A failure at `now`: the recent ones (within window_ms) it makes.
  uint32_t count_failure(uint32_t i, uint64_t now);
  bool running(uint32_t i) const;  // a generation runs (or is stopping)
  // A parked call's answer, or nullopt while it waits on.
  std::optional<std::variant<rpc::Object, rpc::RpcError>> answer(Waiter& w, bool timed_out);
  void park(Waiter w, std::optional<double> wait_s);
  std::variant<rpc::Object, rpc::RpcError> read_logs(uint32_t i, const rpc::ServiceLogsParams& p,
                                                     bool& got_data);

  const shm::Segment& seg_;
  shm::ServiceTable table_;
  shm::SessionTable sessions_;
  shm::JobTable jobs_;
  JobQueue& queue_;
  AttachedJobs& attached_;
  Connections& out_;
  int spool_dir_;
  std::unordered_map<uint32_t, Run> runs_;  // by service slot: bounded by --services
  std::vector<Waiter> waiters_;             // bounded: --max-inflight per connection
  // Generations no service names (the last frontend died between queueing
  // one and noting it): killed, and freed once they ended. Bounded by the
  // job table.
  std::vector<std::pair<uint32_t, uint32_t>> orphans_;  // (job slot, generation)
  bool draining_ = false;
  bool again_ = false;  // something to settle on the next turn at once
};

}  // namespace sp::frontend
