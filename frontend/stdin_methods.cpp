#include "frontend/stdin_methods.h"

namespace sp::frontend {

void StdinMethods::add_methods(MethodTable& m) {
  auto write = [this](rpc::StdinWriteParams& p, Reply r) { this->write(p, std::move(r)); };
  m.add<rpc::StdinWriteParams>("job_stdin_write", rpc::parse_stdin_write_params, write);
  m.add<rpc::StdinWriteParams>("job_stdin_close", rpc::parse_stdin_close_params, write);
}

void StdinMethods::write(rpc::StdinWriteParams& p, Reply r) {
  StdinFeeds::Write w{p.job_id, std::move(p.data), p.offset, p.eof};
  if (auto rec = records_.find(p.job_id)) {
    records_.settle(*rec);
    const shm::JobRecord& job = records_.at(*rec);
    if (JobRecords::is_plan(job))
      return out_.fail(r, to_rpc(StdinError{StdinError::kNotOpen, p.job_id, 0, "plan"}));
    if (JobRecords::settled(job))
      return out_.fail(
          r, to_rpc(StdinError{StdinError::kReaderGone, p.job_id, 0, views_.state(*rec)}));
    return feeds_.write(job.slot, job.slot_generation, std::move(w), std::move(r));
  }
  if (auto slot = attached_.find(p.job_id))
    return feeds_.write(slot->first, slot->second, std::move(w), std::move(r));
  out_.fail(r, to_rpc(JobError{JobError::kNoJob, p.job_id, {}}));
}

}  // namespace sp::frontend
