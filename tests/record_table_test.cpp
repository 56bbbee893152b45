// The shm verbs of detached jobs' records (shm::RecordTable), the spool
// budget's reservation protocol (shm::SpoolBudget) and the job table's
// cancel and signal handshake, on a real segment.
#include <catch2/catch.hpp>

#include "shm/codec.h"
#include "shm/record_table.h"
#include "shm/repair.h"
#include "tests/shm_fixture.h"

using sp::shm::JobState;
using sp::shm::JobWord;
using sp::shm::RecordRef;
using sp::shm::RecordState;
using sp::shm::RecordTable;
using sp::test::TestSegment;

namespace {

// A detached job in a slot as the frontend makes one: allocated, bound to
// record `rec`, queued.
uint32_t detached_job(sp::shm::Segment& seg, RecordTable& records, uint32_t rec) {
  auto jobs = seg.jobs();
  uint32_t cursor = 0;
  auto slot = jobs.allocate(cursor);
  REQUIRE(slot);
  JobWord w = jobs.load(*slot);
  records.bind(rec, *slot, w.generation);
  REQUIRE(jobs.transition(*slot, w, w.with_state(JobState::kQueued)));
  return *slot;
}

// Runs slot `slot` to its end as a worker would.
void run_to_end(sp::shm::Segment& seg, uint32_t slot, int exit_code) {
  auto jobs = seg.jobs();
  JobWord claimed = jobs.load(slot);
  claimed.state = JobState::kClaimed;
  claimed.owner = 1;
  REQUIRE(jobs.transition(slot, jobs.load(slot), claimed));
  JobWord running = claimed.with_state(JobState::kRunning);
  REQUIRE(jobs.transition(slot, claimed, running));
  REQUIRE(sp::shm::publish_terminal(seg, slot, running, JobState::kExited, exit_code, 0, ""));
}

}  // namespace

TEST_CASE("a claimed record starts with every field reset", "[records]") {
  TestSegment seg;
  RecordTable records(*seg);
  auto first = records.claim("one", 7, 100);
  REQUIRE(first);
  sp::shm::JobRecord& r = records.at(*first);
  r.plan = RecordRef::of(2);
  r.deps = 5;
  r.out_bytes[1].store(9);
  r.truncated.store(1);
  std::strcpy(r.command, "make");
  records.release(*first);
  auto again = records.claim("two", 8, 200);
  REQUIRE(again == first);
  CHECK(r.state.load() == uint32_t(RecordState::kWriting));
  CHECK(std::string(r.id) == "two");
  CHECK(r.seq == 8);
  CHECK(r.output_cap == 200);
  CHECK(!r.plan);
  CHECK(r.deps == 0);
  CHECK(r.out_bytes[1].load() == 0);
  CHECK(r.truncated.load() == 0);
  CHECK(std::string(r.command).empty());
  CHECK(r.final_state.load() == 0);
}

TEST_CASE("claim gives nothing when every record is taken", "[records]") {
  sp::shm::Capacities caps = TestSegment::small_caps();
  caps.job_records = 2;
  TestSegment seg(caps);
  RecordTable records(*seg);
  CHECK(records.claim("a", 1, 1));
  CHECK(records.claim("b", 2, 1));
  CHECK_FALSE(records.claim("c", 3, 1));
}

TEST_CASE("settling copies the outcome and frees the job slot", "[records]") {
  TestSegment seg;
  RecordTable records(*seg);
  auto rec = records.claim("job", 1, 100);
  REQUIRE(rec);
  uint32_t slot = detached_job(*seg, records, *rec);
  records.publish(*rec);
  CHECK(seg->jobs().slot(slot).control.load() & sp::shm::kControlDetached);
  CHECK_FALSE(records.settle(*rec));  // still queued
  run_to_end(*seg, slot, 3);
  REQUIRE(records.settle(*rec));
  const sp::shm::JobRecord& r = records.at(*rec);
  CHECK(r.final_state.load() == uint32_t(JobState::kExited));
  CHECK(sp::shm::decode_result(r.result, r.result_words).exit_code == 3);
  CHECK(seg->jobs().load(slot).state == JobState::kFree);
  CHECK(records.settle(*rec));  // once settled, stays settled
}

TEST_CASE("a skipped step is settled and its waiting slot freed", "[records]") {
  TestSegment seg;
  RecordTable records(*seg);
  auto rec = records.claim("plan/a", 2, 100);
  REQUIRE(rec);
  auto jobs = seg->jobs();
  uint32_t cursor = 0;
  auto slot = jobs.allocate(cursor);
  REQUIRE(slot);
  JobWord w = jobs.load(*slot);
  records.bind(*rec, *slot, w.generation);
  REQUIRE(jobs.transition(*slot, w, w.with_state(JobState::kWaiting)));
  records.publish(*rec);
  records.skip(*rec, "skipped: a step failed");
  const sp::shm::JobRecord& r = records.at(*rec);
  CHECK(r.final_state.load() == uint32_t(JobState::kSkipped));
  CHECK(sp::shm::decode_result(r.result, r.result_words).failure == "skipped: a step failed");
  CHECK(jobs.load(*slot).state == JobState::kFree);
}

TEST_CASE("recovery keeps a half-written record whose job reached the ring and frees the rest",
          "[records]") {
  TestSegment seg;
  RecordTable records(*seg);
  // Died after queueing the job, before publishing its record: the job runs.
  auto queued = records.claim("queued", 1, 100);
  REQUIRE(queued);
  uint32_t slot = detached_job(*seg, records, *queued);
  // Died before its job took a slot: never accepted.
  auto unbound = records.claim("unbound", 2, 100);
  REQUIRE(unbound);
  // Died after settling, before freeing the slot.
  auto settled = records.claim("settled", 3, 100);
  REQUIRE(settled);
  uint32_t settled_slot = detached_job(*seg, records, *settled);
  records.publish(*settled);
  run_to_end(*seg, settled_slot, 0);
  records.at(*settled).final_state.store(uint32_t(JobState::kExited));

  records.recover();
  CHECK(records.live(*queued));
  CHECK(seg->jobs().load(slot).state == JobState::kQueued);
  CHECK(records.at(*unbound).state.load() == uint32_t(RecordState::kFree));
  CHECK(seg->jobs().load(settled_slot).state == JobState::kFree);
}

TEST_CASE("the spool budget refuses what does not fit and counts nothing for it", "[spool]") {
  sp::shm::Capacities caps = TestSegment::small_caps();
  caps.spool_bytes = 1 << 20;
  TestSegment seg(caps);
  auto budget = seg->spool_budget();
  sp::shm::WorkerSlot& w = seg->worker(0);
  REQUIRE(budget.reserve(w, 0, 0, 600'000));
  budget.commit(w);
  CHECK_FALSE(budget.reserve(w, 0, 600'000, 500'000));
  CHECK(budget.used() == 600'000);
  budget.give_back(1'000'000);  // never below zero
  CHECK(budget.used() == 0);
}

TEST_CASE("a dead worker's unpublished spool write is given back, a published one is kept",
          "[spool]") {
  TestSegment seg;
  auto budget = seg->spool_budget();
  sp::shm::WorkerSlot& w = seg->worker(0);
  sp::shm::JobRecord& r = seg->record(0);
  r.spool_end.store(0);
  REQUIRE(budget.reserve(w, 0, 0, 40));
  budget.repair_after_death(w);  // died before publishing: given back
  CHECK(budget.used() == 0);
  REQUIRE(budget.reserve(w, 0, 0, 40));
  r.spool_end.store(40);  // published, then died before clearing the reservation
  budget.repair_after_death(w);
  CHECK(budget.used() == 40);
  CHECK(w.spool_reserved.load() == 0);
}

TEST_CASE("a cancel request carries its signal and grace; signals are taken once", "[jobs]") {
  TestSegment seg;
  auto jobs = seg->jobs();
  CHECK_FALSE(jobs.cancel_requested(0));
  jobs.request_cancel(0, 2, 500);
  auto cancel = jobs.cancel_requested(0);
  REQUIRE(cancel);
  CHECK(cancel->signal == 2);
  CHECK(cancel->grace_ms == 500);
  jobs.request_signal(1, 10);
  jobs.request_signal(1, 12);
  CHECK(jobs.take_signals(1) == ((uint64_t{1} << 9) | (uint64_t{1} << 11)));
  CHECK(jobs.take_signals(1) == 0);
}

TEST_CASE("allocate resets what the slot's last job left", "[jobs]") {
  TestSegment seg;
  auto jobs = seg->jobs();
  uint32_t cursor = 0;
  auto slot = jobs.allocate(cursor);
  REQUIRE(slot);
  sp::shm::JobSlot& s = jobs.slot(*slot);
  s.job_id = 9;
  s.record = RecordRef::of(3);
  s.out_head.store(64);
  s.end_ns.store(5);
  jobs.request_cancel(*slot, 9, 1);
  jobs.request_signal(*slot, 1);
  JobWord w = jobs.load(*slot);
  REQUIRE(jobs.transition(*slot, w, {JobState::kFree, 0, 0, w.generation + 1}));
  cursor = *slot;
  REQUIRE(jobs.allocate(cursor) == slot);
  CHECK(s.job_id == 0);
  CHECK(!s.record);
  CHECK(s.out_head.load() == 0);
  CHECK(s.end_ns.load() == 0);
  CHECK_FALSE(jobs.cancel_requested(*slot));
  CHECK(jobs.take_signals(*slot) == 0);
}
