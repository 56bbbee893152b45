// JobViews: what the detached-job methods say about a job or a plan, built
// from its record (and, while it runs, its job slot): job_status, the result
// job_wait answers with (its output read back from the spool, as execute
// would have answered), a plan's steps and results, and job_output's reads
// by cursor.
//
// Keeps, per job read, where its last job_output read stopped in the spool
// (so reading on costs no rescan): one entry per job read, dropped when the
// job is forgotten (forget_hints). Used from the frontend's single thread.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <utility>
#include <variant>

#include "frontend/errors.h"
#include "frontend/params/params.h"
#include "frontend/records.h"
#include "shm/spool.h"

namespace sp::frontend {

class JobViews {
 public:
  JobViews(const JobRecords& records, const shm::JobTable& jobs, uint64_t max_output_bytes)
      : records_(records), jobs_(jobs), max_output_bytes_(max_output_bytes) {}

  // The state job_status gives: settled, a plan's "running", or its slot's.
  const char* state(uint32_t rec) const;
  rpc::Object status(uint32_t rec) const;
  // job_wait's answer for a settled job or plan.
  rpc::Object result(uint32_t rec, const rpc::JobWaitParams& p) const;
  // job_output's answer; `ready` false: nothing new to return yet (the
  // caller may wait for more).
  std::variant<rpc::Object, JobError> output(uint32_t rec, const rpc::JobOutputParams& p,
                                             bool& ready);
  // A plan step that exited 0.
  bool succeeded(uint32_t rec) const;
  // A step's name within its plan: its id after "<plan id>/".
  std::string step_name(uint32_t step) const;
  void forget_hints(uint32_t rec);

  void set_max_output(uint64_t bytes) { max_output_bytes_ = bytes; }  // a live reload

 private:
  rpc::Array plan_steps(uint32_t plan) const;
  rpc::Object plan_result(uint32_t plan, const rpc::JobWaitParams& p) const;

  const JobRecords& records_;
  const shm::JobTable& jobs_;
  uint64_t max_output_bytes_;
  std::unordered_map<uint32_t, std::pair<uint64_t, shm::SpoolPos>> read_pos_;  // rec -> (seq, pos)
};

}  // namespace sp::frontend
