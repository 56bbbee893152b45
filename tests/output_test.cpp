// The output rings: records in order, wrap-around with pad records,
// backpressure when full, and the waiting-writer handshake.
#include <catch2/catch.hpp>
#include <cstring>
#include <string>

#include "shm/output.h"
#include "tests/shm_fixture.h"

using sp::shm::OutputReader;
using sp::shm::OutputWriter;
using sp::test::TestSegment;

namespace {

size_t write_record(OutputWriter& w, uint8_t stream, std::string_view data) {
  auto room = w.reserve();
  size_t n = std::min(room.size(), data.size());
  std::memcpy(room.data(), data.data(), n);
  if (n) w.commit(stream, uint32_t(n));
  return n;
}

}  // namespace

TEST_CASE("output chunks arrive in order with their stream tags", "[output]") {
  TestSegment seg;
  auto& slot = seg->jobs().slot(0);
  OutputWriter w(slot, seg->output_rings().ring(0), seg->caps().output_bytes);
  OutputReader r(slot, seg->output_rings().ring(0), seg->caps().output_bytes);
  write_record(w, sp::shm::kStreamStdout, "hello ");
  write_record(w, sp::shm::kStreamStderr, "oops");
  write_record(w, sp::shm::kStreamStdout, "world");
  std::string out, err;
  r.drain([&](uint8_t s, std::string_view d) { (s == sp::shm::kStreamStdout ? out : err) += d; });
  CHECK(out == "hello world");
  CHECK(err == "oops");
  CHECK(r.empty());
}

TEST_CASE("a full output ring stops the writer until the reader frees space", "[output]") {
  TestSegment seg;
  auto& slot = seg->jobs().slot(1);
  uint32_t size = seg->caps().output_bytes;
  OutputWriter w(slot, seg->output_rings().ring(1), size);
  OutputReader r(slot, seg->output_rings().ring(1), size);
  std::string sent;
  for (int i = 0;; ++i) {
    std::string chunk(100, char('a' + i % 26));
    size_t n = write_record(w, sp::shm::kStreamStdout, chunk);
    if (n == 0) break;
    sent.append(chunk, 0, n);
  }
  CHECK(w.reserve().empty());
  CHECK_FALSE(w.pause());  // still full: the writer may sleep
  std::string got;
  CHECK(r.drain([&](uint8_t, std::string_view d) { got += d; }));  // it was waiting: ring it
  CHECK(got == sent);
  CHECK_FALSE(w.reserve().empty());
}

TEST_CASE("the output ring wraps with pad records and loses nothing", "[output]") {
  TestSegment seg;
  auto& slot = seg->jobs().slot(2);
  uint32_t size = seg->caps().output_bytes;
  OutputWriter w(slot, seg->output_rings().ring(2), size);
  OutputReader r(slot, seg->output_rings().ring(2), size);
  std::string sent, got;
  uint64_t seed = 7;
  for (int round = 0; round < 2000; ++round) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    std::string chunk(1 + (seed >> 33) % 700, char('A' + round % 26));
    std::string_view rest = chunk;
    while (!rest.empty()) {
      size_t n = write_record(w, sp::shm::kStreamStdout, rest);
      if (n == 0) r.drain([&](uint8_t, std::string_view d) { got += d; });
      sent.append(rest.substr(0, n));
      rest.remove_prefix(n);
    }
  }
  r.drain([&](uint8_t, std::string_view d) { got += d; });
  CHECK(got.size() == sent.size());
  CHECK(got == sent);
}

TEST_CASE("a reader that frees nothing leaves a waiting writer's flag set", "[output]") {
  TestSegment seg;
  auto& slot = seg->jobs().slot(3);
  OutputWriter w(slot, seg->output_rings().ring(3), seg->caps().output_bytes);
  OutputReader r(slot, seg->output_rings().ring(3), seg->caps().output_bytes);
  while (write_record(w, sp::shm::kStreamStdout, std::string(512, 'x'))) {
  }
  CHECK_FALSE(w.pause());
  CHECK(r.drain([](uint8_t, std::string_view) {}));  // freed space: the writer is to be rung
  CHECK(slot.out_writer_waiting.load() == 0);
  // Empty now: a drain with nothing to read must not clear a new wait.
  slot.out_writer_waiting.store(1);
  CHECK_FALSE(r.drain([](uint8_t, std::string_view) {}));
  CHECK(slot.out_writer_waiting.load() == 1);
}

namespace {

// Slot i as a worker holds it: allocated, queued, claimed, running.
sp::shm::JobWord run_slot(sp::shm::Segment& seg, uint32_t i) {
  using sp::shm::JobState;
  sp::shm::JobTable jobs = seg.jobs();
  uint32_t cursor = i;
  REQUIRE(jobs.allocate(cursor) == i);
  sp::shm::JobWord w = jobs.load(i);
  sp::shm::JobWord running = w.with_state(JobState::kRunning);
  REQUIRE(jobs.transition(i, w, running));
  return running;
}

// Ends and frees slot i as the frontend does after reading its result.
void free_slot(sp::shm::Segment& seg, uint32_t i, sp::shm::JobWord running) {
  sp::shm::JobTable jobs = seg.jobs();
  sp::shm::JobWord exited = running.with_state(sp::shm::JobState::kExited);
  REQUIRE(jobs.transition(i, running, exited));
  REQUIRE(jobs.release(i, exited));
}

}  // namespace

TEST_CASE("a job takes an output ring with its first output and keeps it", "[output][rings]") {
  TestSegment seg;
  sp::shm::OutputRings rings = seg->output_rings();
  CHECK(rings.count() == seg->caps().job_slots);  // --output-rings is capped at the slots
  run_slot(*seg, 5);
  CHECK(rings.held(5) == nullptr);  // a silent job holds none
  CHECK(seg->output_reader(5).empty());
  unsigned char* ring = rings.take(5);
  REQUIRE(ring != nullptr);
  CHECK(rings.held(5) == ring);
  CHECK(rings.take(5) == ring);  // the same one, not a second
  CHECK(rings.in_use() == 1);

  OutputWriter w(seg->jobs().slot(5), ring, rings.bytes());
  write_record(w, sp::shm::kStreamStdout, "through the ring it holds");
  std::string got;
  seg->output_reader(5).drain([&](uint8_t, std::string_view d) { got += d; });
  CHECK(got == "through the ring it holds");
}

TEST_CASE("output rings run out, and come back when their jobs' slots are freed",
          "[output][rings]") {
  sp::shm::Capacities caps = TestSegment::small_caps();
  caps.output_rings = 2;
  TestSegment seg(caps);
  sp::shm::OutputRings rings = seg->output_rings();
  REQUIRE(rings.count() == 2);
  sp::shm::JobWord a = run_slot(*seg, 0), b = run_slot(*seg, 1);
  run_slot(*seg, 2);
  unsigned char* ra = rings.take(0);
  unsigned char* rb = rings.take(1);
  REQUIRE(ra != nullptr);
  REQUIRE(rb != nullptr);
  CHECK(ra != rb);
  CHECK(rings.take(2) == nullptr);  // none free: the job waits
  CHECK(rings.held(2) == nullptr);
  CHECK_FALSE(rings.take_wanted());
  rings.want();

  // The frontend frees job 0's slot: its ring goes with it, nobody gives it back.
  free_slot(*seg, 0, a);
  CHECK(rings.take_wanted());  // the frontend rings the workers
  CHECK_FALSE(rings.take_wanted());
  CHECK(rings.take(2) == ra);
  CHECK(rings.in_use() == 2);

  // The slot's next job starts without a ring: the old index is cleared.
  run_slot(*seg, 0);
  CHECK(rings.held(0) == nullptr);
  CHECK(rings.take(0) == nullptr);
  free_slot(*seg, 1, b);
  CHECK(rings.take(0) == rb);
}

TEST_CASE("a ring held by a job lost with its worker is freed with the slot", "[output][rings]") {
  sp::shm::Capacities caps = TestSegment::small_caps();
  caps.output_rings = 1;
  TestSegment seg(caps);
  sp::shm::OutputRings rings = seg->output_rings();
  sp::shm::JobWord running = run_slot(*seg, 7);
  REQUIRE(rings.take(7) != nullptr);
  // The supervisor's repair marks it lost; the frontend reads it and frees it.
  sp::shm::JobTable jobs = seg->jobs();
  sp::shm::JobWord lost = running.with_state(sp::shm::JobState::kLost);
  REQUIRE(jobs.transition(7, running, lost));
  run_slot(*seg, 8);
  CHECK(rings.take(8) == nullptr);
  REQUIRE(jobs.release(7, lost));
  CHECK(rings.take(8) != nullptr);
}
