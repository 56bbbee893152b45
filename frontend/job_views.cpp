#include "frontend/job_views.h"

#include <algorithm>

#include "common/clock.h"
#include "common/text.h"
#include "frontend/names.h"
#include "shm/codec.h"

namespace sp::frontend {

using shm::JobState;

namespace {

rpc::Value time_or_null(uint64_t unix_ms) {
  return unix_ms ? rpc::Value(unix_ms) : rpc::Value(nullptr);
}

// Text for the answer: base64, bytes, or UTF-8 with invalid bytes
// replaced. With `hold`, an incomplete sequence at the end is left out;
// returns its length.
size_t encode_text(std::string& out, std::string_view bytes, OutputEncoding e, bool hold) {
  std::string carry;
  append_output_text(out, bytes, e, carry, !hold);
  return carry.size();
}

// A spool read as an answer's "data" (and each chunk, when `both`):
// returns the bytes held back, an incomplete character at the end whose
// rest is still to come (none once `eof`).
uint64_t encode_chunks(const shm::SpoolRead& got, OutputEncoding e, bool eof, bool both,
                       std::string& data, rpc::Array& chunks) {
  uint64_t held = 0;
  for (size_t k = 0; k < got.chunks.size(); ++k) {
    const auto& chunk = got.chunks[k];
    const bool last = k + 1 == got.chunks.size();
    std::string text;
    held += encode_text(text, chunk.data, e, last && !eof);
    data += text;
    if (both)
      chunks.push_back(
          rpc::Object{{"stream", chunk.stream == shm::kStreamStderr ? "stderr" : "stdout"},
                      {"data", output_value(std::move(text), e)}});
  }
  if (e == OutputEncoding::kBase64 && got.chunks.size() > 1) {  // padding only at the end
    std::string raw;
    for (const auto& chunk : got.chunks) raw += chunk.data;
    data.clear();
    encode_text(data, raw, OutputEncoding::kBase64, false);
  }
  return held;
}

}  // namespace

const char* JobViews::state(uint32_t rec) const {
  const shm::JobRecord& r = records_.at(rec);
  if (uint32_t final_state = r.final_state.load(std::memory_order_acquire))
    return state_name(JobState(final_state));
  if (JobRecords::is_plan(r)) return "running";
  return state_name(jobs_.load(r.slot).state);
}

bool JobViews::succeeded(uint32_t rec) const {
  const shm::JobRecord& r = records_.at(rec);
  if (r.final_state.load(std::memory_order_acquire) != uint32_t(JobState::kExited)) return false;
  return shm::decode_result(r.result, r.result_words).exit_code == 0;
}

std::string JobViews::step_name(uint32_t step) const {
  const shm::JobRecord& r = records_.at(step);
  if (!r.plan) return r.id;
  // '/' is in no job_id a client chooses, so step ids never collide with them.
  std::string_view id(r.id), prefix(records_.at(r.plan.index()).id);
  return std::string(id.substr(std::min(id.size(), prefix.size() + 1)));
}

void JobViews::forget_hints(uint32_t rec) {
  read_pos_.erase(rec);
  for (uint32_t s : records_.steps_of(rec)) read_pos_.erase(s);
}

rpc::Object JobViews::status(uint32_t rec) const {
  const shm::JobRecord& r = records_.at(rec);
  rpc::Object o;
  o["job_id"] = r.id;
  o["command"] = r.command;
  o["session_id"] = r.session_id[0] ? rpc::Value(r.session_id) : rpc::Value(nullptr);
  o["submitted_at_ms"] = r.submitted_unix_ms;
  o["state"] = state(rec);
  if (JobRecords::settled(r)) {
    shm::JobOutcome out = shm::decode_result(r.result, r.result_words);
    o["exit_code"] = out.exit_code;
    o["signal"] = signal_value(out.signal);
    o["error"] = out.failure.empty() ? rpc::Value(nullptr) : rpc::Value(out.failure);
    if (out.error_code) add_remote_error(o, out.error_code, out.error_phase);
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
    o["pid"] = pid > 0 ? rpc::Value(pid) : rpc::Value(nullptr);
    uint64_t start = s.start_ns.load(), now = monotonic_ns();
    o["started_at_ms"] = start ? rpc::Value(unix_ms() - (now - std::min(now, start)) / 1'000'000)
                               : rpc::Value(nullptr);
    o["finished_at_ms"] = nullptr;
    o["duration_ms"] = start ? (now - std::min(now, start)) / 1'000'000 : 0;
  }
  if (JobRecords::is_plan(r)) {
    o["strategy"] = plan_kind_name(shm::PlanKind(r.plan_kind));
    o["steps"] = plan_steps(rec);
    return o;
  }
  if (r.plan) o["plan"] = records_.at(r.plan.index()).id;
  o["stdout_bytes"] = r.out_bytes[0].load();
  o["stderr_bytes"] = r.out_bytes[1].load();
  o["truncated"] = r.truncated.load() != 0;
  return o;
}

rpc::Object JobViews::result(uint32_t rec, const rpc::JobWaitParams& p) const {
  if (JobRecords::is_plan(records_.at(rec))) return plan_result(rec, p);
  // As execute answers, from the spool: each stream up to the cap.
  rpc::Object o = status(rec);
  const shm::JobRecord& r = records_.at(rec);
  uint64_t cap = std::min(max_output_bytes_, p.max_output_bytes.value_or(UINT64_MAX));
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
    encode_text(text, bytes, p.encoding, false);
    o[i ? "stderr" : "stdout"] = output_value(std::move(text), p.encoding);
  }
  const std::string job_state = state(rec);
  o["status"] = job_state;
  o["timed_out"] = job_state == "timed_out";
  o["truncated"] = truncated;
  add_encoding(o, p.encoding);
  return o;
}

std::variant<rpc::Object, JobError> JobViews::output(uint32_t rec, const rpc::JobOutputParams& p,
                                                     bool& ready) {
  const shm::JobRecord& r = records_.at(rec);
  if (JobRecords::is_plan(r)) {
    std::string steps;
    for (uint32_t s : records_.steps_of(rec))
      steps += (steps.empty() ? "" : ", ") + std::string(records_.at(s).id);
    return JobError{JobError::kNoOutput,
                    "job " + std::string(r.id) +
                        " is a plan and has no output of its own; read its steps: " + steps,
                    {}};
  }
  // Read before the spool's end, so that a job seen settled has all of its
  // output below that end.
  const bool done = JobRecords::settled(r);
  const uint64_t end = r.spool_end.load(std::memory_order_acquire);
  const shm::SpoolView view = p.stream;
  const bool both = view == shm::SpoolView::kBoth;
  shm::SpoolRead got;
  shm::SpoolPos* hint = nullptr;
  if (end > 0) {
    auto fd = records_.open_spool(rec);
    if (!fd)
      return JobError{
          JobError::kUnreadable, "job " + std::string(r.id) + ": " + fd.error().message(), {}};
    auto& [seq, pos] = read_pos_[rec];
    if (seq != r.seq) seq = r.seq, pos = {};
    hint = &pos;
    // UTF-8 text must be able to take one whole character (4 bytes).
    const bool text = p.encoding != OutputEncoding::kBase64 && p.encoding != OutputEncoding::kBytes;
    uint64_t max = text ? std::max<uint64_t>(p.max_bytes, 4) : p.max_bytes;
    auto read = shm::read_spool(fd->get(), end, view, p.cursor, max, pos);
    if (!read)
      return JobError{
          JobError::kUnreadable, "job " + std::string(r.id) + ": " + read.error().message(), {}};
    got = std::move(read).value();
  } else {
    got.next_cursor = p.cursor;
    got.at_end = true;
  }
  // Past the end once the job has ended and all the output it published was
  // read (taken from the scan: a worker killed mid-chunk may have counted
  // bytes it never published).
  const bool eof = done && got.at_end;
  rpc::Object o;
  rpc::Array chunks;
  std::string data;
  const uint64_t next = got.next_cursor - encode_chunks(got, p.encoding, eof, both, data, chunks);
  // The next read starts at `next`: keep the resume point only if it is not
  // past it (after a held-back character it may be).
  if (hint && got.resume.at[size_t(view)] <= next) *hint = got.resume;
  ready = next != p.cursor || eof;
  o["job_id"] = r.id;
  o["data"] = output_value(std::move(data), p.encoding);
  if (both) o["chunks"] = std::move(chunks);
  o["cursor"] = p.cursor;
  o["next_cursor"] = next;
  o["eof"] = eof;
  o["truncated"] = r.truncated.load() != 0;
  o["state"] = state(rec);
  add_encoding(o, p.encoding);
  return o;
}

rpc::Object JobViews::plan_result(uint32_t plan, const rpc::JobWaitParams& p) const {
  const shm::JobRecord& pr = records_.at(plan);
  rpc::Object o = status(plan);
  const bool dag = pr.plan_kind == uint32_t(shm::PlanKind::kDag);
  rpc::Object by_name;
  rpc::Array in_order;
  for (uint32_t s : records_.steps_of(plan)) {
    rpc::Object r = result(s, p);
    std::string name = step_name(s);
    r["name"] = name;
    if (dag) {
      by_name.emplace_back(std::move(name), std::move(r));
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
  o["success"] = o["exit_code"] == rpc::Value(0);
  o["status"] = o["state"];
  return o;
}

rpc::Array JobViews::plan_steps(uint32_t plan) const {
  rpc::Array out;
  for (uint32_t s : records_.steps_of(plan)) {
    rpc::Object st = status(s);
    out.push_back(rpc::Object{{"name", step_name(s)},
                              {"job_id", st["job_id"]},
                              {"state", st["state"]},
                              {"exit_code", st["exit_code"]},
                              {"signal", st["signal"]},
                              {"error", st["error"]}});
  }
  return out;
}

}  // namespace sp::frontend
