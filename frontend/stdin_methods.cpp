#include "frontend/stdin_methods.h"

#include "frontend/names.h"

namespace sp::frontend {

void StdinMethods::add_methods(MethodTable& m) {
  auto write = [this](rpc::StdinWriteParams& p, Reply r) { this->write(p, std::move(r)); };
  m.add<rpc::StdinWriteParams>("job_stdin_write", rpc::parse_stdin_write_params, write);
  m.add<rpc::StdinWriteParams>("job_stdin_close", rpc::parse_stdin_close_params, write);
  m.add<rpc::ResizeParams>("job_resize", rpc::parse_resize_params,
                           [this](rpc::ResizeParams& p, Reply r) { resize(p, std::move(r)); });
}

std::optional<std::pair<uint32_t, uint32_t>> StdinMethods::find(const std::string& job_id,
                                                                Reply& r) {
  if (auto rec = records_.find(job_id)) {
    records_.settle(*rec);
    const shm::JobRecord& job = records_.at(*rec);
    if (JobRecords::is_plan(job)) {
      out_.fail(r, to_rpc(StdinError{StdinError::kNotOpen, job_id, 0, "plan"}));
      return std::nullopt;
    }
    if (JobRecords::settled(job)) {
      out_.fail(r, to_rpc(StdinError{StdinError::kReaderGone, job_id, 0, views_.state(*rec)}));
      return std::nullopt;
    }
    return std::pair{job.slot, job.slot_generation};
  }
  if (auto slot = attached_.find(job_id)) return slot;
  out_.fail(r, to_rpc(JobError{JobError::kNoJob, job_id, {}}));
  return std::nullopt;
}

void StdinMethods::write(rpc::StdinWriteParams& p, Reply r) {
  auto slot = find(p.job_id, r);
  if (!slot) return;
  std::string job_id = p.job_id;
  feeds_.write(slot->first, slot->second,
               StdinFeeds::Write{p.job_id, std::move(p.data), p.offset, p.eof},
               [this, r = std::move(r), job_id](const StdinError* e, uint64_t bytes) mutable {
                 if (e) return out_.fail(r, to_rpc(*e));
                 out_.answer(r, rpc::Object{{"job_id", job_id}, {"stdin_bytes", bytes}});
               });
}

void StdinMethods::resize(const rpc::ResizeParams& p, Reply r) {
  auto slot = find(p.job_id, r);
  if (!slot) return;
  shm::JobTable jobs = queue_.jobs();
  const shm::JobWord w = jobs.load(slot->first);
  const bool ended = w.generation != slot->second || shm::is_terminal(w.state);
  if (ended || !(jobs.slot(slot->first).in_state.load() & shm::kInputTerminal))
    return out_.fail(r, to_rpc(JobError{JobError::kWrongState,
                                        "job " + p.job_id +
                                            (ended ? " has ended"
                                                   : " does not run on a terminal "
                                                     "(start it with \"pty\")"),
                                        ended ? state_name(w.state) : "running"}));
  jobs.request_resize(slot->first, p.rows, p.cols);
  queue_.ring_owner(w);
  out_.answer(r, rpc::Object{{"job_id", p.job_id}, {"rows", p.rows}, {"cols", p.cols}});
}

}  // namespace sp::frontend
