// StdinMethods: job_stdin_write and job_stdin_close, on detached jobs
// (by their record) and on execute_stream jobs (AttachedJobs) started with
// "stdin_open": finds the job's slot and hands the bytes to StdinFeeds.
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
               const JobViews& views, Connections& out)
      : records_(records), attached_(attached), feeds_(feeds), views_(views), out_(out) {}
  void add_methods(MethodTable& m);

 private:
  void write(rpc::StdinWriteParams& p, Reply r);

  JobRecords& records_;
  const AttachedJobs& attached_;
  StdinFeeds& feeds_;
  const JobViews& views_;
  Connections& out_;
};

}  // namespace sp::frontend
