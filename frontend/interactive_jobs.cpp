// DetachedJobs' interactive methods: shell_open and shell_close (a shell on
// a PTY as a detached job) and job_interact (write input, then wait until
// the output goes quiet). The job machinery is the detached jobs': a shell
// is read by cursor from its spool and survives a frontend restart.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "common/clock.h"
#include "frontend/detached_jobs.h"
#include "frontend/names.h"

namespace sp::frontend {

namespace {

constexpr uint32_t kShellCloseGraceMs = 2000;  // SIGHUP -> SIGKILL

// The shell to run when the request names none: $SHELL (the request's env,
// then the daemon's), else bash, else sh; the first one that is executable.
std::string pick_shell(const EnvPairs& env) {
  std::vector<std::string> tries;
  for (auto it = env.rbegin(); it != env.rend(); ++it)
    if (it->first == "SHELL") {
      tries.push_back(it->second);
      break;
    }
  if (const char* own = std::getenv("SHELL")) tries.emplace_back(own);
  tries.insert(tries.end(), {"/bin/bash", "/usr/bin/bash", "/bin/sh"});
  for (const std::string& s : tries)
    if (!s.empty() && s[0] == '/' && ::access(s.c_str(), X_OK) == 0) return s;
  return "/bin/sh";
}

}  // namespace

void DetachedJobs::add_interactive_methods(MethodTable& m) {
  m.add<rpc::ShellOpenParams>("shell_open", rpc::parse_shell_open_params,
                              [this](auto& p, Reply r) { shell_open(p, std::move(r)); });
  m.add<rpc::JobSignalParams>(
      "shell_close",
      [](const rpc::Value& params) { return rpc::parse_job_signal_params(params, false); },
      [this](auto& p, Reply r) { shell_close(p, std::move(r)); });
  m.add<rpc::JobInteractParams>("job_interact", rpc::parse_job_interact_params,
                                [this](auto& p, Reply r) { interact(p, std::move(r)); });
}

void DetachedJobs::shell_open(rpc::ShellOpenParams& p, Reply r) {
  if (!p.shell_given) p.job.exec.command = pick_shell(p.job.exec.env);
  submit(p.job, std::move(r));
}

void DetachedJobs::shell_close(rpc::JobSignalParams& p, Reply r) {
  auto rec = find(p.job_id, r);
  if (!rec) return;
  const shm::JobRecord& job = records_.at(*rec);
  if (JobRecords::is_plan(job))
    return out_.fail(r, to_rpc(JobError{JobError::kWrongState,
                                        "job " + p.job_id + " is a plan, not a shell", "running"}));
  // Interactive shells ignore SIGTERM: SIGHUP, as a terminal hangup sends,
  // to the shell's group and to the terminal's foreground group (the shell
  // passes it on to its other jobs), then SIGKILL after the grace.
  if (!JobRecords::settled(job) && std::string_view(views_.state(*rec)) == "running")
    queue_.signal(job.slot, SIGHUP, true);
  rpc::JobSignalParams how = p;
  how.signal = p.signal ? p.signal : SIGHUP;
  if (!how.grace_ms) how.grace_ms = kShellCloseGraceMs;
  rpc::Object result = cancel_one(*rec, how);
  result["closed"] = result["cancelled"];
  out_.answer(r, result);
}

void DetachedJobs::interact(rpc::JobInteractParams& p, Reply r) {
  auto rec = find(p.job_id, r);
  if (!rec) return;
  const shm::JobRecord& job = records_.at(*rec);
  if (JobRecords::is_plan(job))
    return out_.fail(r, to_rpc(StdinError{StdinError::kNotOpen, p.job_id, 0, "plan"}));
  if (p.input.empty()) return wait_quiet(std::move(r), *rec, std::move(p));
  // Refused before its input is written, so that a retry does not write it twice.
  if (out_.over_inflight(r)) return out_.fail(r, out_.inflight_error());
  if (JobRecords::settled(job))
    return out_.fail(r,
                     to_rpc(StdinError{StdinError::kReaderGone, p.job_id, 0, views_.state(*rec)}));
  StdinFeeds::Write write{p.job_id, std::move(p.input), std::nullopt, false};
  const uint64_t seq = job.seq;
  feeds_.write(job.slot, job.slot_generation, std::move(write),
               [this, r = std::move(r), rec = *rec, seq, p = std::move(p)](const StdinError* e,
                                                                           uint64_t) mutable {
                 if (e) return out_.fail(r, to_rpc(*e));
                 if (records_.at(rec).seq != seq)  // forgotten meanwhile
                   return out_.fail(r, to_rpc(JobError{JobError::kForgotten, {}, {}}));
                 wait_quiet(std::move(r), rec, std::move(p));
               });
}

void DetachedJobs::wait_quiet(Reply r, uint32_t rec, rpc::JobInteractParams p) {
  const uint64_t now = monotonic_ns();
  const uint64_t seen_end = records_.at(rec).spool_end.load(std::memory_order_acquire);
  Interact in{std::move(p), now, 0};
  in.end_ns = now + in.p.wait_ms * 1'000'000;
  const double first_s = double(std::min(in.p.idle_ms, in.p.wait_ms)) / 1e3;
  Waiter* w = park(r, rec, first_s, std::move(in), false, seen_end);
  if (w && try_answer(*w, false)) waiters_.pop_back();  // what is there may do already
}

std::optional<std::variant<rpc::Object, JobError>> DetachedJobs::interact_answer(Waiter& w) {
  Interact& in = std::get<Interact>(w.params);
  const shm::JobRecord& r = records_.at(w.record);
  const uint64_t now = monotonic_ns();
  const uint64_t end = r.spool_end.load(std::memory_order_acquire);
  if (end != w.seen_end) {  // new output: the quiet starts again
    w.seen_end = end;
    in.quiet_since_ns = now;
  }
  rpc::JobOutputParams read;
  read.job_id = in.p.job_id;
  read.cursor = in.p.cursor;
  read.max_bytes = in.p.max_bytes;
  read.encoding = in.p.encoding;
  bool ready = true;
  auto out = views_.output(w.record, read, ready);
  if (auto* e = std::get_if<JobError>(&out)) return *e;
  rpc::Object& o = std::get<rpc::Object>(out);
  const uint64_t got = o["next_cursor"].get_uint64() - in.p.cursor;
  const uint64_t quiet_at = in.quiet_since_ns + in.p.idle_ms * 1'000'000;
  const char* reason = o["eof"] == rpc::Value(true) ? "exited"
                       // UTF-8 text may stop up to 3 bytes short (a character held back)
                       : got + (in.p.encoding == OutputEncoding::kUtf8 ? 3 : 0) >= in.p.max_bytes
                           ? "max_bytes"
                       : now >= quiet_at  ? "idle"
                       : now >= in.end_ns ? "timeout"
                                          : nullptr;
  if (!reason) {
    w.deadline_ns = std::min(quiet_at, in.end_ns);
    return std::nullopt;
  }
  rpc::Object status = views_.status(w.record);
  o["reason"] = reason;
  o["exit_code"] = status["exit_code"];
  o["signal"] = status["signal"];
  return std::move(o);
}

}  // namespace sp::frontend
