// Jobs: submission into the shm ring, and servicing the output rings and
// results of the jobs this frontend submitted.
#include <signal.h>
#include <string.h>

#include <boost/json.hpp>
#include <cmath>

#include "common/clock.h"
#include "common/crash_point.h"
#include "common/log.h"
#include "frontend/server.h"
#include "frontend/utf8.h"
#include "shm/codec.h"
#include "shm/output.h"
#include "shm/repair.h"

namespace sp::frontend {

namespace json = boost::json;
using shm::JobState;
using shm::JobWord;

namespace {

constexpr double kMaxTimeoutS = 1e9;         // ~31 years: effectively none, and no overflow
constexpr uint64_t kMaxGraceMs = 3'600'000;  // a kill grace beyond an hour is taken as an hour

// The job's limits and timeout: what it asks for, else the daemon's default,
// else the daemon's ceiling; more than the ceiling is refused.
std::optional<rpc::RpcError> effective_limits(const Options& o, const rpc::ExecParams& p,
                                              shm::Rlimits& limits, uint64_t& timeout_ms) {
  for (const auto& [name, field] : shm::kLimitNames) {
    uint64_t ceiling = o.max_limits.*field;
    uint64_t v = p.limits.*field;
    if (v && ceiling && v > ceiling)
      return rpc::RpcError{rpc::Code::InvalidParams,
                           "invalid params: \"" + std::string(name) + "\" in \"limits\" is " +
                               std::to_string(v) + ", above the daemon's ceiling of " +
                               std::to_string(ceiling)};
    if (!v) v = o.default_limits.*field ? o.default_limits.*field : ceiling;
    limits.*field = v;
  }
  if (p.limits.memory_bytes && o.isolation == "process-group")
    return rpc::RpcError{rpc::Code::InvalidParams,
                         "invalid params: \"memory_bytes\" in \"limits\" needs per-job cgroups, "
                         "which this daemon does not have: " +
                             o.isolation_note};
  double timeout_s = p.timeout_s.value_or(o.default_timeout_s);
  if (o.max_timeout_s > 0) {
    if (timeout_s > o.max_timeout_s)
      return rpc::RpcError{rpc::Code::InvalidParams,
                           "invalid params: \"timeout\" is above the daemon's ceiling of " +
                               fmt::format("{:g}", o.max_timeout_s) + " s"};
    if (timeout_s <= 0) timeout_s = o.max_timeout_s;
  }
  timeout_ms = timeout_s > 0 ? uint64_t(std::ceil(std::min(timeout_s, kMaxTimeoutS) * 1e3)) : 0;
  return std::nullopt;
}

}  // namespace

std::variant<uint32_t, rpc::RpcError> Frontend::enqueue(rpc::ExecParams& p, uint32_t record,
                                                        uint64_t seq, bool waiting) {
  if (seg_.header().draining.load() || stopping_)
    return rpc::RpcError{rpc::Code::ShuttingDown, "the daemon is shutting down"};
  std::optional<EnvPairs> session_env;
  if (!p.session_id.empty()) {
    session_env = sessions_.env_of(p.session_id);
    if (!session_env)
      return rpc::RpcError{rpc::Code::NotFound,
                           "no session with session_id " + p.session_id,
                           {{"session_id", p.session_id}}};
  }
  static const EnvPairs kNone;
  merge_env(env_strings_, base_env_, {session_env ? &*session_env : &kNone, &p.env});
  env_views_.assign(env_strings_.begin(), env_strings_.end());

  argv_views_.clear();
  std::string_view path;
  if (p.shell) {
    path = "/bin/sh";
    argv_views_ = {"sh", "-c", p.command};
    if (!p.args.empty()) argv_views_.push_back("sh");  // $0; args become $1...
  } else {
    path = p.command;
    argv_views_.push_back(p.command);
  }
  for (const std::string& a : p.args) argv_views_.push_back(a);

  shm::Rlimits limits;
  uint64_t timeout_ms = 0;
  if (auto e = effective_limits(o_, p, limits, timeout_ms)) return *e;

  auto slot = jobs_.allocate(alloc_cursor_);
  if (!slot)
    return rpc::queue_full_error(kRetryAfterMs, "queue full: " + std::to_string(jobs_.size()) +
                                                    " jobs are queued or running; retry later");
  shm::JobSlot& s = jobs_.slot(*slot);
  JobWord allocated = jobs_.load(*slot);
  auto grace =
      uint32_t(std::min<uint64_t>(p.kill_grace_ms.value_or(o_.kill_grace_ms), kMaxGraceMs));
  shm::SpecInput in{path, argv_views_, env_views_, p.working_dir, timeout_ms, grace, limits};
  auto words = shm::encode_spec({seg_.spec(*slot), seg_.caps().spec_bytes}, s.spec_words, in);
  if (!words) {
    s.spec_words = seg_.caps().spec_bytes / 8;  // unknown how much was written: zero all next time
    jobs_.transition(*slot, allocated, {JobState::kFree, 0, 0, allocated.generation + 1});
    return rpc::RpcError{rpc::Code::LimitExceeded, words.error().context};
  }
  s.spec_words = *words;
  s.job_id = seq ? seq : seg_.header().next_job_id.fetch_add(1, std::memory_order_relaxed);
  if (record)  // a detached job: the record names its slot before the job is queued
    records_.table().bind(record - 1, *slot, allocated.generation);
  if (waiting) {  // counted as submitted when it is queued (Frontend::promote)
    jobs_.transition(*slot, allocated, allocated.with_state(JobState::kWaiting));
    return *slot;
  }
  JobWord queued = allocated.with_state(JobState::kQueued);
  jobs_.transition(*slot, allocated, queued);  // release: the spec is visible to the claimer
  crash_point("mid_enqueue");
  if (!ring_.push(*slot)) {
    auto full = rpc::queue_full_error(kRetryAfterMs, "queue full: the ring is full; retry later");
    if (jobs_.transition(*slot, queued, {JobState::kFree, 0, 0, queued.generation + 1}))
      return full;
    // A stale cell let a worker claim it meanwhile. An attached job then runs
    // for no one, and frees itself when it ends; a detached one is accepted.
    if (!record) {
      jobs_.orphan(*slot);
      ring_owner(jobs_.load(*slot));
      return full;
    }
  }
  submit_.ring();
  seg_.header().counters.submitted.fetch_add(1, std::memory_order_relaxed);
  return *slot;
}

std::optional<rpc::RpcError> Frontend::submit(Conn& c, rpc::ExecParams& p, Reply r, bool stream) {
  auto slot = enqueue(p, 0, 0);
  if (auto* e = std::get_if<rpc::RpcError>(&slot)) return *e;
  const uint32_t i = std::get<uint32_t>(slot);
  Pending& job = pending_[i];
  job = Pending{};
  job.slot = i;
  job.job_id = jobs_.slot(i).job_id;
  job.reply = std::move(r);
  job.stream = stream;
  job.base64 = p.base64;
  uint64_t cap = stream ? UINT64_MAX : o_.max_output_bytes;
  job.cap = p.max_output_bytes ? std::min(*p.max_output_bytes, cap) : cap;
  job.kill_on_cap = p.kill_on_output_cap;
  c.jobs.push_back(i);
  return std::nullopt;
}

void Frontend::service_all() {
  service_detached();
  for (;;) {
    // Over the output budget (execute output held plus unsent answers), of
    // the execute jobs that would keep more output only the oldest with
    // output waiting drains; the others wait, their commands blocked on
    // their pipes. A job that goes quiet hands the turn on, so no job waits
    // on another that prints nothing.
    bool over = over_budget();
    draining_ = UINT64_MAX;
    if (over)
      for (auto& [slot, p] : pending_)
        if (p.job_id < draining_ && keeps_output(p) && !backlogged(p) &&
            !shm::OutputReader(jobs_.slot(slot), seg_.output(slot), seg_.caps().output_bytes)
                 .empty())
          draining_ = p.job_id;
    held_back_ = false;
    size_t before = pending_.size();
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (service(it->second)) {
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    // Go again if jobs were held back and a finished one freed budget, or
    // if the budget was crossed during the pass (to pick the job to drain).
    bool crossed = !over && over_budget();
    if (!crossed && (!held_back_ || pending_.size() == before)) return;
  }
}

bool Frontend::over_budget() const {
  return buffered_ + unsent_ >= o_.output_budget;
}

bool Frontend::keeps_output(const Pending& p) const {
  return !p.stream && p.reply.conn_id && !p.reply.silent &&
         (p.seen[0] < p.cap || p.seen[1] < p.cap);
}

bool Frontend::backlogged(const Pending& p) {
  Conn* c = p.reply.conn_id ? conn(p.reply.conn_id) : nullptr;
  return c && c->backlog() >= kMaxBacklogBytes;
}

bool Frontend::service(Pending& p) {
  // A job whose client reads slowly waits here (a stream's chunks, or the
  // answers of pipelined requests, would pile up); its worker then stops
  // reading the command's pipe, and the command blocks: nothing is lost.
  if (backlogged(p)) return false;
  JobWord w = jobs_.load(p.slot);
  shm::JobSlot& s = jobs_.slot(p.slot);
  shm::OutputReader reader(s, seg_.output(p.slot), seg_.caps().output_bytes);
  if (over_budget() && p.job_id != draining_ && keeps_output(p) && !reader.empty()) {
    held_back_ = true;  // see service_all()
    ++budget_holds_;
    return false;
  }
  auto sink = [&](uint8_t stream, std::string_view bytes) { on_output(p, stream, bytes); };
  if (reader.drain(sink)) ring_owner(w);
  if (!shm::is_terminal(w.state)) return false;
  // Everything a job wrote was published before its terminal state.
  while (!reader.empty()) reader.drain(sink);
  finish(p, w);
  return true;
}

void Frontend::ring_owner(JobWord w) {
  if (w.owner && w.owner <= worker_bells_.size()) worker_bells_[w.owner - 1].ring();
}

void Frontend::on_output(Pending& p, uint8_t stream, std::string_view bytes) {
  crash_point("reading_output");
  int i = stream == shm::kStreamStderr ? 1 : 0;
  uint64_t room = p.cap > p.seen[i] ? p.cap - p.seen[i] : 0;
  p.seen[i] += bytes.size();
  if (bytes.size() > room) {
    p.truncated = true;
    bytes = bytes.substr(0, room);
    if (p.kill_on_cap && !p.killed_for_output) {
      p.killed_for_output = true;
      cancel(p, "killed: its output exceeded the cap");
    }
  }
  if (bytes.empty()) return;
  if (p.stream) {
    send_chunk(p, i, bytes, false);
  } else if (p.reply.conn_id && !p.reply.silent) {  // nobody waits for it otherwise
    p.data[i].append(bytes);
    buffered_ += bytes.size();
  }
}

void Frontend::send_chunk(Pending& p, int stream, std::string_view bytes, bool final) {
  if (p.reply.silent || !p.reply.conn_id) return;
  std::string data;
  if (p.base64) {
    rpc::append_base64(data, bytes);
  } else {
    rpc::append_utf8_sanitized(data, bytes, p.carry[stream], final);
  }
  if (data.empty()) return;
  std::string text = "{\"jsonrpc\":\"2.0\",\"id\":";
  rpc::append_value(text, p.reply.id);
  text +=
      stream ? R"(,"result":{"type":"stderr","data":)" : R"(,"result":{"type":"stdout","data":)";
  rpc::append_string(text, data);
  text += "}}";
  send(p.reply.conn_id, std::move(text));
}

void Frontend::finish(Pending& p, JobWord w) {
  shm::JobSlot& s = jobs_.slot(p.slot);
  shm::JobOutcome out = shm::decode_result(s.result, s.result_words);
  uint64_t start = s.start_ns.load(), end = s.end_ns.load();
  uint64_t duration_ms = start && end > start ? (end - start) / 1'000'000 : 0;
  jobs_.release(p.slot, w);

  Conn* c = p.reply.conn_id ? conn(p.reply.conn_id) : nullptr;
  if (c) {
    std::erase(c->jobs, p.slot);
    request_finished(*c);
  }
  buffered_ -= p.data[0].size() + p.data[1].size();
  // Nobody reads it (the client left, or a notification): not built. A
  // client that left with 100 jobs of 16 MiB must not cost seconds of JSON.
  if (!c || p.reply.silent) return answer(p.reply, std::string());
  json::object result;
  if (p.stream) {
    for (int i = 0; i < 2; ++i) send_chunk(p, i, {}, true);  // flush incomplete UTF-8
    result["type"] = "exit";
  } else {
    for (int i = 0; i < 2; ++i) {
      std::string text;
      if (p.base64) {
        rpc::append_base64(text, p.data[i]);
      } else {
        rpc::append_utf8_sanitized(text, p.data[i], p.carry[i], true);
      }
      result[i ? "stderr" : "stdout"] = std::move(text);
    }
  }
  result["exit_code"] = out.exit_code;
  result["duration_ms"] = duration_ms;
  result["timed_out"] = w.state == JobState::kTimedOut;
  result["signal"] = signal_name(out.signal);
  result["truncated"] = p.truncated;
  result["job_id"] = std::to_string(p.job_id);
  result["status"] = state_name(w.state);
  if (p.killed_for_output && w.state == JobState::kCancelled)
    out.failure = "killed: its output exceeded " + std::to_string(p.cap) + " bytes on a stream";
  result["error"] = out.failure.empty() ? json::value(nullptr) : json::value(out.failure);
  if (p.base64) result["encoding"] = "base64";
  answer(p.reply, rpc::result_text(p.reply.id, result));
}

void Frontend::cancel(Pending& p, const char* why) {
  JobWord w = jobs_.load(p.slot);
  if (shm::finish_queued(seg_, p.slot, w, JobState::kCancelled, why)) {
    bell_.ring();  // serviced (and its slot freed) on the next turn
    return;
  }
  jobs_.request_cancel(p.slot);
  ring_owner(jobs_.load(p.slot));
}

}  // namespace sp::frontend
