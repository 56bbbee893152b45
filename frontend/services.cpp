#include "frontend/services.h"

#include <signal.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/clock.h"
#include "common/crash_point.h"
#include "common/log.h"
#include "common/signals.h"
#include "common/text.h"
#include "frontend/codec/json_codec.h"
#include "frontend/names.h"
#include "shm/codec.h"
#include "shm/output.h"

namespace sp::frontend {

namespace {

using shm::AfterStop;
using shm::JobState;
using shm::JobWord;
using shm::ServicePhase;

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kMaxWaitNs = 24ull * 3600 * 1'000'000'000;  // longer waits are cut to a day
constexpr uint64_t kProbeOutputBytes = 4096;

const char* phase_name(uint32_t phase) {
  switch (ServicePhase(phase)) {
    case ServicePhase::kStarting:
      return "starting";
    case ServicePhase::kReady:
      return "ready";
    case ServicePhase::kRunning:
      return "running";
    case ServicePhase::kBackoff:
      return "backoff";
    case ServicePhase::kStopping:
      return "stopping";
    case ServicePhase::kStopped:
      return "stopped";
    case ServicePhase::kExited:
      return "exited";
    case ServicePhase::kFailed:
      return "failed";
  }
  return "?";
}

const char* policy_name(rpc::RestartPolicy p) {
  switch (p) {
    case rpc::RestartPolicy::kNever:
      return "never";
    case rpc::RestartPolicy::kOnFailure:
      return "on-failure";
    case rpc::RestartPolicy::kAlways:
      return "always";
  }
  return "?";
}

bool ended(uint32_t phase) {
  return phase >= uint32_t(ServicePhase::kStopped);
}

void copy_note(char* dst, size_t cap, std::string_view text) {
  std::memset(dst, 0, cap);
  std::string clean, carry;
  append_utf8_sanitized(clean, text, carry, true);
  size_t n = std::min(clean.size(), cap - 1);
  while (n < clean.size() && n > 0 && (uint8_t(clean[n]) & 0xc0) == 0x80) --n;  // whole characters
  std::memcpy(dst, clean.data(), n);
}

// How a generation ended, for the log's marker and the service's error.
std::string describe_end(JobState state, const shm::JobOutcome& o) {
  std::string how = o.signal ? "killed by signal " + signal_name(o.signal)
                             : "exit code " + std::to_string(o.exit_code);
  if (state == JobState::kExited) return how;
  if (!o.failure.empty()) return o.failure;
  if (state == JobState::kCancelled) return "stopped, " + how;
  return std::string(state_name(state)) + ", " + how;
}

// The first line of a probe's output, or its helper's {"error": ...}.
std::string probe_reason(const AttachedJobs::Ended& e) {
  for (const std::string* text : {&e.out, &e.err}) {
    std::string_view line(*text);
    line = line.substr(0, line.find('\n'));
    if (line.empty()) continue;
    if (auto v = rpc::parse_value(line); v && v->is_object())
      if (const rpc::Value* err = v->get_object().if_contains("error"); err && err->is_string())
        return err->get_string();
    std::string out, carry;
    append_utf8_sanitized(out, line.substr(0, 200), carry, true);
    return out;
  }
  return {};
}

}  // namespace

void Services::add_methods(MethodTable& m) {
  using H = MethodTable::Holds;
  m.add<rpc::ServiceStartParams>(
      "service_start", rpc::parse_service_start_params,
      [this](rpc::ServiceStartParams& p, Reply r) { start(p, std::move(r)); }, H::kInflight);
  m.add<std::string>(
      "service_stop", rpc::parse_service_name_param,
      [this](std::string& name, Reply r) { stop(name, std::move(r)); }, H::kInflight);
  m.add<rpc::ServiceRestartParams>(
      "service_restart", rpc::parse_service_restart_params,
      [this](rpc::ServiceRestartParams& p, Reply r) { restart(p, std::move(r)); }, H::kInflight);
  m.add<std::string>("service_remove", rpc::parse_service_name_param,
                     [this](std::string& name, Reply r) { remove(name, std::move(r)); });
  m.add<std::string>("service_status", rpc::parse_service_name_param,
                     [this](std::string& name, Reply r) {
                       if (auto i = find(name, r)) out_.answer(r, status(*i));
                     });
  m.add("service_list", [this](Reply r) {
    rpc::Array list;
    for (uint32_t i : table_.all())
      if (runs_.count(i)) list.push_back(status(i));
    out_.answer(r, rpc::Object{{"services", std::move(list)}});
  });
  m.add<rpc::ServiceWaitParams>(
      "service_wait", rpc::parse_service_wait_params,
      [this](rpc::ServiceWaitParams& p, Reply r) { wait(p, std::move(r)); }, H::kInflight);
  m.add<rpc::ServiceLogsParams>(
      "service_logs", rpc::parse_service_logs_params,
      [this](rpc::ServiceLogsParams& p, Reply r) { logs(p, std::move(r)); }, H::kInflight);
}

void Services::recover() {
  table_.recover();
  const uint64_t now = monotonic_ns();
  for (uint32_t i : table_.all()) {
    shm::ServiceSlot& s = table_.at(i);
    Run run;
    run.created_unix_ms = s.created_unix_ms;
    auto log = open_service_log(spool_dir_, i, false);
    if (log)
      run.log = std::move(*log);
    else
      spdlog::warn("service {}: its log cannot be opened: {}", s.name, log.error().message());
    run.next_probe_ns = now;  // probing starts anew
    auto spec = rpc::parse_service_spec(table_.spec(i));
    const bool damaged = std::holds_alternative<rpc::RpcError>(spec);
    if (damaged) {
      run.spec.name = s.name;
      runs_[i] = std::move(run);
      set_error(i,
                "its spec in shared memory is damaged: " + std::get<rpc::RpcError>(spec).message);
      if (running(i)) {
        stop_generation(i, AfterStop::kStop, "its spec is damaged");
      } else {
        s.phase = uint32_t(ServicePhase::kFailed);
      }
      continue;
    }
    run.spec = std::move(std::get<rpc::ServiceSpec>(spec));
    runs_[i] = std::move(run);
    if (s.log_bytes < rpc::kMinServiceLogBytes) s.log_bytes = runs_[i].spec.log_bytes;
    if (s.session_id[0] && !sessions_.env_of(s.session_id)) {
      // The last frontend died between destroying the session and this.
      if (running(i))
        stop_generation(i, AfterStop::kRemove, "its session was destroyed: stopping it");
      else
        forget(i);
    } else if (s.phase == uint32_t(ServicePhase::kStopping)) {
      send_stop(i, "stopping it");  // the last frontend may have died before it sent the stop
    }
  }
  if (!runs_.empty()) spdlog::info("took over {} services", runs_.size());
  for (uint32_t slot = 0; slot < jobs_.size(); ++slot) {
    const JobWord w = jobs_.load(slot);
    const uint32_t control = jobs_.slot(slot).control.load();
    if ((control & shm::kControlService) == 0 || w.state == JobState::kFree ||
        w.state == JobState::kAllocated)
      continue;
    const bool named = std::any_of(runs_.begin(), runs_.end(), [&](const auto& run) {
      const shm::ServiceSlot& s = table_.at(run.first);
      return running(run.first) && s.job_slot == slot && s.job_generation == w.generation;
    });
    if (named) continue;
    spdlog::warn("killing job {} of a service generation no service names", slot);
    queue_.stop(slot, "its service is gone", SIGKILL, 0);
    orphans_.emplace_back(slot, w.generation);
  }
}

std::optional<uint32_t> Services::find(const std::string& name, Reply& r) {
  auto i = table_.find(name);
  if (i && runs_.count(*i)) return i;
  out_.fail(r, to_rpc(ServiceFault{ServiceFault::kNoService, name, {}, {}}, table_));
  return std::nullopt;
}

void Services::fail(Reply& r, ServiceFault::Kind kind, uint32_t i, std::string detail) {
  const shm::ServiceSlot& s = table_.at(i);
  out_.fail(r, to_rpc(ServiceFault{kind, s.name, std::move(detail), phase_name(s.phase)}, table_));
}

bool Services::running(uint32_t i) const {
  const uint32_t phase = table_.at(i).phase;
  return phase != uint32_t(ServicePhase::kBackoff) && !ended(phase);
}

rpc::Object Services::status(uint32_t i) const {
  const shm::ServiceSlot& s = table_.at(i);
  const Run& run = runs_.at(i);
  auto ms_or_null = [](uint64_t ms) { return ms ? rpc::Value(ms) : rpc::Value(); };
  rpc::Value pid;
  if (running(i)) {
    const JobWord w = jobs_.load(s.job_slot);
    const int32_t pgid = jobs_.slot(s.job_slot).pgid.load();
    if (w.generation == s.job_generation && w.state == JobState::kRunning && pgid > 0) pid = pgid;
  }
  rpc::Object o{{"name", s.name},
                {"state", phase_name(s.phase)},
                {"ready", s.ready != 0},
                {"generation", s.generation},
                {"restarts", s.restarts},
                {"pid", pid},
                {"started_at_ms", ms_or_null(s.started_unix_ms)},
                {"ready_at_ms", ms_or_null(s.ready_unix_ms)}};
  o["last_exit"] = s.has_exit ? rpc::Value(rpc::Object{{"exit_code", s.exit_code},
                                                       {"signal", signal_value(s.exit_signal)}})
                              : rpc::Value();
  o["last_probe"] =
      s.last_probe ? rpc::Value(rpc::Object{
                         {"ok", s.last_probe == 1},
                         {"error", s.last_probe == 1 ? rpc::Value() : rpc::Value(s.probe_error)}})
                   : rpc::Value();
  o["error"] = s.error[0] ? rpc::Value(s.error) : rpc::Value();
  o["session_id"] = s.session_id[0] ? rpc::Value(s.session_id) : rpc::Value();
  o["restart_policy"] = policy_name(run.spec.restart.policy);
  o["job_id"] = running(i) ? rpc::Value(std::to_string(s.job_id)) : rpc::Value();
  if (s.phase == uint32_t(ServicePhase::kBackoff)) {
    const uint64_t now = monotonic_ns();
    o["next_start_in_ms"] = s.next_start_ns > now ? (s.next_start_ns - now) / kMs : 0;
  }
  o["created_at_ms"] = s.created_unix_ms;
  o["log_bytes"] = s.log_bytes;
  return o;
}

void Services::start(rpc::ServiceStartParams& p, Reply r) {
  std::optional<uint32_t> found = table_.find(p.spec.name);
  if (found && !runs_.count(*found)) found.reset();
  const bool existing = found && !ended(table_.at(*found).phase);
  uint32_t i = 0;
  if (existing) {  // the same service, asked again: retry-safe
    i = *found;
    shm::ServiceSlot& s = table_.at(i);
    if (table_.spec(i) != p.spec_json) return fail(r, ServiceFault::kRuns, i);
    if (being_removed(i))
      return fail(r, ServiceFault::kWrongState, i,
                  "service " + p.spec.name + " is being removed: its session was destroyed");
    // Asked to run while a stop is under way: it starts again after it.
    if (s.phase == uint32_t(ServicePhase::kStopping) && s.after_stop == uint32_t(AfterStop::kStop))
      s.after_stop = uint32_t(AfterStop::kRestart);
  } else if (found) {  // it ended (stopped, exited or failed): it starts again, with this spec
    i = *found;
    if (shutting_down(r)) return;
    if (auto fault = check_spec(i, p))
      return fail(r, *fault, i, std::to_string(p.spec_json.size()));
    use_spec(i, p);
    if (auto e = start_generation(i)) return out_.fail(r, to_rpc(*e));
  } else {
    if (shutting_down(r)) return;
    auto created = create(p);
    if (auto* e = std::get_if<rpc::RpcError>(&created)) return out_.fail(r, *e);
    i = std::get<uint32_t>(created);
  }
  Waiter w(Waiter::kStart, std::move(r));
  w.slot = i;
  w.created_unix_ms = table_.at(i).created_unix_ms;
  w.existing = existing;
  if (!p.wait_ready_s) {
    rpc::Object o = status(i);
    o["existing"] = existing;
    return out_.answer(w.reply, o);
  }
  park(std::move(w), *p.wait_ready_s < 0 ? std::nullopt : p.wait_ready_s);
}

std::variant<uint32_t, rpc::RpcError> Services::create(rpc::ServiceStartParams& p) {
  const std::string name = p.spec.name;
  auto created = table_.create(name, p.spec.exec.session_id, p.spec_json, p.spec.log_bytes);
  if (auto* e = std::get_if<shm::ServiceError>(&created)) {
    ServiceFault::Kind kind = *e == shm::ServiceError::kSpecTooLarge ? ServiceFault::kSpecTooLarge
                              : *e == shm::ServiceError::kTableFull  ? ServiceFault::kTableFull
                                                                     : ServiceFault::kSessionFull;
    return to_rpc(ServiceFault{kind, name, std::to_string(p.spec_json.size()), {}}, table_);
  }
  const uint32_t i = std::get<uint32_t>(created);
  shm::ServiceSlot& s = table_.at(i);
  if (!seg_.spool_budget().take(s.log_bytes)) {
    table_.release(i);
    return to_rpc(ServiceFault{ServiceFault::kNoSpool, name, std::to_string(s.log_bytes), {}},
                  table_);
  }
  auto log = open_service_log(spool_dir_, i, true);
  if (!log) {
    seg_.spool_budget().give_back(s.log_bytes);
    table_.release(i);
    return rpc::RpcError{rpc::Code::Internal,
                         "cannot create the service's log: " + log.error().message()};
  }
  Run& run = runs_[i];
  run.created_unix_ms = s.created_unix_ms;
  run.spec = std::move(p.spec);
  run.log = std::move(*log);
  if (auto e = start_generation(i)) {  // it never ran: it goes
    forget(i);
    return to_rpc(*e);
  }
  spdlog::info("service {} started", name);
  return i;
}

bool Services::shutting_down(Reply& r) {
  if (!draining_ && queue_.accepting()) return false;
  out_.fail(r, to_rpc(SubmitError{SubmitError::kShuttingDown, {}}));
  return true;
}

std::optional<ServiceFault::Kind> Services::check_spec(uint32_t i,
                                                       const rpc::ServiceStartParams& p) const {
  const std::string& session_id = p.spec.exec.session_id;
  if (!session_id.empty() && session_id != table_.at(i).session_id &&
      table_.in_session(session_id) >= table_.per_session())
    return ServiceFault::kSessionFull;
  if (p.spec_json.size() > table_.spec_bytes()) return ServiceFault::kSpecTooLarge;
  return std::nullopt;
}

void Services::use_spec(uint32_t i, rpc::ServiceStartParams& p) {
  shm::ServiceSlot& s = table_.at(i);
  table_.set_spec(i, p.spec_json);  // fits: check_spec
  copy_note(s.session_id, sizeof s.session_id, p.spec.exec.session_id);
  runs_.at(i).spec = std::move(p.spec);
  count_afresh(i);
}

void Services::count_afresh(uint32_t i) {
  shm::ServiceSlot& s = table_.at(i);
  s.failures_at = 0;  // a start or restart by hand counts failures afresh
  std::memset(s.failures, 0, sizeof s.failures);
  set_error(i, "");
}

void Services::stop(std::string& name, Reply r) {
  auto i = find(name, r);
  if (!i) return;
  shm::ServiceSlot& s = table_.at(*i);
  if (running(*i)) {
    if (!being_removed(*i)) stop_generation(*i, AfterStop::kStop, "stopped by service_stop");
  } else if (s.phase == uint32_t(ServicePhase::kBackoff)) {
    s.phase = uint32_t(ServicePhase::kStopped);  // stop wins over the policy
    marker(*i, "stopped during its backoff");
  }
  Waiter w(Waiter::kStop, std::move(r));
  w.slot = *i;
  w.generation = s.generation;
  w.created_unix_ms = s.created_unix_ms;
  park(std::move(w), std::nullopt);
}

void Services::restart(rpc::ServiceRestartParams& p, Reply r) {
  auto i = find(p.name, r);
  if (!i || shutting_down(r)) return;
  if (being_removed(*i))
    return fail(r, ServiceFault::kWrongState, *i,
                "service " + p.name + " is being removed: its session was destroyed");
  if (p.spec) {
    if (auto fault = check_spec(*i, *p.spec))
      return fail(r, *fault, *i, std::to_string(p.spec->spec_json.size()));
    // The running generation stops as its own spec says.
    if (running(*i)) stop_generation(*i, AfterStop::kRestart, "restarted by service_restart");
    use_spec(*i, *p.spec);
  } else {
    count_afresh(*i);
  }
  if (running(*i)) {
    stop_generation(*i, AfterStop::kRestart, "restarted by service_restart");
  } else if (auto e = start_generation(*i)) {
    return out_.fail(r, to_rpc(*e));
  }
  Waiter w(Waiter::kRestart, std::move(r));
  w.slot = *i;
  w.created_unix_ms = table_.at(*i).created_unix_ms;
  park(std::move(w), std::nullopt);
}

void Services::remove(std::string& name, Reply r) {
  auto i = find(name, r);
  if (!i) return;
  if (running(*i))
    return fail(r, ServiceFault::kWrongState, *i,
                "service " + name + " is " + phase_name(table_.at(*i).phase) +
                    "; stop it first (service_stop)");
  forget(*i);
  spdlog::info("service {} removed", name);
  out_.answer(r, rpc::Object{{"name", name}, {"removed", true}});
}

void Services::wait(rpc::ServiceWaitParams& p, Reply r) {
  auto i = find(p.name, r);
  if (!i) return;
  Waiter w(Waiter::kWait, std::move(r));
  w.slot = *i;
  w.created_unix_ms = table_.at(*i).created_unix_ms;
  w.until = p.until;
  park(std::move(w), p.timeout_s);
}

void Services::logs(rpc::ServiceLogsParams& p, Reply r) {
  auto i = find(p.name, r);
  if (!i) return;
  bool got = false;
  auto answer = read_logs(*i, p, got);
  if (auto* e = std::get_if<rpc::RpcError>(&answer)) return out_.fail(r, *e);
  rpc::Object& o = std::get<rpc::Object>(answer);
  if (got || !p.wait_s || o["eof"] == rpc::Value(true)) return out_.answer(r, o);
  Waiter w(Waiter::kLogs, std::move(r));
  w.slot = *i;
  w.created_unix_ms = table_.at(*i).created_unix_ms;
  w.logs = std::move(p);
  if (!w.logs.cursor) w.logs.cursor = o["next_cursor"].get_uint64();
  w.logs.tail_bytes.reset();
  park(std::move(w), w.logs.wait_s);
}

std::variant<rpc::Object, rpc::RpcError> Services::read_logs(uint32_t i,
                                                             const rpc::ServiceLogsParams& p,
                                                             bool& got_data) {
  const shm::ServiceSlot& s = table_.at(i);
  Run& run = runs_.at(i);
  auto rd =
      read_service_log(run.log.get(), s, p.stream, p.cursor, p.tail_bytes, p.max_bytes, run.hint);
  if (!rd)
    return to_rpc(ServiceFault{ServiceFault::kUnreadable, s.name, rd.error().message(), {}},
                  table_);
  run.hint = rd->resume;
  const bool over = ended(s.phase) && rd->at_end;
  std::string data, carry;
  append_output_text(data, rd->data, p.encoding, carry, over);
  const uint64_t next = rd->next_cursor - carry.size();  // an incomplete character: read again
  got_data = !data.empty();
  rpc::Object o{{"name", s.name},
                {"data", output_value(std::move(data), p.encoding)},
                {"next_cursor", next},
                {"eof", over},
                {"lost_bytes", rd->lost_bytes},
                {"state", phase_name(s.phase)}};
  add_encoding(o, p.encoding);
  return o;
}

std::optional<SubmitError> Services::start_generation(uint32_t i) {
  shm::ServiceSlot& s = table_.at(i);
  Run& run = runs_.at(i);
  rpc::ExecParams p = run.spec.exec;
  if (!p.timeout_s) p.timeout_s = 0;  // none, unless --max-timeout bounds every job
  const uint64_t now = monotonic_ns();
  auto slot = queue_.enqueue(p, JobPlacement{std::nullopt, 0, false, true});
  if (auto* e = std::get_if<SubmitError>(&slot)) {
    if (e->kind == SubmitError::kQueueFull) {  // not the service's fault: try again soon
      s.phase = uint32_t(ServicePhase::kBackoff);
      s.next_start_ns = now + std::max<uint64_t>(run.spec.restart.backoff_ms, 100) * kMs;
      set_error(i, "its next generation waits for room in the queue: " + e->detail);
      return std::nullopt;
    }
    s.phase = uint32_t(ServicePhase::kFailed);
    set_error(i, "cannot start: " + to_rpc(*e).message);
    marker(i, "cannot start: " + to_rpc(*e).message);
    return *e;
  }
  crash_point("service_queued");
  const JobWord w = jobs_.load(std::get<uint32_t>(slot));
  s.job_slot = std::get<uint32_t>(slot);
  s.job_generation = w.generation;
  s.job_id = jobs_.slot(s.job_slot).job_id;
  ++s.generation;
  if (s.generation > 1) ++s.restarts;
  s.started_ns = now;
  s.started_unix_ms = unix_ms();
  // Without a probe a service is ready once it was started.
  const bool probed = run.spec.readiness.kind != rpc::ProbeKind::kNone;
  s.ready = !probed;
  s.ready_unix_ms = probed ? 0 : s.started_unix_ms;
  s.last_probe = 0;
  s.after_stop = uint32_t(AfterStop::kPolicy);
  s.phase = uint32_t(probed ? ServicePhase::kStarting : ServicePhase::kRunning);
  // (A probe of the last generation may still run: the next waits for it.)
  run.next_probe_ns = now + run.spec.readiness.initial_delay_ms * kMs;
  marker(i, "generation " + std::to_string(s.generation) + " started");
  return std::nullopt;
}

void Services::stop_generation(uint32_t i, AfterStop after, const std::string& why) {
  shm::ServiceSlot& s = table_.at(i);
  const bool was_stopping = s.phase == uint32_t(ServicePhase::kStopping);
  s.phase = uint32_t(ServicePhase::kStopping);
  s.after_stop = uint32_t(after);
  if (!was_stopping) marker(i, why);
  send_stop(i, why);
}

void Services::send_stop(uint32_t i, const std::string& why) {
  const shm::ServiceSlot& s = table_.at(i);
  const rpc::ServiceSpec& spec = runs_.at(i).spec;
  const JobWord w = jobs_.load(s.job_slot);
  if (w.generation != s.job_generation || shm::is_terminal(w.state)) return;  // follow_job
  if (jobs_.slot(s.job_slot).control.load() & shm::kControlCancel) return;    // sent already
  const uint32_t grace = uint32_t(std::min<uint64_t>(spec.stop_grace_ms, rpc::kMaxServiceMs));
  if (queue_.stop(s.job_slot, why, uint32_t(spec.stop_signal), grace))
    again_ = true;  // a queued generation ended at once: settled on the next turn
}

bool Services::follow_job(uint32_t i) {
  shm::ServiceSlot& s = table_.at(i);
  const uint32_t slot = s.job_slot;
  JobWord w = jobs_.load(slot);
  if (w.generation != s.job_generation || w.state == JobState::kFree ||
      w.state == JobState::kAllocated) {  // gone while no frontend ran
    generation_ended(i, JobState::kLost,
                     {-1, 0, "lost: its job went while the frontend restarted"});
    return true;
  }
  shm::JobSlot& js = jobs_.slot(slot);
  shm::OutputReader reader = seg_.output_reader(slot);
  Run& run = runs_.at(i);
  std::string held;
  uint8_t held_stream = 0;
  auto flush = [&] {
    if (held.empty()) return;
    if (Status st = append_service_log(run.log.get(), s, held_stream, held); !st)
      spdlog::warn("service {}: log: {}", s.name, st.error().message());
    held.clear();
  };
  auto sink = [&](uint8_t stream, std::string_view bytes) {
    if (stream != held_stream) flush();
    held_stream = stream;
    held.append(bytes);
    if (held.size() >= 64 * 1024) flush();
  };
  // Into the log before the ring's space goes: a crash between the two
  // writes the chunks again rather than losing them.
  do {
    const uint64_t to = reader.peek(sink);
    flush();
    if (reader.free_to(to)) queue_.ring_owner(w);
    // Everything a job wrote was published before it ended.
  } while (shm::is_terminal(w.state) && !reader.empty());
  if (!shm::is_terminal(w.state)) return false;
  shm::JobOutcome outcome = shm::decode_result(js.result, js.result_words);
  jobs_.release(slot, w);
  generation_ended(i, w.state, outcome);
  return true;
}

void Services::generation_ended(uint32_t i, JobState state, const shm::JobOutcome& outcome) {
  shm::ServiceSlot& s = table_.at(i);
  const Run& run = runs_.at(i);
  const rpc::RestartParams& policy = run.spec.restart;
  s.has_exit = 1;
  s.exit_code = outcome.exit_code;
  s.exit_signal = outcome.signal;
  s.ready = 0;
  const std::string how = describe_end(state, outcome);
  marker(i, "generation " + std::to_string(s.generation) + " ended: " + how);
  const AfterStop after =
      s.phase == uint32_t(ServicePhase::kStopping) ? AfterStop(s.after_stop) : AfterStop::kPolicy;
  switch (after) {
    case AfterStop::kStop:
      s.phase = uint32_t(ServicePhase::kStopped);
      return;
    case AfterStop::kRemove:
      spdlog::info("service {} removed: its session was destroyed", s.name);
      return forget(i);
    case AfterStop::kRestart:
      if (draining_) {
        s.phase = uint32_t(ServicePhase::kStopped);
        return;
      }
      start_generation(i);  // a failure to start is the service's state now
      return;
    case AfterStop::kPolicy:
    case AfterStop::kFailure:
      break;
  }
  if (draining_) {
    s.phase = uint32_t(ServicePhase::kStopped);
    return;
  }
  const bool clean = state == JobState::kExited && outcome.exit_code == 0 && !outcome.signal;
  const bool failure = after == AfterStop::kFailure || !clean;
  // A failure to start, a lost worker or no readiness in time is the
  // service's failure whatever the policy; an exit is not under "never".
  const bool broken =
      after == AfterStop::kFailure || state == JobState::kFailed || state == JobState::kLost;
  std::string why = after == AfterStop::kFailure ? std::string(s.error) : how;
  if (policy.policy == rpc::RestartPolicy::kNever ||
      (policy.policy == rpc::RestartPolicy::kOnFailure && !failure)) {
    s.phase = uint32_t(broken ? ServicePhase::kFailed : ServicePhase::kExited);
    set_error(i, broken ? why : "");
    return;
  }
  const uint64_t now = monotonic_ns();
  const uint32_t recent = count_failure(i, now);
  if (recent > policy.max_restarts) {
    s.phase = uint32_t(ServicePhase::kFailed);
    set_error(i, why + "; it ended " + std::to_string(recent) + " times within " +
                     std::to_string(policy.window_ms) + " ms (max_restarts " +
                     std::to_string(policy.max_restarts) + ")");
    marker(i, "failed: " + std::string(s.error));
    spdlog::warn("service {} failed: {}", s.name, s.error);
    return;
  }
  // Exponential: backoff_ms, doubled for each earlier end within the window.
  uint64_t delay = policy.backoff_ms;
  for (uint32_t k = 1; k < recent && delay < policy.backoff_max_ms; ++k) delay *= 2;
  delay = std::min(delay, policy.backoff_max_ms);
  s.phase = uint32_t(ServicePhase::kBackoff);
  s.next_start_ns = now + delay * kMs;
  set_error(i, failure ? why : "");
  marker(i, "restarting in " + std::to_string(delay) + " ms");
}

uint32_t Services::count_failure(uint32_t i, uint64_t now) {
  shm::ServiceSlot& s = table_.at(i);
  constexpr uint32_t n = shm::kMaxServiceRestarts + 1;
  s.failures[s.failures_at % n] = now;
  s.failures_at = (s.failures_at + 1) % n;
  const uint64_t window = runs_.at(i).spec.restart.window_ms * kMs;
  uint32_t recent = 0;
  for (uint64_t t : s.failures)
    if (t && now - t <= window) ++recent;
  return recent;
}

void Services::start_probe(uint32_t i) {
  shm::ServiceSlot& s = table_.at(i);
  Run& run = runs_.at(i);
  const rpc::ReadinessParams& r = run.spec.readiness;
  const rpc::ExecParams& svc = run.spec.exec;
  rpc::ExecParams p;
  double timeout_s = double(r.timeout_ms) / 1000;
  if (r.kind == rpc::ProbeKind::kCommand) {
    p = r.command;  // as the service runs: its directory, session, env and secrets
    if (p.working_dir.empty()) p.working_dir = svc.working_dir;
    if (p.session_id.empty()) p.session_id = svc.session_id;
    EnvPairs env = svc.env;
    env.insert(env.end(), p.env.begin(), p.env.end());
    p.env = std::move(env);
    p.secrets.insert(p.secrets.end(), svc.secrets.begin(), svc.secrets.end());
  } else {
    // The probe helper (services/probe.h): the worker's own binary.
    p.command = "/proc/self/exe";
    p.shell = false;
    p.working_dir = svc.working_dir;  // a file probe's relative path is the service's
    p.args = {"probe"};
    auto arg = [&](const char* flag, const std::string& v) {
      p.args.emplace_back(flag);
      p.args.push_back(v);
    };
    switch (r.kind) {
      case rpc::ProbeKind::kTcp:
        p.args.emplace_back("tcp");
        arg("--host", r.host);
        arg("--port", std::to_string(r.port));
        break;
      case rpc::ProbeKind::kHttp:
        p.args.emplace_back("http");
        arg("--url", r.url);
        arg("--status", std::to_string(r.status));
        break;
      default:
        p.args.emplace_back("file");
        arg("--path", r.path);
        break;
    }
    arg("--timeout-ms", std::to_string(r.timeout_ms));
    timeout_s += 1;  // the helper keeps its own; this bounds its start too
  }
  p.timeout_s = timeout_s;
  p.max_output_bytes = kProbeOutputBytes;
  const uint64_t created = run.created_unix_ms;
  const uint32_t generation = s.generation;
  auto refused =
      attached_.run_internal(p, [this, i, created, generation](Reply, AttachedJobs::Ended e) {
        probe_done(i, created, generation, std::move(e));
      });
  if (refused) {  // counts as a failed probe; tried again a period later
    s.last_probe = 2;
    copy_note(s.probe_error, sizeof s.probe_error,
              "the probe was not run: " + to_rpc(*refused).message);
    s.ready = 0;
    run.next_probe_ns = monotonic_ns() + r.period_ms * kMs;
    return;
  }
  run.probing = true;
  run.probe_generation = generation;
}

void Services::probe_done(uint32_t i, uint64_t created, uint32_t generation,
                          AttachedJobs::Ended e) {
  auto it = runs_.find(i);
  if (it == runs_.end() || it->second.created_unix_ms != created) return;  // it went
  Run& run = it->second;
  shm::ServiceSlot& s = table_.at(i);
  if (run.probe_generation == generation) run.probing = false;
  if (s.generation != generation ||
      (s.phase != uint32_t(ServicePhase::kStarting) && s.phase != uint32_t(ServicePhase::kReady)))
    return;  // for a generation that ended meanwhile
  const bool ok = e.state == JobState::kExited && e.exit_code == 0;
  run.next_probe_ns = monotonic_ns() + run.spec.readiness.period_ms * kMs;
  s.last_probe = ok ? 1 : 2;
  if (!ok) {
    std::string why;
    if (e.state == JobState::kTimedOut)
      why = "the probe timed out after " + std::to_string(run.spec.readiness.timeout_ms) + " ms";
    else if (!e.failure.empty())
      why = e.failure;
    else
      why = probe_reason(e);
    if (why.empty()) why = "the probe exited with code " + std::to_string(e.exit_code);
    copy_note(s.probe_error, sizeof s.probe_error, why);
    s.ready = 0;
    return;
  }
  s.probe_error[0] = 0;
  s.ready = 1;
  if (s.phase == uint32_t(ServicePhase::kStarting)) {
    s.phase = uint32_t(ServicePhase::kReady);
    s.ready_unix_ms = unix_ms();
    marker(i, "generation " + std::to_string(s.generation) + " is ready");
  }
}

void Services::marker(uint32_t i, const std::string& text) {
  shm::ServiceSlot& s = table_.at(i);
  Run& run = runs_.at(i);
  if (!run.log) return;
  const std::string line = "[shell-pool] service " + std::string(s.name) + ": " + text + "\n";
  if (Status st = append_service_log(run.log.get(), s, kStreamMarker, line); !st)
    spdlog::warn("service {}: log: {}", s.name, st.error().message());
}

void Services::set_error(uint32_t i, const std::string& text) {
  shm::ServiceSlot& s = table_.at(i);
  copy_note(s.error, sizeof s.error, text);
}

void Services::forget(uint32_t i) {
  table_.release(i);
  runs_.erase(i);
  remove_service_log(spool_dir_, i);
  seg_.spool_budget().give_back(table_.at(i).log_bytes);
}

bool Services::being_removed(uint32_t i) const {
  const shm::ServiceSlot& s = table_.at(i);
  return s.phase == uint32_t(ServicePhase::kStopping) &&
         s.after_stop == uint32_t(AfterStop::kRemove);
}

void Services::service() {
  again_ = false;
  const uint64_t now = monotonic_ns();
  std::vector<uint32_t> live;
  live.reserve(runs_.size());
  for (const auto& [i, run] : runs_) live.push_back(i);
  for (uint32_t i : live) {
    auto it = runs_.find(i);
    if (it == runs_.end()) continue;
    Run& run = it->second;
    shm::ServiceSlot& s = table_.at(i);
    if (s.phase == uint32_t(ServicePhase::kBackoff)) {
      // Not while an orphaned generation may still hold what it needs (a port).
      if (!draining_ && orphans_.empty() && now >= s.next_start_ns) start_generation(i);
      continue;
    }
    if (!running(i) || follow_job(i)) continue;
    if (s.phase == uint32_t(ServicePhase::kStarting) &&
        now >= s.started_ns + run.spec.readiness.start_period_ms * kMs) {
      set_error(i, "not ready within start_period_ms (" +
                       std::to_string(run.spec.readiness.start_period_ms) + " ms)" +
                       (s.probe_error[0] ? ": " + std::string(s.probe_error) : ""));
      stop_generation(i, AfterStop::kFailure, "not ready in time: stopping it");
      continue;
    }
    if ((s.phase == uint32_t(ServicePhase::kStarting) ||
         s.phase == uint32_t(ServicePhase::kReady)) &&
        !run.probing && !draining_ && now >= run.next_probe_ns)
      start_probe(i);
  }
  std::erase_if(orphans_, [&](std::pair<uint32_t, uint32_t> o) {
    const JobWord w = jobs_.load(o.first);
    if (w.generation != o.second) return true;
    shm::OutputReader reader = seg_.output_reader(o.first);
    if (reader.drain([](uint8_t, std::string_view) {})) queue_.ring_owner(w);
    if (!shm::is_terminal(w.state)) return false;
    jobs_.release(o.first, w);
    return true;
  });
  for (size_t k = 0; k < waiters_.size();) {
    Waiter& w = waiters_[k];
    const bool timed_out = w.deadline_ns && now >= w.deadline_ns;
    auto a = answer(w, timed_out);
    if (!a) {
      ++k;
      continue;
    }
    if (auto* e = std::get_if<rpc::RpcError>(&*a))
      out_.fail(w.reply, *e);
    else
      out_.answer(w.reply, std::get<rpc::Object>(*a));
    waiters_.erase(waiters_.begin() + long(k));
  }
}

std::optional<std::variant<rpc::Object, rpc::RpcError>> Services::answer(Waiter& w,
                                                                         bool timed_out) {
  auto it = runs_.find(w.slot);
  if (it == runs_.end() || it->second.created_unix_ms != w.created_unix_ms) {
    if (w.kind == Waiter::kStop)  // stopped, and removed with its session
      return rpc::Object{{"name", w.name}, {"state", "stopped"}, {"removed", true}};
    return to_rpc(ServiceFault{ServiceFault::kNoService, w.name, {}, {}}, table_);
  }
  const shm::ServiceSlot& s = table_.at(w.slot);
  const auto phase = ServicePhase(s.phase);
  switch (w.kind) {
    case Waiter::kWait: {
      bool reached = false, impossible = false;
      switch (w.until) {
        case rpc::ServiceUntil::kReady:
          reached = (phase == ServicePhase::kReady || phase == ServicePhase::kRunning) && s.ready;
          impossible = ended(s.phase);
          break;
        case rpc::ServiceUntil::kStopped:
          reached = phase == ServicePhase::kStopped;
          impossible = phase == ServicePhase::kExited || phase == ServicePhase::kFailed;
          break;
        case rpc::ServiceUntil::kExited:  // never under "always": every end restarts
          reached = phase == ServicePhase::kExited;
          impossible = phase == ServicePhase::kStopped || phase == ServicePhase::kFailed ||
                       it->second.spec.restart.policy == rpc::RestartPolicy::kAlways;
          break;
        case rpc::ServiceUntil::kFailed:
          reached = phase == ServicePhase::kFailed;
          impossible = phase == ServicePhase::kStopped || phase == ServicePhase::kExited;
          break;
      }
      if (!reached && !impossible && !timed_out) return std::nullopt;
      rpc::Object o = status(w.slot);
      o["reached"] = reached;
      return o;
    }
    case Waiter::kStart: {
      if (!((phase == ServicePhase::kReady || phase == ServicePhase::kRunning) && s.ready) &&
          !ended(s.phase) && !timed_out)
        return std::nullopt;
      rpc::Object o = status(w.slot);
      o["existing"] = w.existing;
      return o;
    }
    case Waiter::kStop:  // the generation it stopped has ended
      if (running(w.slot) && s.generation == w.generation && !timed_out) return std::nullopt;
      return status(w.slot);
    case Waiter::kRestart:
      if (phase == ServicePhase::kStopping && !timed_out) return std::nullopt;
      return status(w.slot);
    case Waiter::kLogs: {
      if (s.log_head == w.seen_head && !ended(s.phase) && !timed_out) return std::nullopt;
      bool got = false;
      auto a = read_logs(w.slot, w.logs, got);
      if (auto* o = std::get_if<rpc::Object>(&a);
          o && !got && !timed_out && (*o)["eof"] != rpc::Value(true)) {
        w.seen_head = s.log_head;  // read again when something was written
        return std::nullopt;
      }
      return a;
    }
  }
  return std::nullopt;
}

void Services::park(Waiter w, std::optional<double> wait_s) {
  if (out_.over_inflight(w.reply)) return out_.fail(w.reply, out_.inflight_error());
  if (wait_s)
    w.deadline_ns =
        monotonic_ns() + uint64_t(std::ceil(std::min(*wait_s * 1e9, double(kMaxWaitNs))));
  w.name = table_.at(w.slot).name;  // for the answer if it goes meanwhile
  // It may be answerable at once (a stop of a service that had ended).
  if (auto a = answer(w, false)) {
    if (auto* e = std::get_if<rpc::RpcError>(&*a)) return out_.fail(w.reply, *e);
    return out_.answer(w.reply, std::get<rpc::Object>(*a));
  }
  waiters_.push_back(std::move(w));
}

void Services::drain() {
  if (draining_) return;
  draining_ = true;
  for (uint32_t i : table_.all()) {
    if (!runs_.count(i)) continue;
    shm::ServiceSlot& s = table_.at(i);
    if (running(i)) {
      if (!being_removed(i))
        stop_generation(i, AfterStop::kStop, "the daemon is shutting down: stopping it");
    } else if (s.phase == uint32_t(ServicePhase::kBackoff)) {
      s.phase = uint32_t(ServicePhase::kStopped);
    }
  }
}

void Services::session_gone(const std::string& session_id) {
  for (uint32_t i : table_.all()) {
    if (!runs_.count(i) || session_id != table_.at(i).session_id) continue;
    if (running(i))
      stop_generation(i, AfterStop::kRemove, "its session was destroyed: stopping it");
    else
      forget(i);
  }
}

void Services::client_gone(uint64_t conn_id) {
  std::erase_if(waiters_, [&](const Waiter& w) { return w.reply.conn_id == conn_id; });
}

int Services::next_wait_ms(int tick_ms) const {
  uint64_t next = 0;
  auto at = [&](uint64_t t) {
    if (t && (!next || t < next)) next = t;
  };
  for (const auto& [i, run] : runs_) {
    const shm::ServiceSlot& s = table_.at(i);
    if (s.phase == uint32_t(ServicePhase::kBackoff)) at(s.next_start_ns);
    if (s.phase == uint32_t(ServicePhase::kStarting))
      at(s.started_ns + run.spec.readiness.start_period_ms * kMs);
    if ((s.phase == uint32_t(ServicePhase::kStarting) ||
         s.phase == uint32_t(ServicePhase::kReady)) &&
        !run.probing)
      at(std::max<uint64_t>(run.next_probe_ns, 1));
  }
  for (const Waiter& w : waiters_) at(w.deadline_ns);
  if (again_) return 0;
  if (!next) return tick_ms;
  const uint64_t now = monotonic_ns();
  if (next <= now) return 0;
  return int(std::min<uint64_t>(uint64_t(tick_ms), (next - now + kMs - 1) / kMs));
}

}  // namespace sp::frontend
