// FileMethods: the workspace file API (file_read, file_write, file_list,
// file_stat, file_remove, file_mkdir, archive_extract, archive_create).
// Each call runs the file helper
// (`shell-poold files ...`, files/helper.h) as an attached job, so the disk
// I/O happens in a worker's child, never in the frontend's loop, and a call
// has what any job has: a timeout, the daemon's limits, cancellation when
// its client leaves, a crash that costs that call only. Every path is
// resolved beneath the files root (--files-root) by the helper.
//
// Bounds: a read answers at most rpc::kMaxFileRead bytes (larger files go
// by "offset"), a write carries what fits in a request line
// (--max-line-bytes; larger files go by "offset" or "append"), a list at
// most rpc::kMaxListEntries entries ("truncated" says when there were more).
// archive_create packs into a detached job's output (so its parts are read
// by cursor, across frontend restarts): an archive is at most
// --job-output-bytes, and is kept as a detached job is (--retain-seconds,
// job_forget).
//
// Used from the frontend's single thread.
#pragma once

#include "frontend/attached_jobs.h"
#include "frontend/connections.h"
#include "frontend/detached_jobs.h"
#include "frontend/method_table.h"
#include "shm/layout.h"

namespace sp::frontend {

class FileMethods {
 public:
  // A file operation that takes longer than this fails (a hung disk, a
  // FUSE mount that never answers).
  static constexpr double kTimeoutS = 300;
  static constexpr double kPackTimeoutS = 3600;  // archive_create, archive_extract

  FileMethods(const shm::RoleConfig& o, AttachedJobs& jobs, DetachedJobs& detached,
              Connections& out)
      : o_(o), jobs_(jobs), detached_(detached), out_(out) {}
  void add_methods(MethodTable& methods);

 private:
  void start(rpc::FileParams& p, Reply r);
  void answer(const rpc::FileParams& p, Reply r, AttachedJobs::Ended e);
  void archive_create(rpc::ArchiveCreateParams& p, Reply r);
  // The file helper's command line for `op` on `path`.
  rpc::ExecParams helper(const char* op, const std::string& path, double timeout_s) const;

  const shm::RoleConfig& o_;
  AttachedJobs& jobs_;
  DetachedJobs& detached_;
  Connections& out_;
};

}  // namespace sp::frontend
