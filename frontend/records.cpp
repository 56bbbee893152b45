#include "frontend/records.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/clock.h"
#include "common/redactor.h"
#include "common/sys.h"
#include "shm/spool.h"

namespace sp::frontend {

void JobRecords::recover() {
  table_.recover();
  by_id_.clear();
  steps_.clear();
  // A plan the last frontend did not finish submitting was never accepted:
  // its steps (all still waiting) go with it.
  for (uint32_t i = 0; i < size(); ++i) {
    const shm::JobRecord& r = at(i);
    if (!table_.live(i)) continue;
    if (r.plan) {
      if (!r.plan.within(size()) || !table_.live(r.plan.index()) ||
          at(r.plan.index()).seq != r.plan_seq) {
        table_.free_waiting_slot(i);
        table_.release(i);
        continue;
      }
    }
    by_id_[r.id] = i;
  }
  for (const auto& [id, i] : by_id_)
    if (at(i).plan) steps_[at(i).plan.index()].push_back(i);
  for (auto& [plan, steps] : steps_)
    std::sort(steps.begin(), steps.end(),
              [&](uint32_t a, uint32_t b) { return at(a).step < at(b).step; });
}

std::variant<uint32_t, SubmitError> JobRecords::create(std::string_view id, uint64_t seq) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (auto i = table_.claim(id, seq, job_spool_bytes_)) return *i;
    auto oldest = oldest_settled(false);
    if (!oldest) break;
    forget(*oldest);
  }
  return SubmitError{SubmitError::kRecordsFull,
                     std::to_string(size()) + " detached jobs are unfinished (--retain-jobs)"};
}

void JobRecords::describe(uint32_t i, const rpc::ExecParams& p,
                          const std::vector<std::string>& session_secrets) {
  shm::JobRecord& r = at(i);
  std::memcpy(r.session_id, p.session_id.data(),
              std::min(p.session_id.size(), sizeof r.session_id - 1));
  std::string command = p.command;
  for (const std::string& a : p.args) command += " " + a;
  if (!p.secrets.empty() || !session_secrets.empty()) {  // shown by job_status and job_list
    std::vector<std::string> all = p.secrets;
    all.insert(all.end(), session_secrets.begin(), session_secrets.end());
    command = Redactor(all).redact(command);
  }
  size_t cut = std::min(command.size(), sizeof r.command - 1);
  while (cut > 0 && cut < command.size() &&
         (static_cast<unsigned char>(command[cut]) & 0xC0) == 0x80)
    --cut;
  std::memcpy(r.command, command.data(), cut);
  r.output_cap = std::min(job_spool_bytes_, p.max_output_bytes.value_or(UINT64_MAX));
  r.kill_on_cap = p.kill_on_output_cap;
}

void JobRecords::publish(uint32_t i) {
  table_.publish(i);
  const shm::JobRecord& r = at(i);
  by_id_[r.id] = i;
  if (r.plan) steps_[r.plan.index()].push_back(i);  // steps are published in order
}

const std::vector<uint32_t>& JobRecords::steps_of(uint32_t plan) const {
  static const std::vector<uint32_t> kNone;
  auto it = steps_.find(plan);
  return it == steps_.end() ? kNone : it->second;
}

void JobRecords::abandon(uint32_t i) {
  steps_.erase(i);  // a plan's steps were forgotten one by one
  table_.release(i);
}

bool JobRecords::held(uint32_t i) const {
  if (pinned(i)) return true;
  for (uint32_t s : steps_of(i))
    if (pinned(s)) return true;
  return false;
}

void JobRecords::unpin(uint32_t i) {
  auto it = pins_.find(i);
  if (it != pins_.end() && --it->second == 0) pins_.erase(it);
}

std::optional<uint32_t> JobRecords::find(std::string_view id) const {
  auto it = by_id_.find(std::string(id));
  if (it == by_id_.end()) return std::nullopt;
  return it->second;
}

std::vector<uint32_t> JobRecords::all() const {
  std::vector<uint32_t> out;
  out.reserve(by_id_.size());
  for (const auto& [id, i] : by_id_) out.push_back(i);
  std::sort(out.begin(), out.end(), [&](uint32_t a, uint32_t b) { return at(a).seq < at(b).seq; });
  return out;
}

void JobRecords::forget(uint32_t i) {
  shm::JobRecord& r = at(i);
  if (!settled(r)) return;
  if (is_plan(r)) {
    auto it = steps_.find(i);
    if (it != steps_.end()) {
      std::vector<uint32_t> steps = std::move(it->second);
      steps_.erase(it);
      for (uint32_t s : steps) forget_one(s);
    }
  }
  forget_one(i);
}

void JobRecords::forget_one(uint32_t i) {
  shm::JobRecord& r = at(i);
  if (!is_plan(r)) {
    // Taken out of the record first: a frontend dying in between leaves the
    // bytes counted (an over-count), never subtracted twice, and a record
    // that still shows output has its file.
    seg_.spool_budget().give_back(r.spool_end.exchange(0));
    std::string name = shm::spool_file_name(r.seq);
    if (spool_dir_ >= 0) ::unlinkat(spool_dir_, name.c_str(), 0);
  }
  if (auto it = r.plan ? steps_.find(r.plan.index()) : steps_.end(); it != steps_.end())
    std::erase(it->second, i);  // (forget() took a plan's whole list out first)
  pins_.erase(i);
  by_id_.erase(r.id);
  table_.release(i);
}

std::optional<uint32_t> JobRecords::oldest_settled(bool with_output) const {
  std::optional<uint32_t> best;
  for (const auto& [id, i] : by_id_) {
    const shm::JobRecord& r = at(i);
    if (!settled(r) || r.plan || held(i)) continue;  // a step goes with its plan
    if (with_output && !is_plan(r) && r.spool_end.load() == 0) continue;
    if (!best || r.seq < at(*best).seq) best = i;
  }
  return best;
}

uint32_t JobRecords::expire(size_t writers) {
  uint32_t n = 0;
  const uint64_t now = unix_ms();
  std::vector<uint32_t> old;
  for (const auto& [id, i] : by_id_) {
    const shm::JobRecord& r = at(i);
    if (settled(r) && !r.plan && !held(i) && r.finished_unix_ms + retain_ms_ <= now)
      old.push_back(i);
  }
  for (uint32_t i : old) forget(i), ++n;
  // Keep room for the whole output of the jobs that may still write (and
  // one more), so new output is not dropped for the sake of old.
  const shm::SpoolBudget spool = seg_.spool_budget();
  const uint64_t budget = spool.limit();
  const uint64_t per_job = job_spool_bytes_ + job_spool_bytes_ / 64;  // + record headers, about
  const uint64_t room = std::min(per_job * std::max<uint64_t>(writers, 1), budget / 2);
  while (spool.used() + room > budget) {
    auto oldest = oldest_settled(true);
    if (!oldest) break;
    forget(*oldest);
    ++n;
  }
  return n;
}

Result<UniqueFd> JobRecords::open_spool(uint32_t i) const {
  if (spool_dir_ < 0) return Error{ENOENT, "no spool directory"};
  std::string name = shm::spool_file_name(at(i).seq);
  return new_fd("open the job's spool file", [&] {
    return ::openat(spool_dir_, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  });
}

}  // namespace sp::frontend
