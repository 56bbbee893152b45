// DetachedJobs: the methods that run a job or a plan apart from the
// caller's connection and find it again by its job_id (job_submit,
// job_status, job_wait, job_output by cursor, job_cancel, job_signal,
// job_list, job_forget), and the attached plans (execute_chain,
// execute_parallel, execute_dag: a plan plus a caller waiting for it).
// Their state lives in shm (JobRecords, Plans) and their output in spool
// files the workers write, so all of it outlives this process.
//
// Parks job_wait and job_output "wait" calls until their job ends, has
// output, or their wait runs out: bounded by --max-inflight per connection.
// Used from the frontend's single thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "frontend/connections.h"
#include "frontend/job_queue.h"
#include "frontend/job_views.h"
#include "frontend/method_table.h"
#include "frontend/plans.h"
#include "frontend/records.h"

namespace sp::frontend {

class DetachedJobs {
 public:
  DetachedJobs(JobRecords& records, JobQueue& queue, Plans& plans, JobViews& views,
               Connections& out)
      : records_(records), queue_(queue), plans_(plans), views_(views), out_(out) {}

  // After a frontend restart: the detached jobs the last one accepted are
  // ours now (the records were recovered first).
  void recover();
  void add_methods(MethodTable& methods);

  // Settles jobs that ended, advances plans, answers the waiters whose job
  // ended, got output or whose wait ran out; then retention.
  void service();
  // Retention (the tick): keeps spool room for every unfinished job and plan.
  void expire();
  void client_gone(uint64_t conn_id);  // its waiters go
  // The loop's epoll timeout: the tick, or sooner when a wait runs out.
  int next_wait_ms(int tick_ms) const;
  size_t unfinished() const { return unsettled_.size() + plans_.open(); }

 private:
  // A job_wait, a job_output with "wait", or an attached plan's caller,
  // parked until its job ends (or has output) or its deadline passes.
  struct Waiter {
    Reply reply;
    uint32_t record = 0;
    uint64_t seq = 0;          // the job it waits for (records are reused)
    uint64_t deadline_ns = 0;  // 0: none
    uint64_t seen_end = 0;     // job_output: the spool's end when last looked at
    bool owner = false;        // an attached plan's caller (forgets it when answered)
    std::variant<rpc::JobWaitParams, rpc::JobOutputParams> params;
  };

  void submit(rpc::JobSubmitParams& p, Reply r);
  void list(rpc::JobListParams& p, Reply r);
  void status(std::string& id, Reply r);
  void forget(std::string& id, Reply r);
  void wait(rpc::JobWaitParams& p, Reply r);
  void output(rpc::JobOutputParams& p, Reply r);
  void cancel(rpc::JobSignalParams& p, Reply r);
  void signal(rpc::JobSignalParams& p, Reply r);
  void run_plan(rpc::PlanParams& p, Reply r);

  // The record of job `id` (settled if it has ended), or r answered with -32001.
  std::optional<uint32_t> find(const std::string& id, Reply& r);
  rpc::Object cancel_one(uint32_t rec, const rpc::JobSignalParams& how);
  std::optional<JobError> signal_one(uint32_t rec, int sig, std::optional<bool> foreground);
  // `seen_end`: for job_output, the spool's end read before the read that
  // found nothing new (a later write then wakes the waiter).
  void park(Reply& r, uint32_t rec, std::optional<double> wait_s,
            std::variant<rpc::JobWaitParams, rpc::JobOutputParams> params, bool owner = false,
            uint64_t seen_end = 0);
  void unpark(const Waiter& w);
  bool try_answer(Waiter& w, bool timed_out);  // true: answered (drop it)

  JobRecords& records_;
  JobQueue& queue_;
  Plans& plans_;
  JobViews& views_;
  Connections& out_;
  // Detached jobs not yet settled, by record index and seq (a record
  // forgotten meanwhile may be reused by another job: the seq tells).
  std::vector<std::pair<uint32_t, uint64_t>> unsettled_;
  std::vector<Waiter> waiters_;    // bounded: --max-inflight per connection
  uint64_t next_deadline_ns_ = 0;  // earliest deadline of a waiter (0: none); may be early
};

}  // namespace sp::frontend
