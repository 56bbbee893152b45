// Plans: execute_chain, execute_parallel and execute_dag, attached (answered
// when the plan ends) or detached (job_submit with "strategy"). A plan is a
// record of its own plus one detached job per step; every step is written
// into a job slot at once, waiting, and advance() queues each step when its
// dependencies have ended (and max_parallel allows) or settles it as
// skipped. All of it lives in shm, so a restarted frontend carries on
// (recover()).
//
// Memory: the open plans and the attached plans a caller waits for, one
// entry each, bounded by the job records. Used from the frontend's single
// thread.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "frontend/job_queue.h"
#include "frontend/job_views.h"
#include "frontend/records.h"

namespace sp::frontend {

class Plans {
 public:
  Plans(JobRecords& records, JobQueue& queue, const JobViews& views)
      : records_(records), queue_(queue), views_(views) {}

  // After a frontend restart: the plans the last one left open.
  void recover();
  // Writes the plan and its steps (refused whole when they do not all fit);
  // `attached`: an execute_* call answered when it ends, and cancelled if
  // its caller leaves first. The plan's record.
  std::variant<uint32_t, SubmitError> submit(rpc::PlanParams& p, const std::string& id,
                                             bool attached);
  // Marks the plan cancelled: its running steps are stopped with `how`'s
  // signal and grace, and the steps that did not start are skipped.
  void cancel(uint32_t plan, const rpc::JobSignalParams& how);
  // An attached plan's caller waits for it (own) or has its answer (disown).
  void own(uint32_t plan) { owned_.insert(plan); }
  void disown(uint32_t plan) { owned_.erase(plan); }

  // Advances every open plan; cancels and forgets attached plans whose
  // caller is gone. Returns true if a plan ended.
  bool service();
  size_t open() const { return open_.size(); }

 private:
  bool advance(uint32_t plan);  // true: the plan has ended (settled)
  // One pass over a plan's steps: settles those that ended, stops running
  // ones of a cancelled plan, skips those that can no longer run, queues those
  // whose dependencies allow. True when a step was skipped.
  bool step_once(uint32_t plan);
  // Whether waiting step `r` may run: ready once every dependency settled; a
  // reason to skip it when one that had to succeed did not.
  struct Verdict {
    bool ready = true;
    std::string skip;
  };
  Verdict verdict(const shm::JobRecord& plan, const std::vector<uint32_t>& steps,
                  const shm::JobRecord& r);
  // Every step has ended: so has the plan (exit_code 0 if all succeeded).
  void settle(uint32_t plan);
  void stop_step(uint32_t step, const rpc::JobSignalParams& how);

  JobRecords& records_;
  JobQueue& queue_;
  const JobViews& views_;
  // Plans not yet settled, by record index and seq (a record forgotten
  // meanwhile may be reused by another job: the seq tells).
  std::vector<std::pair<uint32_t, uint64_t>> open_;
  std::unordered_set<uint32_t> owned_;  // attached plans whose execute_* call waits
};

}  // namespace sp::frontend
