#include "frontend/attached_jobs.h"

#include <algorithm>
#include <charconv>

#include "common/clock.h"
#include "common/crash_point.h"
#include "common/text.h"
#include "frontend/names.h"
#include "shm/codec.h"
#include "shm/output.h"

namespace sp::frontend {

using shm::JobState;
using shm::JobWord;

void AttachedJobs::add_methods(MethodTable& methods) {
  for (bool stream : {false, true})
    methods.add<rpc::ExecParams>(
        stream ? "execute_stream" : "execute", rpc::parse_exec_params,
        [this, stream](rpc::ExecParams& p, Reply r) { execute(p, std::move(r), stream); },
        MethodTable::Holds::kInflight);
}

void AttachedJobs::execute(rpc::ExecParams& p, Reply r, bool stream) {
  if (stream && r.batch)
    return out_.fail(
        r, invalid_request("execute_stream answers with several messages and cannot be part of "
                           "a batch; send it on its own line"));
  if (p.stdin_open && !stream)
    return out_.fail(r, rpc::RpcError{rpc::Code::InvalidParams,
                                      "invalid params: \"stdin_open\" is for execute_stream "
                                      "and job_submit: "
                                      "execute answers only when the job ended"});
  if (!p.hosts.empty()) {
    if (p.stdin_open)
      return out_.fail(r,
                       rpc::RpcError{rpc::Code::InvalidParams,
                                     "invalid params: \"stdin_open\" does not go with \"hosts\""});
    return fan_out_(p, std::move(r), stream);
  }
  Pending* started = start(p, r, stream);
  if (started == nullptr) return;
  Pending& job = *started;
  if (stream) arm_heartbeat(job, p.heartbeat_ms);
  // Its stdin is written by job_id: the client learns it first.
  if (stream && p.stdin_open)
    out_.partial(job.reply,
                 rpc::Object{{"type", "started"}, {"job_id", std::to_string(job.job_id)}});
}

void AttachedJobs::run(rpc::ExecParams& p, Reply r, Done done) {
  if (Pending* job = start(p, r, false)) {
    job->done = std::move(done);
    // Its own bound, not execute's --max-output: the part sized it.
    if (p.max_output_bytes) job->cap = *p.max_output_bytes;
  }
}

std::optional<SubmitError> AttachedJobs::run_shared(rpc::ExecParams& p, const Reply& r, bool stream,
                                                    Done done) {
  auto slot = queue_.enqueue(p);
  if (auto* e = std::get_if<SubmitError>(&slot)) return *e;
  Pending& job = track(std::get<uint32_t>(slot), r, stream, p);
  job.shared = true;
  job.done = std::move(done);
  if (stream) arm_heartbeat(job, p.heartbeat_ms);
  return std::nullopt;
}

void AttachedJobs::arm_heartbeat(Pending& job, uint64_t ms) {
  if (!ms) return;
  job.heartbeat_ns = ms * 1'000'000;
  job.started_ns = monotonic_ns();
  job.next_beat_ns = job.started_ns + job.heartbeat_ns;
  if (!next_beat_ns_ || job.next_beat_ns < next_beat_ns_) next_beat_ns_ = job.next_beat_ns;
}

std::optional<SubmitError> AttachedJobs::run_internal(rpc::ExecParams& p, Done done) {
  auto slot = queue_.enqueue(p);
  if (auto* e = std::get_if<SubmitError>(&slot)) return *e;
  Pending& job = track(std::get<uint32_t>(slot), Reply{}, false, p);
  job.internal = true;
  job.done = std::move(done);
  if (p.max_output_bytes) job.cap = *p.max_output_bytes;
  return std::nullopt;
}

AttachedJobs::Pending* AttachedJobs::start(rpc::ExecParams& p, Reply& r, bool stream) {
  auto slot = queue_.enqueue(p);
  if (auto* e = std::get_if<SubmitError>(&slot)) {
    out_.fail(r, to_rpc(*e));
    return nullptr;
  }
  return &track(std::get<uint32_t>(slot), std::move(r), stream, p);
}

AttachedJobs::Pending& AttachedJobs::track(uint32_t i, Reply r, bool stream,
                                           const rpc::ExecParams& p) {
  Pending& job = pending_[i];
  job = Pending{};
  job.slot = i;
  job.job_id = jobs_.slot(i).job_id;
  job.reply = std::move(r);
  job.stream = stream;
  job.encoding = p.encoding;
  uint64_t cap = stream ? UINT64_MAX : o_.max_output_bytes;
  job.cap = p.max_output_bytes ? std::min(*p.max_output_bytes, cap) : cap;
  job.kill_on_cap = p.kill_on_output_cap;
  job.host = p.host;
  return job;
}

void AttachedJobs::service_all() {
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
        if (p.job_id < draining_ && keeps_output(p) && !out_.backlogged(p.reply.conn_id) &&
            !seg_.output_reader(slot).empty())
          draining_ = p.job_id;
    held_back_ = false;
    next_beat_ns_ = 0;  // recomputed by service()
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

bool AttachedJobs::over_budget() const {
  return held_bytes() >= o_.output_budget;
}

bool AttachedJobs::keeps_output(const Pending& p) const {
  return !p.stream && wanted(p) && (p.seen[0] < p.cap || p.seen[1] < p.cap);
}

bool AttachedJobs::service(Pending& p) {
  // A job whose client reads slowly waits here (a stream's chunks, or the
  // answers of pipelined requests, would pile up); its worker then stops
  // reading the command's pipe, and the command blocks: nothing is lost.
  if (out_.backlogged(p.reply.conn_id)) return false;
  JobWord w = jobs_.load(p.slot);
  shm::OutputReader reader = seg_.output_reader(p.slot);
  if (over_budget() && p.job_id != draining_ && keeps_output(p) && !reader.empty()) {
    held_back_ = true;  // see service_all()
    ++budget_holds_;
    return false;
  }
  auto sink = [&](uint8_t stream, std::string_view bytes) { on_output(p, stream, bytes); };
  if (p.stream && p.encoding != OutputEncoding::kBytes) {
    // Copied out and freed before the chunks are encoded: the worker fills
    // the ring again meanwhile, on the other core. (Bytes, which need no
    // encoding, are framed straight from the ring: drain below.)
    staged_.clear();
    staged_bytes_.clear();
    const uint64_t tail = reader.peek([&](uint8_t stream, std::string_view bytes) {
      staged_.push_back({stream, staged_bytes_.size(), bytes.size()});
      staged_bytes_.append(bytes);
    });
    if (reader.free_to(tail)) queue_.ring_owner(w);
    for (const Staged& c : staged_)
      on_output(p, c.stream, std::string_view(staged_bytes_).substr(c.off, c.len));
  } else if (reader.drain(sink)) {
    queue_.ring_owner(w);
  }
  if (!shm::is_terminal(w.state)) {
    if (p.heartbeat_ns) {
      const uint64_t now = monotonic_ns();
      if (now >= p.next_beat_ns) {  // (nobody to tell: only the next one is set)
        if (out_.wanted(p.reply)) {
          rpc::Object beat{{"type", "heartbeat"}, {"elapsed_ms", (now - p.started_ns) / 1'000'000}};
          if (!p.host.empty()) beat["host"] = p.host;
          out_.partial(p.reply, beat);
        }
        p.next_beat_ns = now + p.heartbeat_ns;
      }
      if (!next_beat_ns_ || p.next_beat_ns < next_beat_ns_) next_beat_ns_ = p.next_beat_ns;
    }
    return false;
  }
  // Everything a job wrote was published before its terminal state.
  while (!reader.empty()) reader.drain(sink);
  finish(p, w);
  return true;
}

void AttachedJobs::on_output(Pending& p, uint8_t stream, std::string_view bytes) {
  crash_point("reading_output");
  const int i = shm::stream_index(stream);
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
  } else if (wanted(p)) {  // nobody waits for it otherwise
    p.data[i].append(bytes);
    buffered_ += bytes.size();
  }
}

void AttachedJobs::send_chunk(Pending& p, int stream, std::string_view bytes, bool final) {
  if (!out_.wanted(p.reply)) return;
  rpc::Value data;
  if (p.encoding == OutputEncoding::kBytes) {
    // Borrowed: framed into the connection's buffer before `bytes` (the
    // output ring) is freed. Bytes carry nothing between chunks.
    if (bytes.empty()) return;
    data = rpc::Bytes::borrow(bytes);
  } else {
    std::string text;
    append_output_text(text, bytes, p.encoding, p.carry[stream], final);
    if (text.empty()) return;
    data = std::move(text);
  }
  rpc::Object chunk{{"type", stream ? "stderr" : "stdout"}, {"data", std::move(data)}};
  if (!p.host.empty()) chunk["host"] = p.host;
  out_.partial(p.reply, std::move(chunk));  // moved: a text chunk is not copied on the way
  if (p.heartbeat_ns) p.next_beat_ns = monotonic_ns() + p.heartbeat_ns;  // it is not silent
}

int AttachedJobs::next_wait_ms(int tick_ms) const {
  if (!next_beat_ns_) return tick_ms;
  const uint64_t now = monotonic_ns();
  if (next_beat_ns_ <= now) return 0;
  return int(std::min<uint64_t>(uint64_t(tick_ms), (next_beat_ns_ - now + 999'999) / 1'000'000));
}

void AttachedJobs::finish(Pending& p, JobWord w) {
  shm::JobSlot& s = jobs_.slot(p.slot);
  shm::JobOutcome outcome = shm::decode_result(s.result, s.result_words);
  uint64_t start = s.start_ns.load(), end = s.end_ns.load();
  uint64_t duration_ms = start && end > start ? (end - start) / 1'000'000 : 0;
  jobs_.release(p.slot, w);
  buffered_ -= p.data[0].size() + p.data[1].size();
  // Nobody reads it (the client left, or a notification): not built. A
  // client that left with 100 jobs of 16 MiB must not cost seconds of JSON.
  if (!wanted(p)) return p.shared ? void() : out_.drop(p.reply);
  if (p.killed_for_output && w.state == JobState::kCancelled)
    outcome.failure = "killed: its output exceeded " + std::to_string(p.cap) + " bytes on a stream";
  if (p.done) {
    if (p.stream)
      for (int i = 0; i < 2; ++i) send_chunk(p, i, {}, true);  // flush incomplete UTF-8
    return p.done(std::move(p.reply),
                  Ended{std::move(p.data[0]), std::move(p.data[1]), w.state, outcome.exit_code,
                        std::move(outcome.failure), outcome.signal, p.truncated, duration_ms,
                        p.job_id, outcome.error_code, outcome.error_phase});
  }
  rpc::Object result;
  if (p.stream) {
    for (int i = 0; i < 2; ++i) send_chunk(p, i, {}, true);  // flush incomplete UTF-8
    result["type"] = "exit";
  } else {
    for (int i = 0; i < 2; ++i) {
      // The text sized once, and the bytes let go before the answer is encoded: a
      // stream at its cap is held twice at most, not four times (BENCHMARKS.md, memory).
      std::string text;
      if (p.encoding == OutputEncoding::kBytes) {
        text = std::move(p.data[i]);  // as they are
      } else {
        const size_t n = p.data[i].size();
        text.reserve(p.encoding == OutputEncoding::kBase64 ? (n + 2) / 3 * 4 : n);
        append_output_text(text, p.data[i], p.encoding, p.carry[i], true);
        std::string().swap(p.data[i]);
      }
      result[i ? "stderr" : "stdout"] = output_value(std::move(text), p.encoding);
    }
  }
  result["exit_code"] = outcome.exit_code;
  result["duration_ms"] = duration_ms;
  result["timed_out"] = w.state == JobState::kTimedOut;
  result["signal"] = signal_value(outcome.signal);
  result["truncated"] = p.truncated;
  result["job_id"] = std::to_string(p.job_id);
  result["status"] = state_name(w.state);
  result["error"] = outcome.failure.empty() ? rpc::Value(nullptr) : rpc::Value(outcome.failure);
  add_encoding(result, p.encoding);
  if (!p.host.empty()) {
    result["host"] = p.host;
    add_remote_error(result, outcome.error_code, outcome.error_phase);
  }
  out_.answer(p.reply, result);
}

void AttachedJobs::cancel(Pending& p, const char* why) {
  if (queue_.stop(p.slot, why)) bell_.ring();  // ended at once: serviced on the next turn
}

std::optional<std::pair<uint32_t, uint32_t>> AttachedJobs::find(std::string_view job_id) const {
  uint64_t id = 0;  // attached jobs have numeric ids
  auto [end, ec] = std::from_chars(job_id.data(), job_id.data() + job_id.size(), id);
  if (ec != std::errc() || end != job_id.data() + job_id.size()) return std::nullopt;
  for (const auto& [slot, p] : pending_)  // (the frontend's own jobs are not the clients')
    if (p.job_id == id && !p.internal) return std::pair{slot, jobs_.load(slot).generation};
  return std::nullopt;
}

void AttachedJobs::client_gone(uint64_t conn_id) {
  for (auto& [slot, p] : pending_)
    if (p.reply.conn_id == conn_id) {
      p.reply.conn_id = 0;
      cancel(p, "cancelled: the client disconnected");
    }
}

void AttachedJobs::client_drained(uint64_t conn_id) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.reply.conn_id == conn_id && service(it->second)) {
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace sp::frontend
