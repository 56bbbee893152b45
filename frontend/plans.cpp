#include "frontend/plans.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "common/crash_point.h"
#include "frontend/names.h"

namespace sp::frontend {

using shm::JobState;
using shm::JobWord;

void Plans::recover() {
  open_.clear();
  // An attached plan's caller is gone: cancelled if it runs, forgotten once
  // it has ended (service).
  for (uint32_t i : records_.all())
    if (JobRecords::is_plan(records_.at(i))) open_.emplace_back(i, records_.at(i).seq);
}

std::variant<uint32_t, SubmitError> Plans::submit(rpc::PlanParams& p, const std::string& client_id,
                                                  bool attached) {
  if (!queue_.accepting()) return SubmitError{SubmitError::kShuttingDown, {}};
  const uint32_t slots = queue_.jobs().size();
  if (p.steps.size() + 1 > records_.size() || p.steps.size() > slots)
    return SubmitError{SubmitError::kTooLarge,
                       "the plan needs " + std::to_string(p.steps.size()) +
                           " job slots and one more job record; --queue-size is " +
                           std::to_string(slots) + ", --retain-jobs " +
                           std::to_string(records_.size())};
  // Every step takes its slot now: refuse the plan whole rather than half.
  if (queue_.free_slots(uint32_t(p.steps.size())) < p.steps.size())
    return SubmitError{SubmitError::kQueueFull,
                       "the plan needs " + std::to_string(p.steps.size()) + " free job slots"};
  const uint64_t seq = queue_.next_job_id();
  const std::string id = client_id.empty() ? std::to_string(seq) : client_id;
  auto plan = records_.create(id, seq);
  if (auto* e = std::get_if<SubmitError>(&plan)) return *e;
  const uint32_t pi = std::get<uint32_t>(plan);
  shm::JobRecord& pr = records_.at(pi);
  pr.plan_kind = uint32_t(p.kind);
  pr.max_parallel = p.max_parallel;
  const bool chain = p.kind == shm::PlanKind::kChain;
  pr.plan_flags = (attached ? shm::kPlanAttached : 0) |
                  (chain && !p.stop_on_error ? shm::kPlanAfterAny : 0) |
                  ((chain && p.stop_on_error) || p.fail_fast ? shm::kPlanStopOnFailure : 0);
  std::string what =
      std::string(plan_kind_name(p.kind)) + " of " + std::to_string(p.steps.size()) + " steps";
  std::memcpy(pr.command, what.data(), std::min(what.size(), sizeof pr.command - 1));

  // Steps are written waiting; the plan is published last, so a frontend
  // dying before then leaves a plan that recovery drops whole.
  std::unordered_map<std::string_view, uint32_t> index;
  for (size_t k = 0; k < p.steps.size(); ++k) index[p.steps[k].name] = uint32_t(k);
  std::vector<uint32_t> made;
  static_assert(rpc::kMaxStepIdBytes < shm::kJobIdBytes, "a step id and its NUL fit a record");
  auto undo = [&](SubmitError e) -> std::variant<uint32_t, SubmitError> {
    for (uint32_t s : made) records_.skip(s, "the plan was not accepted");
    for (uint32_t s : made) records_.forget(s);
    records_.abandon(pi);
    return e;
  };
  for (size_t k = 0; k < p.steps.size(); ++k) {
    rpc::PlanStep& step = p.steps[k];
    const uint64_t step_seq = queue_.next_job_id();
    auto rec = records_.create(id + "/" + step.name, step_seq);
    if (auto* e = std::get_if<SubmitError>(&rec)) return undo(*e);
    const uint32_t ri = std::get<uint32_t>(rec);
    records_.describe(ri, step.exec, queue_.session_secrets(step.exec.session_id));
    shm::JobRecord& r = records_.at(ri);
    r.plan = shm::RecordRef::of(pi);
    r.step = uint32_t(k);
    r.plan_seq = seq;
    if (chain && k > 0) r.deps = uint64_t{1} << (k - 1);
    for (const std::string& dep : step.depends_on) r.deps |= uint64_t{1} << index[dep];
    auto slot = queue_.enqueue(step.exec, {ri, step_seq, true});
    if (auto* e = std::get_if<SubmitError>(&slot)) {
      records_.abandon(ri);
      e->detail = "step " + step.name + ": " + e->detail;
      return undo(*e);
    }
    records_.publish(ri);
    made.push_back(ri);
    crash_point("mid_plan_submit");
  }
  records_.publish(pi);
  open_.emplace_back(pi, seq);
  advance(pi);
  return pi;
}

void Plans::stop_step(uint32_t step, const rpc::JobSignalParams& how) {
  uint32_t grace = how.grace_ms ? uint32_t(std::min<uint64_t>(*how.grace_ms, 3'600'000))
                                : shm::kCancelGraceDefault;
  if (queue_.stop(records_.at(step).slot, "cancelled before it started", uint32_t(how.signal),
                  grace))
    records_.settle(step);
}

bool Plans::advance(uint32_t plan) {
  const shm::JobRecord& pr = records_.at(plan);
  if (JobRecords::settled(pr) || !JobRecords::is_plan(pr)) return true;
  // Until nothing changes: a skip can make a later (or earlier) step skip too.
  while (step_once(plan)) {
  }
  for (uint32_t s : records_.steps_of(plan))
    if (!JobRecords::settled(records_.at(s))) return false;
  settle(plan);
  return true;
}

bool Plans::step_once(uint32_t plan) {
  const shm::JobRecord& pr = records_.at(plan);
  const std::vector<uint32_t>& steps = records_.steps_of(plan);
  const shm::JobTable& jobs = queue_.jobs();
  uint32_t active = 0;
  bool failed = false;
  for (uint32_t s : steps) {
    if (records_.settle(s)) {
      failed |= !views_.succeeded(s);
      continue;
    }
    if (jobs.load(records_.at(s).slot).state != JobState::kWaiting) ++active;
  }
  const bool cancelled = pr.plan_flags & shm::kPlanCancelled;
  if (cancelled)  // again each turn: a frontend that died mid-cancel left some running
    for (uint32_t s : steps) {
      const shm::JobRecord& r = records_.at(s);
      if (JobRecords::settled(r) || jobs.load(r.slot).state == JobState::kWaiting) continue;
      if (!jobs.cancel_requested(r.slot)) stop_step(s, {});
    }
  const char* stop = cancelled             ? "skipped: the plan was cancelled"
                     : !queue_.accepting() ? "skipped: the daemon is shutting down"
                     : failed && (pr.plan_flags & shm::kPlanStopOnFailure)
                         ? "skipped: a step failed"
                         : nullptr;
  bool changed = false;
  for (uint32_t s : steps) {
    const shm::JobRecord& r = records_.at(s);
    if (JobRecords::settled(r)) continue;
    JobWord w = jobs.load(r.slot);
    if (w.state != JobState::kWaiting) continue;
    Verdict v = stop ? Verdict{false, stop} : verdict(pr, steps, r);
    if (!v.skip.empty()) {
      records_.skip(s, v.skip);
      changed = true;
    } else if (v.ready && !(pr.max_parallel && active >= pr.max_parallel) &&
               queue_.promote(r.slot, w)) {
      ++active;
    }
  }
  return changed;
}

Plans::Verdict Plans::verdict(const shm::JobRecord& pr, const std::vector<uint32_t>& steps,
                              const shm::JobRecord& r) {
  Verdict v;
  for (uint32_t d = 0; d < steps.size(); ++d) {
    if (!(r.deps >> d & 1)) continue;
    const shm::JobRecord& dep = records_.at(steps[d]);
    if (!JobRecords::settled(dep)) {
      v.ready = false;
    } else if (!(pr.plan_flags & shm::kPlanAfterAny) && !views_.succeeded(steps[d])) {
      bool skipped = dep.final_state.load() == uint32_t(JobState::kSkipped);
      v.skip =
          "skipped: step " + views_.step_name(steps[d]) + (skipped ? " was skipped" : " failed");
      return v;
    }
  }
  return v;
}

void Plans::settle(uint32_t plan) {
  const shm::JobRecord& pr = records_.at(plan);
  std::string failed, skipped;
  uint64_t started = 0;
  for (uint32_t s : records_.steps_of(plan)) {
    const shm::JobRecord& r = records_.at(s);
    if (r.started_unix_ms && (!started || r.started_unix_ms < started)) started = r.started_unix_ms;
    if (views_.succeeded(s)) continue;
    std::string& list = r.final_state.load() == uint32_t(JobState::kSkipped) ? skipped : failed;
    list += (list.empty() ? "" : ", ") + views_.step_name(s);
  }
  std::string why = failed.empty() ? "" : "failed: " + failed;
  if (!skipped.empty()) why += (why.empty() ? "" : "; ") + std::string("skipped: ") + skipped;
  records_.table().settle_plan(
      plan, pr.plan_flags & shm::kPlanCancelled ? JobState::kCancelled : JobState::kExited,
      why.empty() ? 0 : 1, why, started);
}

void Plans::cancel(uint32_t plan, const rpc::JobSignalParams& how) {
  shm::JobRecord& pr = records_.at(plan);
  if (JobRecords::settled(pr)) return;
  // Marked first: a frontend dying part-way leaves a cancelled plan, and the
  // next one's advance() cancels (with the defaults) the steps this loop
  // missed. The steps get the caller's signal and grace here.
  pr.plan_flags |= shm::kPlanCancelled;
  const shm::JobTable& jobs = queue_.jobs();
  for (uint32_t s : records_.steps_of(plan)) {
    const shm::JobRecord& r = records_.at(s);
    if (JobRecords::settled(r) || jobs.load(r.slot).state == JobState::kWaiting) continue;
    stop_step(s, how);
  }
  advance(plan);
}

bool Plans::service() {
  size_t before = open_.size();
  std::erase_if(open_, [&](const auto& entry) {
    const uint32_t plan = entry.first;
    shm::JobRecord& pr = records_.at(plan);
    // Settled and forgotten meanwhile (job_cancel, job_forget): maybe reused.
    if (!records_.table().live(plan) || pr.seq != entry.second || !JobRecords::is_plan(pr))
      return true;
    bool attached = pr.plan_flags & shm::kPlanAttached;
    bool waited = owned_.count(plan) != 0;
    if (attached && !waited && !(pr.plan_flags & shm::kPlanCancelled))
      cancel(plan, rpc::JobSignalParams{});
    if (!advance(plan)) return false;
    if (attached && !waited) records_.forget(plan);
    return true;
  });
  return open_.size() != before;
}

}  // namespace sp::frontend
