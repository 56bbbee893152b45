#include "shm/record_table.h"

#include <algorithm>
#include <cstring>

#include "common/clock.h"
#include "common/crash_point.h"
#include "shm/codec.h"
#include "shm/segment.h"

namespace sp::shm {

namespace {

uint64_t to_unix_ms(uint64_t mono_ns) {
  if (!mono_ns) return 0;
  uint64_t now = monotonic_ns();
  uint64_t ago_ms = now > mono_ns ? (now - mono_ns) / 1'000'000 : 0;
  return unix_ms() - ago_ms;
}

}  // namespace

RecordTable::RecordTable(const Segment& seg)
    : records_(&seg.record(0)), count_(seg.caps().job_records), jobs_(seg.jobs()) {}

std::optional<uint32_t> RecordTable::claim(std::string_view id, uint64_t seq, uint64_t output_cap) {
  for (uint32_t i = 0; i < count_; ++i) {
    JobRecord& r = records_[i];
    uint32_t expected = uint32_t(RecordState::kFree);
    if (!r.state.compare_exchange_strong(expected, uint32_t(RecordState::kWriting))) continue;
    r.final_state.store(0, std::memory_order_relaxed);
    r.slot = UINT32_MAX;  // none yet: recover() frees the record
    r.slot_generation = 0;
    r.seq = seq;
    r.submitted_unix_ms = unix_ms();
    r.started_unix_ms = r.finished_unix_ms = 0;
    r.output_cap = output_cap;
    r.kill_on_cap = 0;
    r.result_words = 0;
    std::memset(r.id, 0, sizeof r.id);
    std::memcpy(r.id, id.data(), std::min(id.size(), sizeof r.id - 1));
    std::memset(r.session_id, 0, sizeof r.session_id);
    std::memset(r.command, 0, sizeof r.command);
    std::memset(r.result, 0, sizeof r.result);
    r.plan = {};
    r.step = 0;
    r.plan_seq = r.deps = 0;
    r.plan_kind = r.plan_flags = r.max_parallel = 0;
    r.spool_end.store(0, std::memory_order_relaxed);
    r.out_bytes[0].store(0, std::memory_order_relaxed);
    r.out_bytes[1].store(0, std::memory_order_relaxed);
    r.truncated.store(0, std::memory_order_relaxed);
    return i;
  }
  return std::nullopt;
}

void RecordTable::bind(uint32_t i, uint32_t slot, uint32_t generation) {
  JobRecord& r = records_[i];
  r.slot = slot;
  r.slot_generation = generation;
  jobs_.slot(slot).record = RecordRef::of(i);
  jobs_.set_control(slot, kControlDetached);
}

void RecordTable::publish(uint32_t i) {
  records_[i].state.store(uint32_t(RecordState::kLive), std::memory_order_release);
}

void RecordTable::release(uint32_t i) {
  records_[i].state.store(uint32_t(RecordState::kFree), std::memory_order_release);
}

bool RecordTable::settle(uint32_t i) {
  JobRecord& r = records_[i];
  if (settled(r) || is_plan(r)) return settled(r);
  if (r.slot >= jobs_.size()) return false;
  JobWord w = jobs_.load(r.slot);
  JobSlot& s = jobs_.slot(r.slot);
  if (w.generation != r.slot_generation || s.record != RecordRef::of(i)) {
    // The slot moved on without us: nothing else frees a detached job's
    // slot, so this is a bug; end the record rather than leave it running.
    r.result_words = encode_result(r.result, -1, 0, "lost: its job slot was reused");
    r.finished_unix_ms = unix_ms();
    r.final_state.store(uint32_t(JobState::kLost), std::memory_order_release);
    return true;
  }
  if (!is_terminal(w.state)) return false;  // also: a step still waiting
  std::memcpy(r.result, s.result, sizeof r.result);
  r.result_words = s.result_words;
  r.started_unix_ms = to_unix_ms(s.start_ns.load());
  r.finished_unix_ms = to_unix_ms(s.end_ns.load());
  if (!r.finished_unix_ms) r.finished_unix_ms = unix_ms();
  // Settled before the slot is freed: a frontend dying in between leaves a
  // terminal slot whose record is settled, which recover() frees.
  r.final_state.store(uint32_t(w.state), std::memory_order_release);
  crash_point("mid_settle");
  jobs_.release(r.slot, w);
  return true;
}

void RecordTable::skip(uint32_t i, std::string_view why) {
  JobRecord& r = records_[i];
  if (settled(r)) return;
  r.result_words = encode_result(r.result, -1, 0, why);
  r.finished_unix_ms = unix_ms();
  // Settled first: a frontend dying before the slot is freed leaves a
  // waiting slot whose record is settled, which recover() frees.
  r.final_state.store(uint32_t(JobState::kSkipped), std::memory_order_release);
  free_waiting_slot(i);
}

void RecordTable::settle_plan(uint32_t i, JobState state, int exit_code, std::string_view why,
                              uint64_t started_unix_ms) {
  JobRecord& r = records_[i];
  r.result_words = encode_result(r.result, exit_code, 0, why);
  r.started_unix_ms = started_unix_ms;
  r.finished_unix_ms = unix_ms();
  r.final_state.store(uint32_t(state), std::memory_order_release);
}

void RecordTable::free_waiting_slot(uint32_t i) {
  const JobRecord& r = records_[i];
  if (r.slot >= jobs_.size()) return;
  JobWord w = jobs_.load(r.slot);
  if (w.state == JobState::kWaiting && w.generation == r.slot_generation)
    jobs_.transition(r.slot, w, {JobState::kFree, 0, 0, w.generation + 1});
}

void RecordTable::recover() {
  for (uint32_t i = 0; i < count_; ++i) {
    JobRecord& r = records_[i];
    if (r.state.load() != uint32_t(RecordState::kWriting)) continue;
    bool queued = false;
    if (r.slot < jobs_.size()) {
      JobWord w = jobs_.load(r.slot);
      queued = w.generation == r.slot_generation && w.state != JobState::kFree &&
               w.state != JobState::kAllocated && jobs_.slot(r.slot).record == RecordRef::of(i);
    }
    r.state.store(uint32_t(queued ? RecordState::kLive : RecordState::kFree));
  }
  // Slots of detached jobs that ended or never started whose record is gone
  // or already settled (the last frontend died between the two steps) are
  // nobody's: free them.
  for (uint32_t slot = 0; slot < jobs_.size(); ++slot) {
    JobWord w = jobs_.load(slot);
    const JobSlot& s = jobs_.slot(slot);
    // (A service's generation has no record: frontend/services.h has it.)
    if ((s.control.load() & (kControlDetached | kControlService)) != kControlDetached) continue;
    if (w.state != JobState::kWaiting && !is_terminal(w.state)) continue;
    const RecordRef rec = s.record;
    bool owned = rec.within(count_) && live(rec.index()) && !settled(records_[rec.index()]) &&
                 records_[rec.index()].slot == slot &&
                 records_[rec.index()].slot_generation == w.generation;
    if (!owned) jobs_.transition(slot, w, {JobState::kFree, 0, 0, w.generation + 1});
  }
}

}  // namespace sp::shm
