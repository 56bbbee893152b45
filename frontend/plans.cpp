// Plans: execute_chain, execute_parallel and execute_dag, attached (answered
// when the plan ends) or detached (job_submit with "strategy"). A plan is a
// record of its own plus one detached job per step; every step is written
// into a job slot at once, waiting, and advance_plan() queues each step when
// its dependencies have ended (and max_parallel allows) or settles it as
// skipped. All of it lives in shm, so a restarted frontend carries on.
#include <boost/json.hpp>

#include "common/clock.h"
#include "common/crash_point.h"
#include "common/log.h"
#include "frontend/server.h"
#include "shm/codec.h"
#include "shm/repair.h"

namespace sp::frontend {

namespace json = boost::json;
using shm::JobState;
using shm::JobWord;

namespace {

// The step's name: its id after "<plan id>/" ('/' is in no job_id a client
// chooses, so step ids never collide with them).
std::string step_name(const shm::JobRecord& step, const shm::JobRecord& plan) {
  std::string_view id(step.id), prefix(plan.id);
  return std::string(id.substr(std::min(id.size(), prefix.size() + 1)));
}

}  // namespace

bool Frontend::step_succeeded(uint32_t rec) const {
  const shm::JobRecord& r = records_.at(rec);
  if (r.final_state.load(std::memory_order_acquire) != uint32_t(JobState::kExited)) return false;
  return shm::decode_result(r.result, r.result_words).exit_code == 0;
}

std::variant<uint32_t, rpc::RpcError> Frontend::submit_plan(rpc::PlanParams& p,
                                                            const std::string& client_id,
                                                            bool attached) {
  if (seg_.header().draining.load() || stopping_)
    return rpc::RpcError{rpc::Code::ShuttingDown, "the daemon is shutting down"};
  if (p.steps.size() + 1 > records_.size() || p.steps.size() > jobs_.size())
    return rpc::RpcError{rpc::Code::LimitExceeded,
                         "the plan needs " + std::to_string(p.steps.size()) +
                             " job slots and one more job record; --queue-size is " +
                             std::to_string(jobs_.size()) + ", --retain-jobs " +
                             std::to_string(records_.size())};
  // Every step takes its slot now: refuse the plan whole rather than half.
  uint32_t free = 0;
  for (uint32_t i = 0; i < jobs_.size() && free < p.steps.size(); ++i)
    free += jobs_.load(i).state == JobState::kFree;
  if (free < p.steps.size())
    return rpc::queue_full_error(kRetryAfterMs, "queue full: the plan needs " +
                                                    std::to_string(p.steps.size()) +
                                                    " free job slots; retry later");
  const uint64_t seq = seg_.header().next_job_id.fetch_add(1, std::memory_order_relaxed);
  const std::string id = client_id.empty() ? std::to_string(seq) : client_id;
  auto plan = records_.create(id, seq);
  if (!plan) return rpc::RpcError{rpc::Code::LimitExceeded, plan.error().context};
  shm::JobRecord& pr = records_.at(*plan);
  pr.plan_kind = uint32_t(p.kind);
  pr.max_parallel = p.max_parallel;
  pr.plan_flags =
      (attached ? shm::kPlanAttached : 0) |
      (p.kind == rpc::PlanKind::kChain && !p.stop_on_error ? shm::kPlanAfterAny : 0) |
      ((p.kind == rpc::PlanKind::kChain && p.stop_on_error) || p.fail_fast ? shm::kPlanStopOnFailure
                                                                           : 0);
  std::string what = std::string(plan_kind_name(pr.plan_kind)) + " of " +
                     std::to_string(p.steps.size()) + " steps";
  std::memcpy(pr.command, what.data(), std::min(what.size(), sizeof pr.command - 1));

  // Steps are written waiting; the plan is published last, so a frontend
  // dying before then leaves a plan that recover() drops whole.
  std::unordered_map<std::string_view, uint32_t> index;
  for (size_t k = 0; k < p.steps.size(); ++k) index[p.steps[k].name] = uint32_t(k);
  std::vector<uint32_t> made;
  static_assert(rpc::kMaxStepIdBytes < shm::kJobIdBytes, "a step id and its NUL fit a record");
  auto undo = [&](rpc::RpcError e) -> std::variant<uint32_t, rpc::RpcError> {
    for (uint32_t s : made) records_.skip(s, "the plan was not accepted");
    for (uint32_t s : made) records_.forget(s);
    records_.abandon(*plan);
    return e;
  };
  for (size_t k = 0; k < p.steps.size(); ++k) {
    rpc::PlanStep& step = p.steps[k];
    const uint64_t step_seq = seg_.header().next_job_id.fetch_add(1, std::memory_order_relaxed);
    auto rec = records_.create(id + "/" + step.name, step_seq);
    if (!rec) return undo({rpc::Code::LimitExceeded, rec.error().context});
    shm::JobRecord& r = records_.at(*rec);
    fill_record(r, step.exec);
    r.plan = *plan + 1;
    r.step = uint32_t(k);
    r.plan_seq = seq;
    if (p.kind == rpc::PlanKind::kChain && k > 0) r.deps = uint64_t{1} << (k - 1);
    for (const std::string& dep : step.depends_on) r.deps |= uint64_t{1} << index[dep];
    auto slot = enqueue(step.exec, *rec + 1, step_seq, true);
    if (auto* e = std::get_if<rpc::RpcError>(&slot)) {
      records_.abandon(*rec);
      e->message = "step " + step.name + ": " + e->message;
      return undo(*e);
    }
    records_.publish(*rec);
    made.push_back(*rec);
    crash_point("mid_plan_submit");
  }
  records_.publish(*plan);
  open_plans_.emplace_back(*plan, seq);
  advance_plan(*plan);
  return *plan;
}

bool Frontend::advance_plan(uint32_t plan) {
  shm::JobRecord& pr = records_.at(plan);
  if (JobRecords::settled(pr) || !JobRecords::is_plan(pr)) return true;
  const std::vector<uint32_t>& steps = records_.steps_of(plan);
  // Until nothing changes: a skip can make a later (or earlier) step skip too.
  for (bool changed = true; changed;) {
    changed = false;
    uint32_t active = 0;
    bool failed = false;
    for (uint32_t s : steps) {
      const shm::JobRecord& r = records_.at(s);
      if (records_.settle(s)) {
        failed |= !step_succeeded(s);
        continue;
      }
      if (jobs_.load(r.slot).state != JobState::kWaiting) ++active;
    }
    const bool cancelled = pr.plan_flags & shm::kPlanCancelled;
    const bool draining = seg_.header().draining.load() || stopping_;
    const bool stop =
        cancelled || draining || (failed && (pr.plan_flags & shm::kPlanStopOnFailure));
    if (cancelled) {  // again each turn: a frontend that died mid-cancel left some running
      json::value ignored;
      for (uint32_t s : steps) {
        const shm::JobRecord& r = records_.at(s);
        if (JobRecords::settled(r) || jobs_.load(r.slot).state == JobState::kWaiting) continue;
        if (!jobs_.cancel_requested(r.slot)) job_cancel(s, rpc::JobSignalParams{}, ignored);
      }
    }
    for (uint32_t s : steps) {
      const shm::JobRecord& r = records_.at(s);
      if (JobRecords::settled(r)) continue;
      JobWord w = jobs_.load(r.slot);
      if (w.state != JobState::kWaiting) continue;
      std::string why;
      bool ready = true;
      if (stop)
        why = cancelled  ? "skipped: the plan was cancelled"
              : draining ? "skipped: the daemon is shutting down"
                         : "skipped: a step failed";
      for (uint32_t d = 0; why.empty() && d < steps.size(); ++d) {
        if (!(r.deps >> d & 1)) continue;
        const shm::JobRecord& dep = records_.at(steps[d]);
        if (!JobRecords::settled(dep)) {
          ready = false;
        } else if (!(pr.plan_flags & shm::kPlanAfterAny) && !step_succeeded(steps[d])) {
          bool skipped = dep.final_state.load() == uint32_t(JobState::kSkipped);
          why = "skipped: step " + step_name(dep, pr) + (skipped ? " was skipped" : " failed");
        }
      }
      if (!why.empty()) {
        records_.skip(s, why);
        changed = true;
        continue;
      }
      if (!ready || (pr.max_parallel && active >= pr.max_parallel)) continue;
      if (promote(r.slot, w)) ++active;
    }
  }
  for (uint32_t s : steps)
    if (!JobRecords::settled(records_.at(s))) return false;
  // Every step has ended: so has the plan. exit_code 0 if all succeeded.
  std::string failed, skipped;
  uint64_t started = 0;
  for (uint32_t s : steps) {
    const shm::JobRecord& r = records_.at(s);
    if (r.started_unix_ms && (!started || r.started_unix_ms < started)) started = r.started_unix_ms;
    if (step_succeeded(s)) continue;
    std::string& list = r.final_state.load() == uint32_t(JobState::kSkipped) ? skipped : failed;
    list += (list.empty() ? "" : ", ") + step_name(r, pr);
  }
  std::string why = failed.empty() ? "" : "failed: " + failed;
  if (!skipped.empty()) why += (why.empty() ? "" : "; ") + std::string("skipped: ") + skipped;
  records_.table().settle_plan(
      plan, pr.plan_flags & shm::kPlanCancelled ? JobState::kCancelled : JobState::kExited,
      why.empty() ? 0 : 1, why, started);
  return true;
}

bool Frontend::promote(uint32_t slot, JobWord waiting) {
  JobWord queued = waiting.with_state(JobState::kQueued);
  if (!jobs_.transition(slot, waiting, queued)) return false;
  if (!ring_.push(slot)) {
    // The ring is full: wait for the next turn (unless a stale cell let a
    // worker claim it meanwhile, which is as good).
    jobs_.transition(slot, queued, waiting);
    return false;
  }
  submit_.ring();
  seg_.header().counters.submitted.fetch_add(1, std::memory_order_relaxed);
  return true;
}

json::object Frontend::plan_result(uint32_t plan, const rpc::JobWaitParams& p) {
  const shm::JobRecord& pr = records_.at(plan);
  json::object o = job_status(plan);
  const bool dag = pr.plan_kind == uint32_t(shm::PlanKind::kDag);
  json::object by_name;
  json::array in_order;
  for (uint32_t s : records_.steps_of(plan)) {
    json::object r = job_result(s, p);
    std::string name = step_name(records_.at(s), pr);
    r["name"] = name;
    if (dag) {
      by_name[name] = std::move(r);
    } else {
      in_order.push_back(std::move(r));
    }
  }
  o.erase("steps");
  if (dag) {
    o["results"] = std::move(by_name);
  } else {
    o["results"] = std::move(in_order);
  }
  o["success"] = o["exit_code"] == 0;
  o["status"] = o["state"];
  return o;
}

json::array Frontend::plan_steps(uint32_t plan) const {
  json::array out;
  const shm::JobRecord& pr = records_.at(plan);
  for (uint32_t s : records_.steps_of(plan)) {
    json::object st = job_status(s);
    json::object brief{
        {"name", step_name(records_.at(s), pr)}, {"job_id", st["job_id"]}, {"state", st["state"]},
        {"exit_code", st["exit_code"]},          {"signal", st["signal"]}, {"error", st["error"]}};
    out.push_back(std::move(brief));
  }
  return out;
}

void Frontend::cancel_plan(uint32_t plan, const rpc::JobSignalParams& how) {
  shm::JobRecord& pr = records_.at(plan);
  if (JobRecords::settled(pr)) return;
  // Marked first: a frontend dying part-way leaves a cancelled plan, and the
  // next one's advance_plan cancels (with the defaults) the steps this loop
  // missed. The steps get the caller's signal and grace here.
  pr.plan_flags |= shm::kPlanCancelled;
  json::value ignored;
  for (uint32_t s : records_.steps_of(plan)) {
    const shm::JobRecord& r = records_.at(s);
    if (JobRecords::settled(r) || jobs_.load(r.slot).state == JobState::kWaiting) continue;
    job_cancel(s, how, ignored);
  }
  advance_plan(plan);
}

// Plans still going, and attached plans nobody waits for any more (their
// client left): cancelled, and forgotten once they end.
void Frontend::service_plans() {
  std::erase_if(open_plans_, [&](const auto& entry) {
    const uint32_t plan = entry.first;
    shm::JobRecord& pr = records_.at(plan);
    // Settled and forgotten meanwhile (job_cancel, job_forget): maybe reused.
    if (pr.state.load() != uint32_t(shm::RecordState::kLive) || pr.seq != entry.second ||
        !JobRecords::is_plan(pr))
      return true;
    bool attached = pr.plan_flags & shm::kPlanAttached;
    bool waited = owned_plans_.count(plan) != 0;
    if (attached && !waited && !(pr.plan_flags & shm::kPlanCancelled))
      cancel_plan(plan, rpc::JobSignalParams{});
    if (!advance_plan(plan)) return false;
    if (attached && !waited) records_.forget(plan);
    return true;
  });
}

}  // namespace sp::frontend
