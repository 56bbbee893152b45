// Detached jobs: job_submit and the methods that find a job again by its
// job_id (status, wait, output by cursor, cancel, signal, list, forget).
// Their state lives in shm (JobRecords) and their output in spool files the
// workers write, so all of it outlives this process.
#include <signal.h>
#include <string.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>

#include "common/clock.h"
#include "common/log.h"
#include "frontend/server.h"
#include "frontend/utf8.h"
#include "shm/codec.h"
#include "shm/repair.h"

namespace sp::frontend {

namespace json = boost::json;
using shm::JobState;

namespace {

constexpr uint64_t kMaxWaitNs = 24ull * 3600 * 1'000'000'000;  // longer waits are cut to a day

json::value time_or_null(uint64_t unix_ms) {
  return unix_ms ? json::value(unix_ms) : json::value(nullptr);
}

// Text for JSON: base64, or UTF-8 with invalid bytes replaced. With `hold`,
// an incomplete sequence at the end is left out; returns its length.
size_t encode_text(std::string& out, std::string_view bytes, bool base64, bool hold) {
  if (base64) {
    rpc::append_base64(out, bytes);
    return 0;
  }
  std::string carry;
  rpc::append_utf8_sanitized(out, bytes, carry, !hold);
  return carry.size();
}

}  // namespace

const char* state_name(JobState s) {
  switch (s) {
    case JobState::kFree:
    case JobState::kAllocated:
    case JobState::kQueued:
      return "queued";
    case JobState::kClaimed:
    case JobState::kRunning:
      return "running";
    case JobState::kExited:
      return "exited";
    case JobState::kTimedOut:
      return "timed_out";
    case JobState::kCancelled:
      return "cancelled";
    case JobState::kFailed:
      return "failed";
    case JobState::kLost:
      return "lost";
    case JobState::kWaiting:
      return "waiting";
    case JobState::kSkipped:
      return "skipped";
  }
  return "lost";
}

const char* plan_kind_name(uint32_t kind) {
  switch (shm::PlanKind(kind)) {
    case shm::PlanKind::kChain:
      return "chain";
    case shm::PlanKind::kParallel:
      return "parallel";
    case shm::PlanKind::kDag:
      return "dag";
    case shm::PlanKind::kNotAPlan:
      break;
  }
  return "";
}

json::value signal_name(int sig) {
  if (!sig) return nullptr;
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? json::value(std::string("SIG") + abbrev) : json::value(sig);
}

bool Frontend::job_method(Conn& c, rpc::Call& call, Reply& r) {
  const std::string& m = call.method;
  if (m.rfind("job_", 0) != 0) return false;
  auto fail = [&](const rpc::RpcError& e) { answer(r, rpc::error_text(r.id, e)); };
  auto ok = [&](const json::value& result) { answer(r, rpc::result_text(r.id, result)); };
  rpc::RpcError err;
  if (m == "job_submit") {
    json::value result;
    if (auto e = job_submit(call.params, call.duplicate_node, result))
      fail(*e);
    else
      ok(result);
    return true;
  }
  if (m == "job_list") {
    auto parsed = rpc::parse_job_list_params(call.params);
    if (auto* e = std::get_if<rpc::RpcError>(&parsed)) return fail(*e), true;
    auto& p = std::get<rpc::JobListParams>(parsed);
    json::array list;
    for (uint32_t i : records_.all()) {
      records_.settle(i);
      if (!p.state.empty() && p.state != job_state(i)) continue;
      if (!p.session_id.empty() && p.session_id != records_.at(i).session_id) continue;
      list.push_back(job_status(i));
    }
    ok(json::object{{"jobs", std::move(list)}});
    return true;
  }
  if (m == "job_status" || m == "job_forget") {
    auto parsed = rpc::parse_job_id_param(call.params);
    if (auto* e = std::get_if<rpc::RpcError>(&parsed)) return fail(*e), true;
    auto rec = lookup(std::get<std::string>(parsed), err);
    if (!rec) return fail(err), true;
    const std::string& id = std::get<std::string>(parsed);
    bool done = records_.settle(*rec);
    if (m == "job_status") return ok(job_status(*rec)), true;
    const shm::JobRecord& job = records_.at(*rec);
    auto refuse = [&](const std::string& why) {
      fail({rpc::Code::WrongState, "job " + id + why, {{"state", job_state(*rec)}}});
      return true;
    };
    if (!done) return refuse(" has not finished; cancel it (job_cancel) or wait for it first");
    if (job.plan_flags & shm::kPlanAttached)
      return refuse(
          " is the plan of an execute_chain/_parallel/_dag call; it goes when that "
          "call is answered");
    if (job.plan)
      return refuse(" is a step of plan " + std::string(records_.at(job.plan - 1).id) +
                    "; forget the plan");
    read_pos_.erase(*rec);
    for (uint32_t s : records_.steps_of(*rec)) read_pos_.erase(s);
    records_.forget(*rec);
    ok(json::object{{"job_id", id}, {"forgotten", true}});
    return true;
  }
  if (m == "job_wait") {
    auto parsed = rpc::parse_job_wait_params(call.params);
    if (auto* e = std::get_if<rpc::RpcError>(&parsed)) return fail(*e), true;
    auto& p = std::get<rpc::JobWaitParams>(parsed);
    auto rec = lookup(p.job_id, err);
    if (!rec) return fail(err), true;
    if (records_.settle(*rec)) return ok(job_result(*rec, p)), true;
    if (p.timeout_s && *p.timeout_s == 0) return ok(job_status(*rec)), true;
    std::optional<double> wait = p.timeout_s;
    park(c, r, *rec, wait, std::move(p));
    return true;
  }
  if (m == "job_output") {
    auto parsed = rpc::parse_job_output_params(call.params);
    if (auto* e = std::get_if<rpc::RpcError>(&parsed)) return fail(*e), true;
    auto& p = std::get<rpc::JobOutputParams>(parsed);
    auto rec = lookup(p.job_id, err);
    if (!rec) return fail(err), true;
    records_.settle(*rec);
    const uint64_t seen_end = records_.at(*rec).spool_end.load(std::memory_order_acquire);
    bool ready = true;
    auto out = job_output(*rec, p, ready);
    if (auto* e = std::get_if<rpc::RpcError>(&out)) return fail(*e), true;
    if (ready || !p.wait_s || *p.wait_s == 0) return ok(std::get<json::object>(out)), true;
    std::optional<double> wait = p.wait_s;
    park(c, r, *rec, wait, std::move(p), false, seen_end);
    return true;
  }
  if (m == "job_cancel" || m == "job_signal") {
    bool cancel = m == "job_cancel";
    auto parsed = rpc::parse_job_signal_params(call.params, !cancel);
    if (auto* e = std::get_if<rpc::RpcError>(&parsed)) return fail(*e), true;
    auto& p = std::get<rpc::JobSignalParams>(parsed);
    auto rec = lookup(p.job_id, err);
    if (!rec) return fail(err), true;
    records_.settle(*rec);
    json::value result;
    auto e = cancel ? job_cancel(*rec, p, result) : job_signal(*rec, p.signal);
    if (e) return fail(*e), true;
    if (!cancel) result = json::object{{"job_id", p.job_id}, {"signal", signal_name(p.signal)}};
    ok(result);
    return true;
  }
  fail({rpc::Code::MethodNotFound, "method not found: " + m});
  return true;
}

std::optional<rpc::RpcError> Frontend::job_submit(const json::value& params,
                                                  const std::optional<std::string>& duplicate_node,
                                                  json::value& result) {
  auto parsed = rpc::parse_job_submit_params(params, duplicate_node);
  if (auto* e = std::get_if<rpc::RpcError>(&parsed)) return *e;
  auto& p = std::get<rpc::JobSubmitParams>(parsed);
  if (seg_.header().draining.load() || stopping_)
    return rpc::RpcError{rpc::Code::ShuttingDown, "the daemon is shutting down"};
  // A client-chosen id makes a retried submit idempotent: the job it names.
  if (!p.job_id.empty())
    if (auto rec = records_.find(p.job_id)) {
      records_.settle(*rec);
      result = json::object{{"job_id", p.job_id}, {"state", job_state(*rec)}, {"existing", true}};
      return std::nullopt;
    }
  if (p.plan) {
    auto plan = submit_plan(*p.plan, p.job_id, false);
    if (auto* e = std::get_if<rpc::RpcError>(&plan)) return *e;
    uint32_t i = std::get<uint32_t>(plan);
    json::array steps;
    for (uint32_t s : records_.steps_of(i)) steps.push_back(json::string(records_.at(s).id));
    result = json::object{{"job_id", records_.at(i).id}, {"state", job_state(i)}, {"steps", steps}};
    return std::nullopt;
  }
  uint64_t seq = seg_.header().next_job_id.fetch_add(1, std::memory_order_relaxed);
  std::string id = p.job_id.empty() ? std::to_string(seq) : p.job_id;
  auto rec = records_.create(id, seq);
  if (!rec) return rpc::RpcError{rpc::Code::LimitExceeded, rec.error().context};
  fill_record(records_.at(*rec), p.exec);
  auto slot = enqueue(p.exec, *rec + 1, seq);
  if (auto* e = std::get_if<rpc::RpcError>(&slot)) {
    records_.abandon(*rec);
    return *e;
  }
  records_.publish(*rec);
  unsettled_.emplace_back(*rec, seq);
  result = json::object{{"job_id", id}, {"state", "queued"}};
  return std::nullopt;
}

// What a job record shows of its params: session, command line (cut to fit,
// at a character boundary) and output bounds.
void Frontend::fill_record(shm::JobRecord& r, const rpc::ExecParams& p) const {
  std::memcpy(r.session_id, p.session_id.data(),
              std::min(p.session_id.size(), sizeof r.session_id - 1));
  std::string command = p.command;
  for (const std::string& a : p.args) command += " " + a;
  size_t cut = std::min(command.size(), sizeof r.command - 1);
  while (cut > 0 && cut < command.size() &&
         (static_cast<unsigned char>(command[cut]) & 0xC0) == 0x80)
    --cut;
  std::memcpy(r.command, command.data(), cut);
  r.output_cap = std::min(o_.job_spool_bytes, p.max_output_bytes.value_or(UINT64_MAX));
  r.kill_on_cap = p.kill_on_output_cap;
}

const char* Frontend::job_state(uint32_t rec) const {
  const shm::JobRecord& r = records_.at(rec);
  if (uint32_t final_state = r.final_state.load(std::memory_order_acquire))
    return state_name(JobState(final_state));
  if (JobRecords::is_plan(r)) return "running";
  return state_name(jobs_.load(r.slot).state);
}

std::optional<uint32_t> Frontend::lookup(const std::string& id, rpc::RpcError& err) const {
  auto rec = records_.find(id);
  if (!rec)
    err = {rpc::Code::NotFound,
           "no job with job_id " + id + " (never submitted, forgotten, or evicted)",
           {{"job_id", id}}};
  return rec;
}

json::object Frontend::job_status(uint32_t rec) const {
  const shm::JobRecord& r = records_.at(rec);
  json::object o;
  o["job_id"] = r.id;
  o["command"] = r.command;
  o["session_id"] = r.session_id[0] ? json::value(r.session_id) : json::value(nullptr);
  o["submitted_at_ms"] = r.submitted_unix_ms;
  o["state"] = job_state(rec);
  if (JobRecords::settled(r)) {
    shm::JobOutcome out = shm::decode_result(r.result, r.result_words);
    o["exit_code"] = out.exit_code;
    o["signal"] = signal_name(out.signal);
    o["error"] = out.failure.empty() ? json::value(nullptr) : json::value(out.failure);
    o["pid"] = nullptr;
    o["started_at_ms"] = time_or_null(r.started_unix_ms);
    o["finished_at_ms"] = r.finished_unix_ms;
    // Each time was taken from the wall clock on its own: never below 0.
    o["duration_ms"] = r.started_unix_ms
                           ? r.finished_unix_ms - std::min(r.finished_unix_ms, r.started_unix_ms)
                           : 0;
  } else if (JobRecords::is_plan(r)) {
    for (const char* k : {"exit_code", "signal", "error", "pid", "finished_at_ms"}) o[k] = nullptr;
    o["started_at_ms"] = nullptr;
    o["duration_ms"] = unix_ms() - r.submitted_unix_ms;
  } else {
    const shm::JobSlot& s = jobs_.slot(r.slot);
    o["exit_code"] = nullptr;
    o["signal"] = nullptr;
    o["error"] = nullptr;
    int32_t pid = s.pgid.load();
    o["pid"] = pid > 0 ? json::value(pid) : json::value(nullptr);
    uint64_t start = s.start_ns.load(), now = monotonic_ns();
    o["started_at_ms"] = start ? json::value(unix_ms() - (now - std::min(now, start)) / 1'000'000)
                               : json::value(nullptr);
    o["finished_at_ms"] = nullptr;
    o["duration_ms"] = start ? (now - std::min(now, start)) / 1'000'000 : 0;
  }
  if (JobRecords::is_plan(r)) {
    o["strategy"] = plan_kind_name(r.plan_kind);
    o["steps"] = plan_steps(rec);
    return o;
  }
  if (r.plan) o["plan"] = records_.at(r.plan - 1).id;
  o["stdout_bytes"] = r.out_bytes[0].load();
  o["stderr_bytes"] = r.out_bytes[1].load();
  o["truncated"] = r.truncated.load() != 0;
  return o;
}

json::object Frontend::job_result(uint32_t rec, const rpc::JobWaitParams& p) {
  if (JobRecords::is_plan(records_.at(rec))) return plan_result(rec, p);
  // As execute answers, from the spool: each stream up to the cap.
  json::object o = job_status(rec);
  const shm::JobRecord& r = records_.at(rec);
  uint64_t cap = std::min(o_.max_output_bytes, p.max_output_bytes.value_or(UINT64_MAX));
  bool truncated = r.truncated.load() != 0;
  const uint64_t end = r.spool_end.load(std::memory_order_acquire);
  auto fd = end ? records_.open_spool(rec) : Result<UniqueFd>(UniqueFd());
  for (int i = 0; i < 2; ++i) {
    std::string bytes;
    uint64_t total = r.out_bytes[i].load();
    if (fd && *fd && total) {
      auto got = shm::read_spool(fd->get(), end, shm::SpoolView(i), 0, cap, {});
      if (got)
        for (auto& chunk : got->chunks) bytes += chunk.data;
    }
    truncated |= total > bytes.size();
    std::string text;
    encode_text(text, bytes, p.base64, false);
    o[i ? "stderr" : "stdout"] = std::move(text);
  }
  o["status"] = o["state"];
  o["timed_out"] = o["state"].as_string() == "timed_out";
  o["truncated"] = truncated;
  if (p.base64) o["encoding"] = "base64";
  return o;
}

std::variant<json::object, rpc::RpcError> Frontend::job_output(uint32_t rec,
                                                               const rpc::JobOutputParams& p,
                                                               bool& ready) {
  const shm::JobRecord& r = records_.at(rec);
  if (JobRecords::is_plan(r)) {
    std::string steps;
    for (uint32_t s : records_.steps_of(rec))
      steps += (steps.empty() ? "" : ", ") + std::string(records_.at(s).id);
    return rpc::RpcError{rpc::Code::InvalidParams,
                         "invalid params: job " + std::string(r.id) +
                             " is a plan and has no output of its own; read its steps: " + steps};
  }
  // Read before the spool's end, so that a job seen settled has all of its
  // output below that end.
  const bool done = JobRecords::settled(r);
  const uint64_t end = r.spool_end.load(std::memory_order_acquire);
  const int view = int(p.stream);
  shm::SpoolRead got;
  shm::SpoolPos* hint = nullptr;
  if (end > 0) {
    auto fd = records_.open_spool(rec);
    if (!fd)
      return rpc::RpcError{rpc::Code::Internal,
                           "job " + std::string(r.id) + ": " + fd.error().message()};
    auto& [seq, pos] = read_pos_[rec];
    if (seq != r.seq) seq = r.seq, pos = {};
    hint = &pos;
    // UTF-8 text must be able to take one whole character (4 bytes).
    uint64_t max = p.base64 ? p.max_bytes : std::max<uint64_t>(p.max_bytes, 4);
    auto read = shm::read_spool(fd->get(), end, shm::SpoolView(view), p.cursor, max, pos);
    if (!read)
      return rpc::RpcError{rpc::Code::Internal,
                           "job " + std::string(r.id) + ": " + read.error().message()};
    got = std::move(read).value();
  } else {
    got.next_cursor = p.cursor;
    got.at_end = true;
  }
  // Past the end once the job has ended and all the output it published was
  // read (taken from the scan: a worker killed mid-chunk may have counted
  // bytes it never published).
  const bool eof = done && got.at_end;
  json::object o;
  json::array chunks;
  std::string data;
  uint64_t next = got.next_cursor;
  for (size_t k = 0; k < got.chunks.size(); ++k) {
    const auto& chunk = got.chunks[k];
    bool last = k + 1 == got.chunks.size();
    std::string text;
    // Hold back an incomplete character at the end: the rest is still to come.
    size_t held = encode_text(text, chunk.data, p.base64, last && !eof);
    next -= held;
    data += text;
    if (view == 2)
      chunks.push_back(json::object{
          {"stream", chunk.stream == shm::kStreamStderr ? "stderr" : "stdout"}, {"data", text}});
  }
  if (p.base64 && got.chunks.size() > 1) {  // one encoding of all: padding only at its end
    std::string raw;
    for (const auto& chunk : got.chunks) raw += chunk.data;
    data.clear();
    encode_text(data, raw, true, false);
  }
  // The next read starts at `next`: keep the resume point only if it is not
  // past it (after a held-back character it may be).
  if (hint && got.resume.at[view] <= next) *hint = got.resume;
  ready = next != p.cursor || eof;
  o["job_id"] = r.id;
  o["data"] = std::move(data);
  if (view == 2) o["chunks"] = std::move(chunks);
  o["cursor"] = p.cursor;
  o["next_cursor"] = next;
  o["eof"] = eof;
  o["truncated"] = r.truncated.load() != 0;
  o["state"] = job_state(rec);
  if (p.base64) o["encoding"] = "base64";
  return o;
}

std::optional<rpc::RpcError> Frontend::job_cancel(uint32_t rec, const rpc::JobSignalParams& p,
                                                  json::value& result) {
  const shm::JobRecord& r = records_.at(rec);
  result = json::object{{"job_id", r.id}, {"cancelled", false}};
  if (JobRecords::settled(r)) {
    result.as_object()["state"] = job_state(rec);
    return std::nullopt;
  }
  if (JobRecords::is_plan(r)) {
    cancel_plan(rec, p);
    result.as_object()["cancelled"] = true;
    result.as_object()["state"] = job_state(rec);
    return std::nullopt;
  }
  shm::JobWord w = jobs_.load(r.slot);
  if (w.state == JobState::kWaiting) {  // a plan step not started: it never will
    records_.skip(rec, "skipped: cancelled before it started");
    result.as_object()["cancelled"] = true;
    result.as_object()["state"] = "skipped";
    return std::nullopt;
  }
  if (shm::finish_queued(seg_, r.slot, w, JobState::kCancelled, "cancelled before it started")) {
    records_.settle(rec);
  } else {
    jobs_.request_cancel(r.slot, uint32_t(p.signal),
                         p.grace_ms ? uint32_t(std::min<uint64_t>(*p.grace_ms, 3'600'000))
                                    : shm::kCancelGraceDefault);
    ring_owner(jobs_.load(r.slot));
  }
  result.as_object()["cancelled"] = true;
  result.as_object()["state"] = job_state(rec);
  return std::nullopt;
}

std::optional<rpc::RpcError> Frontend::job_signal(uint32_t rec, int sig) {
  const shm::JobRecord& r = records_.at(rec);
  if (JobRecords::is_plan(r) && !JobRecords::settled(r)) {  // to its running steps
    bool sent = false;
    for (uint32_t s : records_.steps_of(rec)) sent |= !job_signal(s, sig);
    if (sent) return std::nullopt;
    return rpc::RpcError{rpc::Code::WrongState,
                         "plan " + std::string(r.id) + " has no running step to signal",
                         {{"state", "running"}}};
  }
  std::string_view state = job_state(rec);
  if (state != "running")
    return rpc::RpcError{rpc::Code::WrongState,
                         "job " + std::string(r.id) + " is not running; signals go to running jobs",
                         {{"state", state}}};
  jobs_.request_signal(r.slot, sig);
  ring_owner(jobs_.load(r.slot));
  return std::nullopt;
}

void Frontend::park(Conn& c, Reply& r, uint32_t rec, std::optional<double> wait_s,
                    std::variant<rpc::JobWaitParams, rpc::JobOutputParams> params, bool owner,
                    uint64_t seen_end) {
  if (c.unfinished() >= o_.max_inflight) return answer(r, rpc::error_text(r.id, inflight_error()));
  ++c.waits;
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
  if (owner) owned_plans_.insert(rec);
  waiters_.push_back(std::move(w));
}

void Frontend::unpark(const Waiter& w) {
  if (records_.at(w.record).seq != w.seq) return;  // forgotten: its pins went with it
  records_.unpin(w.record);
  if (w.owner) owned_plans_.erase(w.record);
}

// Settles detached jobs that ended and answers the waiters whose job ended,
// got output, or whose wait ran out.
void Frontend::service_detached() {
  next_deadline_ns_ = 0;  // recomputed from the waiters left below
  size_t before = unsettled_.size();
  std::erase_if(unsettled_, [&](const auto& job) {
    const shm::JobRecord& r = records_.at(job.first);
    return r.seq != job.second || r.state.load() != uint32_t(shm::RecordState::kLive) ||
           records_.settle(job.first);
  });
  size_t plans = open_plans_.size();
  service_plans();
  if (!waiters_.empty()) {
    const uint64_t now = monotonic_ns();
    std::vector<Waiter> parked;
    parked.swap(waiters_);
    for (Waiter& w : parked) {
      // A client that does not read gets no more answers built (flush()
      // comes back here once it has read).
      Conn* c = conn(w.reply.conn_id);
      const bool held = c && c->backlog() >= kMaxBacklogBytes;
      bool expired = w.deadline_ns && now >= w.deadline_ns;
      if (!held && try_answer(w, expired)) continue;
      if (!held && w.deadline_ns && (!next_deadline_ns_ || w.deadline_ns < next_deadline_ns_))
        next_deadline_ns_ = w.deadline_ns;
      waiters_.push_back(std::move(w));
    }
  }
  // After the answers (a job that just ended is not forgotten before its
  // waiters hear of it): a job's output may want the room of older ones.
  if (unsettled_.size() != before || open_plans_.size() != plans) expire();
}

bool Frontend::try_answer(Waiter& w, bool timed_out) {
  Conn* c = conn(w.reply.conn_id);
  if (!c) {
    unpark(w);
    return true;
  }
  auto done = [&](const std::string& text) {
    --c->waits;
    request_finished(*c);
    unpark(w);
    answer(w.reply, text);
    return true;
  };
  if (batch_full(w.reply)) return done(rpc::error_text(w.reply.id, batch_full_error()));
  const shm::JobRecord& r = records_.at(w.record);
  if (r.state.load() != uint32_t(shm::RecordState::kLive) || r.seq != w.seq)
    return done(rpc::error_text(w.reply.id, {rpc::Code::NotFound, "the job was forgotten"}));
  if (auto* p = std::get_if<rpc::JobWaitParams>(&w.params)) {
    if (JobRecords::settled(r)) {
      std::string text = rpc::result_text(w.reply.id, job_result(w.record, *p));
      done(text);
      if (w.owner) records_.forget(w.record);  // an attached plan, answered: done with it
      return true;
    }
    if (timed_out) return done(rpc::result_text(w.reply.id, job_status(w.record)));
    return false;
  }
  auto& p = std::get<rpc::JobOutputParams>(w.params);
  uint64_t end = r.spool_end.load(std::memory_order_acquire);
  if (!timed_out && !JobRecords::settled(r) && end == w.seen_end) return false;  // nothing new
  w.seen_end = end;
  bool ready = true;
  auto out = job_output(w.record, p, ready);
  if (auto* e = std::get_if<rpc::RpcError>(&out)) return done(rpc::error_text(w.reply.id, *e));
  if (!ready && !timed_out) return false;
  return done(rpc::result_text(w.reply.id, std::get<json::object>(out)));
}

// Retention, keeping spool room for every unfinished detached job and plan.
void Frontend::expire() {
  records_.expire(unsettled_.size() + open_plans_.size());
}

void Frontend::drop_waiters(uint64_t conn_id) {
  std::erase_if(waiters_, [&](const Waiter& w) {
    if (w.reply.conn_id != conn_id) return false;
    unpark(w);
    return true;
  });
}

// The epoll timeout: the tick, or sooner when a wait runs out.
int Frontend::next_wait_ms(int tick_ms) const {
  if (!next_deadline_ns_) return tick_ms;
  uint64_t now = monotonic_ns();
  if (next_deadline_ns_ <= now) return 0;
  return int(
      std::min<uint64_t>(uint64_t(tick_ms), (next_deadline_ns_ - now + 999'999) / 1'000'000));
}

}  // namespace sp::frontend
