#include "remote/remote_job.h"

#include <signal.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "common/clock.h"
#include "common/log.h"
#include "common/signals.h"
#include "shm/repair.h"

namespace sp::remote {

namespace {

using shm::JobState;
using shm::JobWord;

constexpr uint64_t kMs = 1'000'000;
// After SIGKILL, how long a channel may stay open (a process that left the
// group holds its output) before the job ends without it.
constexpr uint64_t kGiveUpNs = 5000 * kMs;
constexpr size_t kMaxHead = 32;  // the pgid line
// A channel's receive window: what libssh2 may hold of a job's output that
// its sink has no room for (it stops the host from sending more). Bounds the
// remote worker's memory at about --remote-jobs times this; libssh2's own
// default is 2 MiB.
constexpr unsigned kWindowBytes = 256 * 1024;

std::string quote(std::string_view s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'')
      q += "'\\''";
    else
      q += c;
  }
  return q + "'";
}

std::string remote_command(const shm::DecodedSpec& spec) {
  std::string cmd = "echo $$; ";
  if (spec.cwd) cmd += "cd -- " + quote(spec.cwd) + " || exit 127; ";
  cmd += "exec ";
  // env(1) only when there are variables: it is one more exec per job.
  if (spec.env.size() > 1) {
    cmd += "env --";
    for (const char* e : spec.env)
      if (e) cmd += " " + quote(e);
    cmd += " ";
  }
  bool first = true;
  for (const char* a : spec.argv) {
    if (!a) break;
    cmd += (first ? "" : " ") + quote(a);
    first = false;
  }
  return cmd;
}

}  // namespace

RemoteJob::RemoteJob(Env& env, uint32_t slot, const shm::DecodedSpec& spec)
    : env_(&env), slot_(slot), word_(env.jobs.load(slot)), command_(remote_command(spec)) {
  timeout_ms_ = spec.timeout_ms;
  grace_ns_ = uint64_t(spec.kill_grace_ms ? spec.kill_grace_ms : env.default_grace_ms) * kMs;
  has_stdin_ = env.jobs.slot(slot).in_state.load(std::memory_order_acquire) & shm::kInputOpen;
  if (!spec.secrets.empty()) {  // redacted before any byte reaches shm, as local output is
    std::vector<std::string> secrets(spec.secrets.begin(), spec.secrets.end());
    redactors_[0] = std::make_unique<Redactor>(secrets);
    redactors_[1] = std::make_unique<Redactor>(*redactors_[0]);
  }
}

RemoteJob::~RemoteJob() {
  drop_channel();
}

void RemoteJob::drop_channel() {
  if (!channel_) return;
  // Freeing sends the close if it was not sent, and waits for the host's:
  // the connection finishes it (or its end does).
  if (conn_)
    conn_->free_channel(channel_);
  else
    libssh2_channel_free(channel_);
  channel_ = nullptr;
  if (conn_) {
    --conn_->channels;
    if (!conn_->busy()) conn_->idle_since_ns = monotonic_ns();
    conn_->sync_events();
  }
}

void RemoteJob::assign(Connection& conn) {
  conn_ = &conn;
  conn.opening = true;
  step_ = Step::kOpening;
  step_by_ns_ = monotonic_ns() + conn.step_timeout_ns();
  conn.sync_events();
}

void RemoteJob::pump(uint64_t now) {
  if (step_ == Step::kOpening) open_channel();
  if (step_ == Step::kStarting) start_command(now);
  if (step_ == Step::kRunning) {
    feed_stdin();
    for (int s : {0, 1}) read_stream(s);
    // Neither stream reads (their sinks are full): the socket must still be
    // read (other channels' data, keepalive replies), or its readiness would
    // spin the loop. wait_eof reads the transport and leaves our window shut.
    if (step_ == Step::kRunning && paused_[0] && paused_[1]) {
      int rc = libssh2_channel_wait_eof(channel_);
      if (rc < 0 && rc != LIBSSH2_ERROR_EAGAIN) return broke(rc, "cannot read the connection");
    }
    if (step_ == Step::kRunning && pending_[0].empty() && pending_[1].empty() &&
        libssh2_channel_eof(channel_)) {
      finish_redaction();
      // The close waits for the command's exit, which may come long after
      // its output ended (`exec >/dev/null 2>&1; ...`): no step deadline.
      if (pending_[0].empty() && pending_[1].empty()) step_ = Step::kClosing;
    }
  }
  if (step_ == Step::kClosing) wait_closed();
  if (conn_) conn_->sync_events();
}

void RemoteJob::open_channel() {
  channel_ = libssh2_channel_open_ex(conn_->session(), "session", sizeof "session" - 1,
                                     kWindowBytes, LIBSSH2_CHANNEL_PACKET_DEFAULT, nullptr, 0);
  if (!channel_) {
    int err = libssh2_session_last_errno(conn_->session());
    if (err == LIBSSH2_ERROR_EAGAIN) return;
    conn_->opening = false;
    if (err == LIBSSH2_ERROR_CHANNEL_FAILURE) {  // the server said no (MaxSessions)
      refused_ = true;
      return;
    }
    if (channel_error(err))
      return fail_unstarted({RemoteError::kChannelOpenFailed, RemotePhase::kChannel,
                             "the host did not open a channel"});
    conn_->fail("cannot open a channel");
    return;  // the pool sees the connection dead and puts us back
  }
  conn_->opening = false;
  ++conn_->channels;
  if (removed_) return finish(JobState::kFailed, -1, 0, removed_.message, removed_);
  if (cancelled_) return finish(JobState::kCancelled, -1, 0, "cancelled before it started");
  step_ = Step::kStarting;
  started_ = true;
  spdlog::debug("host {}: job slot {}: channel open", conn_->host_name(), slot_);
  // Running before the command starts: if we die from here on, the job ends
  // lost; it is never started twice.
  JobWord running = word_.with_state(JobState::kRunning);
  env_->jobs.transition(slot_, word_, running);
  word_ = running;
  const uint64_t now = monotonic_ns();
  env_->jobs.slot(slot_).start_ns.store(now, std::memory_order_relaxed);
  env_->seg.header().counters.started.fetch_add(1, std::memory_order_relaxed);
  shm::JobSlot& s = env_->jobs.slot(slot_);
  if (s.record)
    sink_ = std::make_unique<worker::SpoolSink>(env_->seg, slot_, env_->rec, env_->spool_dir,
                                                env_->scratch);
  else
    sink_ = std::make_unique<worker::RingSink>(env_->seg, slot_, env_->notify_frontend);
  deadline_ns_ = timeout_ms_ ? now + timeout_ms_ * kMs : 0;
  step_by_ns_ = now + conn_->step_timeout_ns();
}

void RemoteJob::start_command(uint64_t) {
  int rc = libssh2_channel_exec(channel_, command_.c_str());
  if (rc == LIBSSH2_ERROR_EAGAIN) return;
  // Refused: the command did not start. Any other error came after the
  // request left: it may run, so the job is lost, never failed (or retried).
  if (rc == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED) {
    Failure f{RemoteError::kChannelOpenFailed, RemotePhase::kChannel,
              "the host refused to start the command"};
    return finish(JobState::kFailed, -1, 0, f.message, f);
  }
  if (rc) return broke(rc, "cannot start the command");
  step_ = Step::kRunning;
  step_by_ns_ = 0;
  spdlog::debug("host {}: job slot {}: command started", conn_->host_name(), slot_);
  if (!has_stdin_) {
    if (libssh2_channel_send_eof(channel_) != LIBSSH2_ERROR_EAGAIN) eof_sent_ = true;
  }
}

void RemoteJob::take(int s, size_t n) {
  env_->seg.header().metrics.output_bytes[s].fetch_add(uint64_t(n), std::memory_order_relaxed);
  worker::OutputSink::Taken taken = sink_->take(worker::Stream(s), n);
  if (taken.published) env_->notify_frontend = true;
  if (taken.stop_job && !cancelled_) {
    output_killed_ = cancelled_ = true;
    stop(SIGTERM, grace_ns_);
  }
}

bool RemoteJob::flush_pending(int s) {
  // Also while the sink holds a read unpublished (no output ring free):
  // nothing more is read until a bell's resume() has published it.
  paused_[s] = !worker::drain_into(*sink_, pending_[s], [&](size_t n) { take(s, n); });
  return !paused_[s];
}

void RemoteJob::read_stream(int s) {
  for (;;) {
    if (!flush_pending(s)) return;  // the sink is full: read on after a bell
    ssize_t n = libssh2_channel_read_ex(channel_, s, env_->scratch.data(), env_->scratch.size());
    if (n == LIBSSH2_ERROR_EAGAIN || n == 0) return;
    if (n < 0) return broke(int(n), "cannot read the command's output");
    std::string_view got(env_->scratch.data(), size_t(n));
    if (s == 0 && !pgid_) {
      // The first line is the group's id: ours, not the command's output.
      head_.append(got);
      size_t nl = head_.find('\n');
      if (nl == std::string::npos && head_.size() < kMaxHead) continue;
      std::from_chars(head_.data(), head_.data() + std::min(nl, head_.size()), pgid_);
      // Not a group's number (a shell that printed something first): no kills
      // by group; 1 would be every process of the user.
      if (pgid_ <= 1) pgid_ = -1;
      got = nl == std::string::npos ? std::string_view() : std::string_view(head_).substr(nl + 1);
      append(s, got);
      head_.clear();
      continue;
    }
    append(s, got);
  }
}

void RemoteJob::append(int s, std::string_view bytes) {
  std::string& out = pending_[s];
  Redactor* r = redactors_[s].get();
  if (!r) return void(out.append(bytes));
  const size_t at = out.size();
  out.resize(at + r->held() + bytes.size());
  out.resize(at + r->feed(bytes, out.data() + at));
}

void RemoteJob::finish_redaction() {
  if (redaction_done_) return;
  redaction_done_ = true;
  for (int s : {0, 1}) {
    Redactor* r = redactors_[s].get();
    if (!r || !r->held()) continue;
    std::string& out = pending_[s];
    const size_t at = out.size();
    out.resize(at + r->held());
    out.resize(at + r->finish(out.data() + at));
    flush_pending(s);
  }
}

void RemoteJob::feed_stdin() {
  if (eof_sent_) return;
  if (!has_stdin_) {
    if (libssh2_channel_send_eof(channel_) != LIBSSH2_ERROR_EAGAIN) eof_sent_ = true;
    return;
  }
  shm::InputReader in = env_->seg.input_reader(slot_);
  for (;;) {
    if (conn_->backlogged()) return;  // the socket takes it first
    std::span<const unsigned char> bytes = in.readable();
    if (bytes.empty()) {
      if (!in.at_eof()) return;
      if (libssh2_channel_send_eof(channel_) == LIBSSH2_ERROR_EAGAIN) return;
      eof_sent_ = true;
      in.close();
      env_->notify_frontend = true;
      return;
    }
    ssize_t n = libssh2_channel_write_ex(channel_, 0, reinterpret_cast<const char*>(bytes.data()),
                                         std::min<size_t>(bytes.size(), 32 * 1024));
    if (n == LIBSSH2_ERROR_EAGAIN) return;  // the host's window is full
    if (n < 0) {                            // the command stopped reading: no more is taken
      eof_sent_ = true;
      in.close();
      env_->notify_frontend = true;
      return;
    }
    if (in.consume(size_t(n))) env_->notify_frontend = true;
  }
}

void RemoteJob::wait_closed() {
  if (!ended_) {
    int rc = libssh2_channel_wait_closed(channel_);
    if (rc == LIBSSH2_ERROR_EAGAIN) return;
    if (rc) return broke(rc, "the channel broke");
    exit_code_ = libssh2_channel_get_exit_status(channel_);
    char* name = nullptr;
    size_t name_len = 0;
    libssh2_channel_get_exit_signal(channel_, &name, &name_len, nullptr, nullptr, nullptr, nullptr);
    if (name) {
      exit_signal_ = signal_number(std::string_view(name, name_len)).value_or(SIGKILL);
      exit_code_ = -1;
      libssh2_free(conn_->session(), name);
    }
    ended_ = true;
  }
  // A read held while no output ring was free (worker/sinks.h) goes out
  // before the end, which the bell that brings a ring completes. The command
  // is over meanwhile: no timer runs, no new signal is queued for its old
  // group (one already with the pool goes, as for any job that ended), and
  // its channel and connection are let go.
  if (sink_->holding() && !cancelled_) {
    deadline_ns_ = kill_at_ns_ = give_up_ns_ = step_by_ns_ = 0;
    pgid_ = -1;
    drop_channel();
    conn_ = nullptr;
    return;
  }
  JobState state = cancelled_   ? JobState::kCancelled
                   : timed_out_ ? JobState::kTimedOut
                                : JobState::kExited;
  std::string why = cancelled_ && env_->shutting_down ? "the daemon is shutting down" : "";
  if (output_killed_ && !env_->shutting_down) why = sink_->stop_reason();
  if (removed_) why = "cancelled: " + removed_.message;
  finish(state, exit_code_, exit_signal_, why, removed_);
}

void RemoteJob::finish(JobState state, int code, int sig, const std::string& why,
                       const Failure& f) {
  if (done()) return;  // published once
  if (step_ == Step::kOpening && conn_) conn_->opening = false;
  drop_channel();
  sink_.reset();
  if (!shm::publish_terminal(env_->seg, slot_, word_, state, code, sig, why, uint8_t(f.code),
                             uint8_t(f.phase)))
    spdlog::error("job slot {} changed under its owner", slot_);
  env_->notify_frontend = true;
  step_ = Step::kDone;
  deadline_ns_ = kill_at_ns_ = give_up_ns_ = step_by_ns_ = 0;
}

void RemoteJob::broke(int rc, const std::string& what) {
  if (!channel_error(rc)) return conn_->fail(what);
  char* msg = nullptr;
  int len = 0;
  libssh2_session_last_error(conn_->session(), &msg, &len, 0);
  Failure f{RemoteError::kConnectionLost, RemotePhase::kRun,
            what + (msg && len > 0 ? ": " + std::string(msg, size_t(len)) : "")};
  if (pgid_ > 1) send(SIGKILL);  // nothing reads it any more: it must not run on
  finish(JobState::kLost, -1, 0, "lost: " + f.message, f);
}

bool RemoteJob::connection_died(const Failure& why) {
  if (done()) return false;
  if (step_ == Step::kWaiting || step_ == Step::kOpening) {
    channel_ = nullptr;  // freed with the session
    conn_ = nullptr;
    refused_ = false;
    step_by_ns_ = 0;
    step_ = Step::kWaiting;
    if (cancelled_) {  // asked while it opened: it ends now, not at its next chance
      finish(JobState::kCancelled, -1, 0, "cancelled before it started");
      return false;
    }
    return true;
  }
  channel_ = nullptr;
  conn_ = nullptr;
  if (pgid_ > 1) send(SIGKILL);  // it may run on, unread: the pool kills it over another connection
  Failure f = why;
  if (f.code != RemoteError::kKeepaliveTimeout) f.code = RemoteError::kConnectionLost;
  f.phase = RemotePhase::kRun;
  finish(JobState::kLost, -1, 0, "lost: " + f.message, f);
  return false;
}

void RemoteJob::fail_unstarted(const Failure& why) {
  if (cancelled_) return finish(JobState::kCancelled, -1, 0, "cancelled before it started");
  finish(JobState::kFailed, -1, 0, why.message, why);
}

void RemoteJob::send(int sig) {
  // Each signal once while it waits: the list is bounded by the signals there are.
  if (std::find(signals_.begin(), signals_.end(), sig) == signals_.end()) signals_.push_back(sig);
}

int RemoteJob::take_kill() {
  if (pgid_ < 0) signals_.clear();  // no group to send them to
  if (pgid_ <= 0 || signals_.empty()) return 0;
  const int sig = signals_.front();
  signals_.erase(signals_.begin());
  return sig;
}

void RemoteJob::kill_sent(int sig, uint64_t now) {
  if (sig == SIGKILL && give_up_ns_) give_up_ns_ = std::max(give_up_ns_, now + kGiveUpNs);
}

void RemoteJob::stop(int sig, uint64_t grace_ns) {
  send(sig);
  if (sig == SIGKILL) {
    kill_at_ns_ = 0;
    give_up_ns_ = monotonic_ns() + kGiveUpNs;
    return;
  }
  uint64_t at = monotonic_ns() + grace_ns;
  kill_at_ns_ = kill_at_ns_ ? std::min(kill_at_ns_, at) : at;
}

void RemoteJob::on_bell() {
  if (done()) return;
  if (uint64_t sigs = env_->jobs.take_signals(slot_))
    for (int sig = 1; sig <= 64; ++sig)
      if (sigs >> (sig - 1) & 1) send(sig);
  if (!cancelled_) {
    if (auto cancel = env_->jobs.cancel_requested(slot_)) {
      cancelled_ = true;
      if (step_ == Step::kWaiting)
        return finish(JobState::kCancelled, -1, 0, "cancelled before it started");
      if (ended_) return wait_closed();  // it waited only for a ring: ends cancelled
      if (step_ != Step::kOpening)
        stop(cancel->signal ? cancel->signal : SIGTERM, cancel->grace_ms == shm::kCancelGraceDefault
                                                            ? grace_ns_
                                                            : uint64_t(cancel->grace_ms) * kMs);
    }
  }
  for (int s : {0, 1})
    if (paused_[s] && sink_ && sink_->resume()) paused_[s] = false;
}

void RemoteJob::on_timer(uint64_t now) {
  if (step_by_ns_ && now >= step_by_ns_) {
    step_by_ns_ = 0;
    stalled();
    if (done()) return;
  }
  if (deadline_ns_ && now >= deadline_ns_) {
    deadline_ns_ = 0;
    if (!cancelled_ && !kill_at_ns_) {
      timed_out_ = true;
      stop(SIGTERM, grace_ns_);
    }
  }
  if (kill_at_ns_ && now >= kill_at_ns_) {
    kill_at_ns_ = 0;
    stop(SIGKILL, 0);
  }
  if (give_up_ns_ && now >= give_up_ns_) {
    give_up_ns_ = 0;
    JobState state = timed_out_ ? JobState::kTimedOut : JobState::kCancelled;
    finish(state, -1, SIGKILL, "its channel stayed open after SIGKILL: left behind", removed_);
  }
}

// The host did not answer a channel step within connect_timeout_ms (the
// connection itself answers keepalives: a hung sshd session, say).
void RemoteJob::stalled() {
  const std::string within = " within " + std::to_string(conn_->step_timeout_ns() / kMs) + " ms";
  if (step_ == Step::kOpening) {
    // libssh2 opens one channel at a time per session: the connection goes,
    // and the pool tries the job once more on another.
    spdlog::warn("host {}: job slot {}: no answer to a channel open{}", conn_->host_name(), slot_,
                 within);
    return conn_->kill({RemoteError::kChannelOpenFailed, RemotePhase::kChannel,
                        "the host did not open a channel" + within});
  }
  // The command may run: the job is lost, never started again.
  const char* what = "the host did not answer the command's start";
  spdlog::warn("host {}: job slot {}: {}{}", conn_->host_name(), slot_, what, within);
  Failure f{RemoteError::kConnectionLost, RemotePhase::kRun, what + within};
  if (pgid_ > 1) send(SIGKILL);
  finish(JobState::kLost, -1, 0, "lost: " + f.message, f);
}

void RemoteJob::shutdown() {
  if (done()) return;
  cancelled_ = true;
  if (step_ == Step::kWaiting || step_ == Step::kOpening) {
    finish(JobState::kCancelled, -1, 0, "the daemon is shutting down");
    return;
  }
  if (ended_) return wait_closed();  // it waited only for a ring
  stop(SIGKILL, 0);
}

void RemoteJob::requeue() {
  refused_ = false;
  conn_ = nullptr;
  step_ = Step::kWaiting;
  if (removed_) return finish(JobState::kFailed, -1, 0, removed_.message, removed_);
  if (cancelled_) finish(JobState::kCancelled, -1, 0, "cancelled before it started");
}

void RemoteJob::remove_host(const Failure& why) {
  if (done()) return;
  if (step_ == Step::kWaiting) return finish(JobState::kFailed, -1, 0, why.message, why);
  if (step_ == Step::kOpening) {  // libssh2 finishes the open first; then it ends
    cancelled_ = true;
    removed_ = why;
    return;
  }
  removed_ = why;
  removed_.phase = RemotePhase::kRun;
  cancelled_ = true;
  stop(SIGKILL, 0);
}

uint64_t RemoteJob::next_deadline() const {
  uint64_t next = 0;
  for (uint64_t t : {deadline_ns_, kill_at_ns_, give_up_ns_, step_by_ns_})
    if (t && (!next || t < next)) next = t;
  return next;
}

}  // namespace sp::remote
