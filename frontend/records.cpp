#include "frontend/records.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/clock.h"
#include "common/crash_point.h"
#include "common/log.h"
#include "common/sys.h"
#include "shm/codec.h"
#include "shm/spool.h"

namespace sp::frontend {

using shm::JobState;
using shm::JobWord;
using shm::RecordState;

namespace {

uint64_t to_unix_ms(uint64_t mono_ns) {
  if (!mono_ns) return 0;
  uint64_t now = monotonic_ns();
  uint64_t ago_ms = now > mono_ns ? (now - mono_ns) / 1'000'000 : 0;
  return unix_ms() - ago_ms;
}

}  // namespace

void JobRecords::recover() {
  shm::JobTable jobs = seg_.jobs();
  by_id_.clear();
  steps_.clear();
  for (uint32_t i = 0; i < size(); ++i) {
    shm::JobRecord& r = at(i);
    if (r.state.load() == uint32_t(RecordState::kWriting)) {
      bool queued = false;
      if (r.slot < jobs.size()) {
        JobWord w = jobs.load(r.slot);
        queued = w.generation == r.slot_generation && w.state != JobState::kFree &&
                 w.state != JobState::kAllocated && jobs.slot(r.slot).record == i + 1;
      }
      r.state.store(uint32_t(queued ? RecordState::kLive : RecordState::kFree));
    }
  }
  // A plan the last frontend did not finish submitting was never accepted:
  // its steps (all still waiting) go with it.
  for (uint32_t i = 0; i < size(); ++i) {
    shm::JobRecord& r = at(i);
    if (r.state.load() != uint32_t(RecordState::kLive)) continue;
    if (r.plan) {
      const shm::JobRecord& plan = at(r.plan - 1);
      if (plan.state.load() != uint32_t(RecordState::kLive) || plan.seq != r.plan_seq) {
        free_waiting_slot(i);
        release(i);
        continue;
      }
    }
    by_id_[r.id] = i;
  }
  for (const auto& [id, i] : by_id_)
    if (at(i).plan) steps_[at(i).plan - 1].push_back(i);
  for (auto& [plan, steps] : steps_)
    std::sort(steps.begin(), steps.end(),
              [&](uint32_t a, uint32_t b) { return at(a).step < at(b).step; });
  // Slots of detached jobs that ended or never started whose record is gone
  // or already settled (the last frontend died between the two steps) are
  // nobody's: free them.
  for (uint32_t slot = 0; slot < jobs.size(); ++slot) {
    JobWord w = jobs.load(slot);
    const shm::JobSlot& s = jobs.slot(slot);
    if (!(s.control.load() & shm::kControlDetached)) continue;
    if (w.state != JobState::kWaiting && !shm::is_terminal(w.state)) continue;
    uint32_t rec = s.record;
    bool owned = rec && rec <= size() && at(rec - 1).state.load() == uint32_t(RecordState::kLive) &&
                 !settled(at(rec - 1)) && at(rec - 1).slot == slot &&
                 at(rec - 1).slot_generation == w.generation;
    if (!owned) jobs.transition(slot, w, {JobState::kFree, 0, 0, w.generation + 1});
  }
}

Result<uint32_t> JobRecords::create(std::string_view id, uint64_t seq) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    for (uint32_t i = 0; i < size(); ++i) {
      shm::JobRecord& r = at(i);
      uint32_t expected = uint32_t(RecordState::kFree);
      if (!r.state.compare_exchange_strong(expected, uint32_t(RecordState::kWriting))) continue;
      r.final_state.store(0, std::memory_order_relaxed);
      r.slot = UINT32_MAX;  // none yet: recover() frees the record
      r.slot_generation = 0;
      r.seq = seq;
      r.submitted_unix_ms = unix_ms();
      r.started_unix_ms = r.finished_unix_ms = 0;
      r.output_cap = job_spool_bytes_;
      r.kill_on_cap = 0;
      r.result_words = 0;
      std::memset(r.id, 0, sizeof r.id);
      std::memcpy(r.id, id.data(), std::min(id.size(), sizeof r.id - 1));
      std::memset(r.session_id, 0, sizeof r.session_id);
      std::memset(r.command, 0, sizeof r.command);
      r.spool_end.store(0, std::memory_order_relaxed);
      r.out_bytes[0].store(0, std::memory_order_relaxed);
      r.out_bytes[1].store(0, std::memory_order_relaxed);
      r.truncated.store(0, std::memory_order_relaxed);
      r.plan = r.step = 0;
      r.plan_seq = r.deps = 0;
      r.plan_kind = r.plan_flags = r.plan_steps = r.max_parallel = 0;
      return i;
    }
    auto oldest = oldest_settled(false);
    if (!oldest) break;
    forget(*oldest);
  }
  return Error{ENOSPC, std::to_string(size()) + " detached jobs are unfinished (--retain-jobs)"};
}

void JobRecords::publish(uint32_t i) {
  shm::JobRecord& r = at(i);
  r.state.store(uint32_t(RecordState::kLive), std::memory_order_release);
  by_id_[r.id] = i;
  if (r.plan) steps_[r.plan - 1].push_back(i);  // steps are published in order
}

const std::vector<uint32_t>& JobRecords::steps_of(uint32_t plan) const {
  static const std::vector<uint32_t> kNone;
  auto it = steps_.find(plan);
  return it == steps_.end() ? kNone : it->second;
}

void JobRecords::abandon(uint32_t i) {
  steps_.erase(i);  // a plan's steps were forgotten one by one
  at(i).state.store(uint32_t(RecordState::kFree), std::memory_order_release);
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

bool JobRecords::settle(uint32_t i) const {
  shm::JobRecord& r = at(i);
  if (settled(r) || is_plan(r)) return settled(r);
  shm::JobTable jobs = seg_.jobs();
  if (r.slot >= jobs.size()) return false;
  JobWord w = jobs.load(r.slot);
  shm::JobSlot& s = jobs.slot(r.slot);
  if (w.generation != r.slot_generation || s.record != i + 1) {
    // The slot moved on without us: nothing else frees a detached job's
    // slot, so this is a bug; end the record rather than leave it running.
    spdlog::error("detached job {} lost its job slot", r.id);
    r.result_words = shm::encode_result(r.result, -1, 0, "lost: its job slot was reused");
    r.finished_unix_ms = unix_ms();
    r.final_state.store(uint32_t(JobState::kLost), std::memory_order_release);
    return true;
  }
  if (!shm::is_terminal(w.state)) return false;  // also: a step still waiting
  std::memcpy(r.result, s.result, sizeof r.result);
  r.result_words = s.result_words;
  r.started_unix_ms = to_unix_ms(s.start_ns.load());
  r.finished_unix_ms = to_unix_ms(s.end_ns.load());
  if (!r.finished_unix_ms) r.finished_unix_ms = unix_ms();
  // Settled before the slot is freed: a frontend dying in between leaves a
  // terminal slot whose record is settled, which recover() frees.
  r.final_state.store(uint32_t(w.state), std::memory_order_release);
  crash_point("mid_settle");
  jobs.release(r.slot, w);
  return true;
}

void JobRecords::skip(uint32_t i, std::string_view why) const {
  shm::JobRecord& r = at(i);
  if (settled(r)) return;
  r.result_words = shm::encode_result(r.result, -1, 0, why);
  r.finished_unix_ms = unix_ms();
  // Settled first: a frontend dying before the slot is freed leaves a
  // waiting slot whose record is settled, which recover() frees.
  r.final_state.store(uint32_t(JobState::kSkipped), std::memory_order_release);
  free_waiting_slot(i);
}

void JobRecords::free_waiting_slot(uint32_t i) const {
  const shm::JobRecord& r = at(i);
  shm::JobTable jobs = seg_.jobs();
  if (r.slot >= jobs.size()) return;
  JobWord w = jobs.load(r.slot);
  if (w.state == JobState::kWaiting && w.generation == r.slot_generation)
    jobs.transition(r.slot, w, {JobState::kFree, 0, 0, w.generation + 1});
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
    shm::give_back_spool(seg_.header(), r.spool_end.exchange(0));
    std::string name = shm::spool_file_name(r.seq);
    if (spool_dir_ >= 0) ::unlinkat(spool_dir_, name.c_str(), 0);
  }
  if (auto it = r.plan ? steps_.find(r.plan - 1) : steps_.end(); it != steps_.end())
    std::erase(it->second, i);  // (forget() took a plan's whole list out first)
  pins_.erase(i);
  by_id_.erase(r.id);
  release(i);
}

void JobRecords::release(uint32_t i) {
  at(i).state.store(uint32_t(RecordState::kFree), std::memory_order_release);
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
  const uint64_t budget = seg_.caps().spool_bytes;
  const uint64_t per_job = job_spool_bytes_ + job_spool_bytes_ / 64;  // + record headers, about
  const uint64_t room = std::min(per_job * std::max<uint64_t>(writers, 1), budget / 2);
  while (seg_.header().spool_used.load() + room > budget) {
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
  auto fd = sys("open the job's spool file", [&] {
    return ::openat(spool_dir_, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  });
  if (!fd) return fd.error();
  return UniqueFd(*fd);
}

}  // namespace sp::frontend
