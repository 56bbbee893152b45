// StdinMethods: job_stdin_write, job_stdin_close and job_resize, on
// detached jobs (by their record) and on execute_stream jobs (AttachedJobs):
// finds the job's slot and hands the bytes to StdinFeeds, or the new size
// to the worker that runs it.
//
// Used from the frontend's single thread; holds no state of its own.
#pragma once

#include "frontend/attached_jobs.h"
#include "frontend/connections.h"
#include "frontend/job_views.h"
#include "frontend/method_table.h"
#include "frontend/records.h"
#include "frontend/stdin_feeds.h"

namespace sp::frontend {

class StdinMethods {
 public:
  StdinMethods(JobRecords& records, const AttachedJobs& attached, StdinFeeds& feeds,
               const JobViews& views, JobQueue& queue, Connections& out)
      : records_(records),
        attached_(attached),
        feeds_(feeds),
        views_(views),
        queue_(queue),
        out_(out) {}
  void add_methods(MethodTable& m);

 private:
  void write(rpc::StdinWriteParams& p, Reply r);
  void resize(const rpc::ResizeParams& p, Reply r);
  // The unfinished job `job_id`'s slot and generation; else answers `r`
  // with why not (no such job, a plan, ended) and nullopt.
  std::optional<std::pair<uint32_t, uint32_t>> find(const std::string& job_id, Reply& r);

  JobRecords& records_;
  const AttachedJobs& attached_;
  StdinFeeds& feeds_;
  const JobViews& views_;
  JobQueue& queue_;
  Connections& out_;
};

}  // namespace sp::frontend
