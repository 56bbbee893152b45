// DetachedJobs: the methods that run a job or a plan apart from the
// caller's connection and find it again by its job_id (job_submit,
// job_status, job_wait, job_output by cursor, job_cancel, job_signal,
// job_list, job_forget), the attached plans (execute_chain,
// execute_parallel, execute_dag: a plan plus a caller waiting for it), and
// the interactive methods on them (shell_open, shell_close, job_interact:
// interactive_jobs.cpp).
// Their state lives in shm (JobRecords, Plans) and their output in spool
// files the workers write, so all of it outlives this process.
//
// Parks job_wait, job_output "wait" and job_interact calls until their job
// ends, has output (is quiet), or their wait runs out: bounded by
// --max-inflight per connection.
// Used from the frontend's single thread.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "frontend/attached_jobs.h"
#include "frontend/connections.h"
#include "frontend/job_queue.h"
#include "frontend/job_views.h"
#include "frontend/method_table.h"
#include "frontend/plans.h"
#include "frontend/records.h"
#include "frontend/stdin_feeds.h"

namespace sp::frontend {

class DetachedJobs {
 public:
  DetachedJobs(JobRecords& records, JobQueue& queue, Plans& plans, JobViews& views,
               StdinFeeds& feeds, const AttachedJobs& attached, Connections& out)
      : records_(records),
        queue_(queue),
        plans_(plans),
        views_(views),
        feeds_(feeds),
        attached_(attached),
        out_(out) {}

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

  // For another part's method that runs a detached job of its own
  // (archive_create): submits it as job_submit does (`id`, or a generated
  // one); the job's id, or why not.
  std::variant<std::string, SubmitError> start_job(rpc::ExecParams& p, std::string id = {});
  // job_output's read (and wait) for such a method: `shape` makes its
  // answer (or an error) from job_output's and the job's job_status, to
  // which a job that ended with a nonzero exit code adds "stderr" (its
  // first 4 KiB).
  using Shape =
      std::function<std::variant<rpc::Object, rpc::RpcError>(rpc::Object out, rpc::Object status)>;
  void read_output(rpc::JobOutputParams& p, Reply r, Shape shape) {
    output(p, std::move(r), std::move(shape));
  }

 private:
  // A job_interact waiting for its job's output to go quiet.
  struct Interact {
    rpc::JobInteractParams p;
    uint64_t quiet_since_ns = 0;  // when it last saw new output (or began)
    uint64_t end_ns = 0;          // wait_ms runs out
  };
  // A job_wait, a job_output with "wait", a job_interact, or an attached
  // plan's caller, parked until its job ends (or has output, or is quiet)
  // or its deadline passes.
  struct Waiter {
    Reply reply;
    uint32_t record = 0;
    uint64_t seq = 0;          // the job it waits for (records are reused)
    uint64_t deadline_ns = 0;  // 0: none
    uint64_t seen_end = 0;     // job_output: the spool's end when last looked at
    bool owner = false;        // an attached plan's caller (forgets it when answered)
    std::variant<rpc::JobWaitParams, rpc::JobOutputParams, Interact> params;
    Shape shape;  // read_output(): makes the answer of a job_output read
  };
  using WaitParams = std::variant<rpc::JobWaitParams, rpc::JobOutputParams, Interact>;

  void submit(rpc::JobSubmitParams& p, Reply r);
  void submit_fan_out(rpc::JobSubmitParams& p, Reply r);
  void list(rpc::JobListParams& p, Reply r);
  void status(std::string& id, Reply r);
  void forget(std::string& id, Reply r);
  void wait(rpc::JobWaitParams& p, Reply r);
  void output(rpc::JobOutputParams& p, Reply r, Shape shape = {});
  // job_output's answer `o` of record `rec`, shaped by `shape` if there is one.
  std::variant<rpc::Object, rpc::RpcError> shaped(uint32_t rec, rpc::Object o, const Shape& shape);
  void cancel(rpc::JobSignalParams& p, Reply r);
  void signal(rpc::JobSignalParams& p, Reply r);
  void run_plan(rpc::PlanParams& p, Reply r);
  // interactive_jobs.cpp
  void add_interactive_methods(MethodTable& m);
  void shell_open(rpc::ShellOpenParams& p, Reply r);
  void shell_close(rpc::JobSignalParams& p, Reply r);
  void interact(rpc::JobInteractParams& p, Reply r);
  void wait_quiet(Reply r, uint32_t rec, rpc::JobInteractParams p);
  // An Interact waiter's answer, or nullopt while it waits on.
  // (Its own clock decides: quiet for idle_ms, or wait_ms over.)
  std::optional<std::variant<rpc::Object, JobError>> interact_answer(Waiter& w);

  // The record of job `id` (settled if it has ended), or r answered with -32001.
  std::optional<uint32_t> find(const std::string& id, Reply& r);
  rpc::Object cancel_one(uint32_t rec, const rpc::JobSignalParams& how);
  // job_signal / job_cancel (`cancel`) of an execute_stream job, which has
  // no record: false if `p.job_id` is not one (else `r` is answered).
  bool signal_attached(const rpc::JobSignalParams& p, Reply& r, bool cancel);
  std::optional<JobError> signal_one(uint32_t rec, int sig, std::optional<bool> foreground);
  // `seen_end`: for job_output, the spool's end read before the read that
  // found nothing new (a later write then wakes the waiter).
  // Returns the parked waiter (null if `r` was answered: too many waits).
  Waiter* park(Reply& r, uint32_t rec, std::optional<double> wait_s, WaitParams params,
               bool owner = false, uint64_t seen_end = 0);
  void unpark(const Waiter& w);
  bool try_answer(Waiter& w, bool timed_out);  // true: answered (drop it)

  JobRecords& records_;
  JobQueue& queue_;
  Plans& plans_;
  JobViews& views_;
  StdinFeeds& feeds_;
  const AttachedJobs& attached_;
  Connections& out_;
  // Detached jobs not yet settled, by record index and seq (a record
  // forgotten meanwhile may be reused by another job: the seq tells).
  std::vector<std::pair<uint32_t, uint64_t>> unsettled_;
  std::vector<Waiter> waiters_;    // bounded: --max-inflight per connection
  uint64_t next_deadline_ns_ = 0;  // earliest deadline of a waiter (0: none); may be early
};

}  // namespace sp::frontend
