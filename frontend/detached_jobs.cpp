#include "frontend/detached_jobs.h"

#include <algorithm>
#include <cmath>

#include "common/clock.h"
#include "frontend/names.h"

namespace sp::frontend {

using shm::JobState;

namespace {

constexpr uint64_t kMaxWaitNs = 24ull * 3600 * 1'000'000'000;  // longer waits are cut to a day

template <shm::PlanKind kKind>
rpc::Parsed<rpc::PlanParams> parse_plan(const rpc::Value& params) {
  return rpc::parse_plan_params(kKind, params);
}

rpc::Parsed<rpc::JobSignalParams> parse_cancel(const rpc::Value& params) {
  return rpc::parse_job_signal_params(params, false);
}

rpc::Parsed<rpc::JobSignalParams> parse_signal(const rpc::Value& params) {
  return rpc::parse_job_signal_params(params, true);
}

}  // namespace

void DetachedJobs::add_methods(MethodTable& m) {
  using Holds = MethodTable::Holds;
  m.add<rpc::JobSubmitParams>("job_submit", rpc::parse_job_submit_params,
                              [this](auto& p, Reply r) { submit(p, std::move(r)); });
  m.add<rpc::JobListParams>("job_list", rpc::parse_job_list_params,
                            [this](auto& p, Reply r) { list(p, std::move(r)); });
  m.add<std::string>("job_status", rpc::parse_job_id_param,
                     [this](auto& id, Reply r) { status(id, std::move(r)); });
  m.add<std::string>("job_forget", rpc::parse_job_id_param,
                     [this](auto& id, Reply r) { forget(id, std::move(r)); });
  m.add<rpc::JobWaitParams>("job_wait", rpc::parse_job_wait_params,
                            [this](auto& p, Reply r) { wait(p, std::move(r)); });
  m.add<rpc::JobOutputParams>("job_output", rpc::parse_job_output_params,
                              [this](auto& p, Reply r) { output(p, std::move(r)); });
  m.add<rpc::JobSignalParams>("job_cancel", parse_cancel,
                              [this](auto& p, Reply r) { cancel(p, std::move(r)); });
  m.add<rpc::JobSignalParams>("job_signal", parse_signal,
                              [this](auto& p, Reply r) { signal(p, std::move(r)); });
  auto run = [this](rpc::PlanParams& p, Reply r) { run_plan(p, std::move(r)); };
  m.add<rpc::PlanParams>("execute_chain", parse_plan<shm::PlanKind::kChain>, run, Holds::kInflight);
  m.add<rpc::PlanParams>("execute_parallel", parse_plan<shm::PlanKind::kParallel>, run,
                         Holds::kInflight);
  m.add<rpc::PlanParams>("execute_dag", parse_plan<shm::PlanKind::kDag>, run, Holds::kInflight);
  add_interactive_methods(m);
}

void DetachedJobs::recover() {
  unsettled_.clear();
  for (uint32_t i : records_.all()) {
    const shm::JobRecord& r = records_.at(i);
    if (!JobRecords::is_plan(r) && !r.plan && !records_.settle(i))
      unsettled_.emplace_back(i, r.seq);
  }
}

std::optional<uint32_t> DetachedJobs::find(const std::string& id, Reply& r) {
  auto rec = records_.find(id);
  if (!rec) {
    out_.fail(r, to_rpc(JobError{JobError::kNoJob, id, {}}));
    return std::nullopt;
  }
  records_.settle(*rec);
  return rec;
}

void DetachedJobs::submit(rpc::JobSubmitParams& p, Reply r) {
  if (!queue_.accepting()) return out_.fail(r, to_rpc(SubmitError{SubmitError::kShuttingDown, {}}));
  // A client-chosen id makes a retried submit idempotent: the job it names.
  if (!p.job_id.empty())
    if (auto rec = records_.find(p.job_id)) {
      records_.settle(*rec);
      return out_.answer(
          r, rpc::Object{{"job_id", p.job_id}, {"state", views_.state(*rec)}, {"existing", true}});
    }
  if (p.plan) {
    auto plan = plans_.submit(*p.plan, p.job_id, false);
    if (auto* e = std::get_if<SubmitError>(&plan)) return out_.fail(r, to_rpc(*e));
    uint32_t i = std::get<uint32_t>(plan);
    rpc::Array steps;
    for (uint32_t s : records_.steps_of(i)) steps.push_back(records_.at(s).id);
    return out_.answer(r, rpc::Object{{"job_id", records_.at(i).id},
                                      {"state", views_.state(i)},
                                      {"steps", std::move(steps)}});
  }
  if (!p.exec.hosts.empty()) return submit_fan_out(p, std::move(r));
  auto id = start_job(p.exec, p.job_id);
  if (auto* e = std::get_if<SubmitError>(&id)) return out_.fail(r, to_rpc(*e));
  out_.answer(r, rpc::Object{{"job_id", std::get<std::string>(id)}, {"state", "queued"}});
}

// job_submit with "hosts": one detached job per host, as the steps of a
// plan (a DAG without edges, each node named after its host), so that
// max_parallel and fail_fast hold as for execute_parallel, and the plan's
// id names them all: "<plan>/<host>" is each host's job.
void DetachedJobs::submit_fan_out(rpc::JobSubmitParams& p, Reply r) {
  if (p.exec.hosts.size() > shm::kMaxPlanSteps)
    return out_.fail(r, to_rpc(SubmitError{SubmitError::kTooLarge,
                                           "a detached fan-out takes at most " +
                                               std::to_string(shm::kMaxPlanSteps) + " hosts"}));
  if (p.exec.stdin_open)
    return out_.fail(r, to_rpc(SubmitError{SubmitError::kAboveCeiling,
                                           "\"stdin_open\" does not go with \"hosts\""}));
  rpc::PlanParams plan;
  plan.kind = shm::PlanKind::kDag;
  plan.fail_fast = p.exec.fail_fast;
  plan.max_parallel = std::min<uint32_t>(p.exec.max_parallel, shm::kMaxPlanSteps);
  for (const std::string& host : p.exec.hosts) {
    rpc::PlanStep step;
    step.name = host;
    step.exec = p.exec;
    step.exec.hosts.clear();
    step.exec.host = host;
    plan.steps.push_back(std::move(step));
  }
  auto submitted = plans_.submit(plan, p.job_id, false);
  if (auto* e = std::get_if<SubmitError>(&submitted)) return out_.fail(r, to_rpc(*e));
  const uint32_t i = std::get<uint32_t>(submitted);
  rpc::Array jobs, steps;
  for (uint32_t s : records_.steps_of(i)) {
    const std::string id = records_.at(s).id;
    steps.push_back(id);
    jobs.push_back(rpc::Object{{"host", id.substr(id.find('/') + 1)}, {"job_id", id}});
  }
  out_.answer(r, rpc::Object{{"job_id", records_.at(i).id},
                             {"state", views_.state(i)},
                             {"steps", std::move(steps)},
                             {"jobs", std::move(jobs)}});
}

std::variant<std::string, SubmitError> DetachedJobs::start_job(rpc::ExecParams& p, std::string id) {
  const uint64_t seq = queue_.next_job_id();
  if (id.empty()) id = std::to_string(seq);
  auto rec = records_.create(id, seq);
  if (auto* e = std::get_if<SubmitError>(&rec)) return *e;
  const uint32_t ri = std::get<uint32_t>(rec);
  records_.describe(ri, p, queue_.session_secrets(p.session_id));
  auto slot = queue_.enqueue(p, {ri, seq, false});
  if (auto* e = std::get_if<SubmitError>(&slot)) {
    records_.abandon(ri);
    return *e;
  }
  records_.publish(ri);
  unsettled_.emplace_back(ri, seq);
  return id;
}

void DetachedJobs::list(rpc::JobListParams& p, Reply r) {
  rpc::Array jobs;
  for (uint32_t i : records_.all()) {
    records_.settle(i);
    if (!p.state.empty() && p.state != views_.state(i)) continue;
    if (!p.session_id.empty() && p.session_id != records_.at(i).session_id) continue;
    jobs.push_back(views_.status(i));
  }
  out_.answer(r, rpc::Object{{"jobs", std::move(jobs)}});
}

void DetachedJobs::status(std::string& id, Reply r) {
  if (auto rec = find(id, r)) out_.answer(r, views_.status(*rec));
}

void DetachedJobs::forget(std::string& id, Reply r) {
  auto rec = find(id, r);
  if (!rec) return;
  const shm::JobRecord& job = records_.at(*rec);
  auto refuse = [&](const std::string& why) {
    out_.fail(r, to_rpc(JobError{JobError::kWrongState, "job " + id + why, views_.state(*rec)}));
  };
  if (!JobRecords::settled(job))
    return refuse(" has not finished; cancel it (job_cancel) or wait for it first");
  if (job.plan_flags & shm::kPlanAttached)
    return refuse(
        " is the plan of an execute_chain/_parallel/_dag call; it goes when that call is "
        "answered");
  if (job.plan)
    return refuse(" is a step of plan " + std::string(records_.at(job.plan.index()).id) +
                  "; forget the plan");
  views_.forget_hints(*rec);
  records_.forget(*rec);
  out_.answer(r, rpc::Object{{"job_id", id}, {"forgotten", true}});
}

void DetachedJobs::wait(rpc::JobWaitParams& p, Reply r) {
  auto rec = find(p.job_id, r);
  if (!rec) return;
  if (JobRecords::settled(records_.at(*rec))) return out_.answer(r, views_.result(*rec, p));
  if (p.timeout_s && *p.timeout_s == 0) return out_.answer(r, views_.status(*rec));
  std::optional<double> wait_s = p.timeout_s;
  park(r, *rec, wait_s, std::move(p));
}

void DetachedJobs::output(rpc::JobOutputParams& p, Reply r, Shape shape) {
  auto rec = find(p.job_id, r);
  if (!rec) return;
  const uint64_t seen_end = records_.at(*rec).spool_end.load(std::memory_order_acquire);
  bool ready = true;
  auto out = views_.output(*rec, p, ready);
  if (auto* e = std::get_if<JobError>(&out)) return out_.fail(r, to_rpc(*e));
  if (ready || !p.wait_s || *p.wait_s == 0) {
    auto answer = shaped(*rec, std::move(std::get<rpc::Object>(out)), shape);
    if (auto* e = std::get_if<rpc::RpcError>(&answer)) return out_.fail(r, *e);
    return out_.answer(r, std::get<rpc::Object>(answer));
  }
  std::optional<double> wait_s = p.wait_s;
  if (Waiter* w = park(r, *rec, wait_s, std::move(p), false, seen_end)) w->shape = std::move(shape);
}

std::variant<rpc::Object, rpc::RpcError> DetachedJobs::shaped(uint32_t rec, rpc::Object o,
                                                              const Shape& shape) {
  if (!shape) return o;
  rpc::Object status = views_.status(rec);
  const rpc::Value* code = status.if_contains("exit_code");
  const rpc::Value* eof = o.if_contains("eof");
  if (eof && eof->is_bool() && eof->get_bool() && code &&
      !(code->is_int64() && code->get_int64() == 0)) {
    rpc::JobOutputParams err;
    err.encoding = OutputEncoding::kUtf8;  // an error message's text
    err.job_id = records_.at(rec).id;
    err.stream = shm::SpoolView::kStderr;
    err.max_bytes = 4096;
    bool ready = true;
    auto read = views_.output(rec, err, ready);
    if (auto* r = std::get_if<rpc::Object>(&read))
      if (rpc::Value* data = r->if_contains("data")) status["stderr"] = std::move(*data);
  }
  return shape(std::move(o), std::move(status));
}

void DetachedJobs::cancel(rpc::JobSignalParams& p, Reply r) {
  if (signal_attached(p, r, true)) return;
  if (auto rec = find(p.job_id, r)) out_.answer(r, cancel_one(*rec, p));
}

void DetachedJobs::signal(rpc::JobSignalParams& p, Reply r) {
  if (signal_attached(p, r, false)) return;
  auto rec = find(p.job_id, r);
  if (!rec) return;
  if (auto e = signal_one(*rec, p.signal, p.foreground)) return out_.fail(r, to_rpc(*e));
  out_.answer(r, rpc::Object{{"job_id", p.job_id}, {"signal", signal_value(p.signal)}});
}

void DetachedJobs::run_plan(rpc::PlanParams& p, Reply r) {
  auto plan = plans_.submit(p, "", true);
  if (auto* e = std::get_if<SubmitError>(&plan)) return out_.fail(r, to_rpc(*e));
  rpc::JobWaitParams wait;
  wait.encoding = p.encoding;
  wait.max_output_bytes = p.max_output_bytes;
  park(r, std::get<uint32_t>(plan), std::nullopt, std::move(wait), true);
}

rpc::Object DetachedJobs::cancel_one(uint32_t rec, const rpc::JobSignalParams& how) {
  const shm::JobRecord& r = records_.at(rec);
  rpc::Object result{{"job_id", r.id}, {"cancelled", false}};
  if (JobRecords::settled(r)) {
    result["state"] = views_.state(rec);
    return result;
  }
  if (JobRecords::is_plan(r)) {
    plans_.cancel(rec, how);
  } else if (queue_.jobs().load(r.slot).state == JobState::kWaiting) {
    // A plan step not started: it never will.
    records_.skip(rec, "skipped: cancelled before it started");
  } else {
    uint32_t grace = how.grace_ms ? uint32_t(std::min<uint64_t>(*how.grace_ms, 3'600'000))
                                  : shm::kCancelGraceDefault;
    if (queue_.stop(r.slot, "cancelled before it started", uint32_t(how.signal), grace))
      records_.settle(rec);
  }
  result["cancelled"] = true;
  result["state"] = views_.state(rec);
  return result;
}

bool DetachedJobs::signal_attached(const rpc::JobSignalParams& p, Reply& r, bool cancel) {
  if (records_.find(p.job_id)) return false;
  auto slot = attached_.find(p.job_id);
  if (!slot) return false;
  const shm::JobWord w = queue_.jobs().load(slot->first);
  const bool ended = w.generation != slot->second || shm::is_terminal(w.state);
  const std::string state = state_name(w.state);
  if (cancel) {
    if (!ended) {
      const uint32_t grace = p.grace_ms ? uint32_t(std::min<uint64_t>(*p.grace_ms, 3'600'000))
                                        : shm::kCancelGraceDefault;
      queue_.stop(slot->first, "cancelled before it started", uint32_t(p.signal), grace);
    }
    out_.answer(r, rpc::Object{{"job_id", p.job_id}, {"cancelled", !ended}, {"state", state}});
    return true;
  }
  if (w.state != JobState::kRunning || ended) {
    out_.fail(r, to_rpc(JobError{JobError::kWrongState,
                                 "job " + p.job_id + " is not running; signals go to running jobs",
                                 state}));
    return true;
  }
  queue_.signal(slot->first, p.signal, p.foreground);
  out_.answer(r, rpc::Object{{"job_id", p.job_id}, {"signal", signal_value(p.signal)}});
  return true;
}

std::optional<JobError> DetachedJobs::signal_one(uint32_t rec, int sig,
                                                 std::optional<bool> foreground) {
  const shm::JobRecord& r = records_.at(rec);
  if (JobRecords::is_plan(r) && !JobRecords::settled(r)) {  // to its running steps
    bool sent = false;
    for (uint32_t s : records_.steps_of(rec)) sent |= !signal_one(s, sig, foreground);
    if (sent) return std::nullopt;
    return JobError{JobError::kWrongState,
                    "plan " + std::string(r.id) + " has no running step to signal", "running"};
  }
  std::string state = views_.state(rec);
  if (state != "running")
    return JobError{JobError::kWrongState,
                    "job " + std::string(r.id) + " is not running; signals go to running jobs",
                    state};
  queue_.signal(r.slot, sig, foreground);
  return std::nullopt;
}

DetachedJobs::Waiter* DetachedJobs::park(Reply& r, uint32_t rec, std::optional<double> wait_s,
                                         WaitParams params, bool owner, uint64_t seen_end) {
  if (out_.over_inflight(r)) {
    out_.fail(r, out_.inflight_error());
    return nullptr;
  }
  Waiter w;
  w.reply = std::move(r);
  w.record = rec;
  w.seq = records_.at(rec).seq;
  w.seen_end = seen_end;
  if (wait_s)
    w.deadline_ns =
        monotonic_ns() + uint64_t(std::ceil(std::min(*wait_s * 1e9, double(kMaxWaitNs))));
  w.params = std::move(params);
  w.owner = owner;
  if (w.deadline_ns && (!next_deadline_ns_ || w.deadline_ns < next_deadline_ns_))
    next_deadline_ns_ = w.deadline_ns;
  records_.pin(rec);  // not forgotten by retention while someone waits for it
  if (owner) plans_.own(rec);
  waiters_.push_back(std::move(w));
  return &waiters_.back();
}

void DetachedJobs::unpark(const Waiter& w) {
  if (records_.at(w.record).seq != w.seq) return;  // forgotten: its pins went with it
  records_.unpin(w.record);
  if (w.owner) plans_.disown(w.record);
}

void DetachedJobs::service() {
  next_deadline_ns_ = 0;  // recomputed from the waiters left below
  size_t before = unsettled_.size();
  std::erase_if(unsettled_, [&](const auto& job) {
    const shm::JobRecord& r = records_.at(job.first);
    return r.seq != job.second || !records_.table().live(job.first) || records_.settle(job.first);
  });
  bool plan_ended = plans_.service();
  if (!waiters_.empty()) {
    const uint64_t now = monotonic_ns();
    std::vector<Waiter> parked;
    parked.swap(waiters_);
    for (Waiter& w : parked) {
      // A client that does not read gets no more answers built (the
      // transport's drained() comes back here once it has read).
      const bool held = out_.backlogged(w.reply.conn_id);
      bool expired = w.deadline_ns && now >= w.deadline_ns;
      if (!held && try_answer(w, expired)) continue;
      if (!held && w.deadline_ns && (!next_deadline_ns_ || w.deadline_ns < next_deadline_ns_))
        next_deadline_ns_ = w.deadline_ns;
      waiters_.push_back(std::move(w));
    }
  }
  // After the answers (a job that just ended is not forgotten before its
  // waiters hear of it): a job's output may want the room of older ones.
  if (unsettled_.size() != before || plan_ended) expire();
}

bool DetachedJobs::try_answer(Waiter& w, bool timed_out) {
  auto done = [&](const auto& answer) {
    unpark(w);
    if constexpr (std::is_same_v<std::decay_t<decltype(answer)>, rpc::RpcError>)
      out_.fail(w.reply, answer);
    else
      out_.answer(w.reply, answer);
    return true;
  };
  if (out_.batch_full(w.reply)) return done(to_rpc(TransportError::kBatchFull, kMaxBacklogBytes));
  const shm::JobRecord& r = records_.at(w.record);
  if (!records_.table().live(w.record) || r.seq != w.seq)
    return done(to_rpc(JobError{JobError::kForgotten, {}, {}}));
  if (auto* p = std::get_if<rpc::JobWaitParams>(&w.params)) {
    if (JobRecords::settled(r)) {
      rpc::Object result = views_.result(w.record, *p);
      done(result);
      if (w.owner) records_.forget(w.record);  // an attached plan, answered: done with it
      return true;
    }
    if (timed_out) return done(views_.status(w.record));
    return false;
  }
  if (std::holds_alternative<Interact>(w.params)) {
    auto answer = interact_answer(w);
    if (!answer) return false;
    if (auto* e = std::get_if<JobError>(&*answer)) return done(to_rpc(*e));
    return done(std::get<rpc::Object>(*answer));
  }
  auto& p = std::get<rpc::JobOutputParams>(w.params);
  uint64_t end = r.spool_end.load(std::memory_order_acquire);
  if (!timed_out && !JobRecords::settled(r) && end == w.seen_end) return false;  // nothing new
  w.seen_end = end;
  bool ready = true;
  auto out = views_.output(w.record, p, ready);
  if (auto* e = std::get_if<JobError>(&out)) return done(to_rpc(*e));
  if (!ready && !timed_out) return false;
  auto answer = shaped(w.record, std::move(std::get<rpc::Object>(out)), w.shape);
  if (auto* e = std::get_if<rpc::RpcError>(&answer)) return done(*e);
  return done(std::get<rpc::Object>(answer));
}

void DetachedJobs::expire() {
  records_.expire(unfinished());
}

void DetachedJobs::client_gone(uint64_t conn_id) {
  std::erase_if(waiters_, [&](Waiter& w) {
    if (w.reply.conn_id != conn_id) return false;
    unpark(w);
    out_.drop(w.reply);
    return true;
  });
}

int DetachedJobs::next_wait_ms(int tick_ms) const {
  if (!next_deadline_ns_) return tick_ms;
  uint64_t now = monotonic_ns();
  if (next_deadline_ns_ <= now) return 0;
  return int(
      std::min<uint64_t>(uint64_t(tick_ms), (next_deadline_ns_ - now + 999'999) / 1'000'000));
}

}  // namespace sp::frontend
