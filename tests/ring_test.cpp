// The submission ring and job-table claims: FIFO order, fullness, stale
// cells, many processes claiming at once, and claimers killed at any point.
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <random>
#include <set>
#include <vector>

#include "shm/repair.h"
#include "tests/shm_fixture.h"

using sp::shm::JobState;
using sp::shm::JobWord;
using sp::test::enqueue;
using sp::test::TestSegment;

namespace {

// Shared anonymous memory for results counted by child processes.
template <typename T>
T* shared_array(size_t n) {
  void* p =
      ::mmap(nullptr, sizeof(T) * n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(p != MAP_FAILED);
  return static_cast<T*>(p);
}

// What a worker does with a claimed job here: finish it at once.
void complete(sp::shm::Segment& seg, uint32_t slot) {
  JobWord w = seg.jobs().load(slot);
  REQUIRE(w.state == JobState::kClaimed);
  REQUIRE(seg.jobs().transition(slot, w, w.with_state(JobState::kExited)));
}

}  // namespace

TEST_CASE("ring hands out queued jobs in FIFO order, once each", "[ring]") {
  TestSegment seg;
  for (uint32_t i = 0; i < 10; ++i) enqueue(*seg, i);
  auto ring = seg->ring();
  for (uint32_t i = 0; i < 10; ++i) {
    auto got = ring.claim(seg->jobs(), 1, 1);
    REQUIRE(got);
    CHECK(*got == i);
    CHECK(seg->jobs().load(i).state == JobState::kClaimed);
    CHECK(seg->jobs().load(i).owner == 1);
  }
  CHECK_FALSE(ring.claim(seg->jobs(), 1, 1));
  CHECK(ring.depth() == 0);
}

TEST_CASE("ring wraps around many times and reports full", "[ring]") {
  TestSegment seg;
  auto ring = seg->ring();
  uint32_t cells = seg->header().ring_cells;
  REQUIRE(cells == 128);  // 2 x 64 slots, rounded to a power of two
  for (int lap = 0; lap < 50; ++lap) {
    for (uint32_t i = 0; i < 64; ++i) enqueue(*seg, i);
    for (uint32_t i = 0; i < 64; ++i) {
      auto got = ring.claim(seg->jobs(), 2, 1);
      REQUIRE(got);
      REQUIRE(*got == i);
      JobWord w = seg->jobs().load(i);
      REQUIRE(seg->jobs().transition(i, w, w.with_state(JobState::kExited)));
      REQUIRE(seg->jobs().release(i, seg->jobs().load(i)));
    }
  }
  // Fill every cell (the same slot may be named twice: pushes do not check).
  for (uint32_t i = 0; i < cells; ++i) REQUIRE(ring.push(i % 64));
  CHECK_FALSE(ring.push(0));
}

TEST_CASE("a cell whose job is no longer queued is dropped, not handed out", "[ring]") {
  TestSegment seg;
  enqueue(*seg, 3);
  enqueue(*seg, 4);
  // Claimed behind the ring's back, as by a worker killed before it popped the cell.
  REQUIRE(seg->jobs().claim(3, 5, 1));
  auto got = seg->ring().claim(seg->jobs(), 1, 1);
  REQUIRE(got);
  CHECK(*got == 4);
  CHECK_FALSE(seg->ring().claim(seg->jobs(), 1, 1));
}

TEST_CASE("a freed slot's generation moves on, so stale words never match", "[job_table]") {
  TestSegment seg;
  auto jobs = seg->jobs();
  uint32_t cursor = 0;
  auto slot = jobs.allocate(cursor);
  REQUIRE(slot);
  JobWord allocated = jobs.load(*slot);
  CHECK(allocated.state == JobState::kAllocated);
  JobWord done = allocated.with_state(JobState::kExited);
  REQUIRE(jobs.transition(*slot, allocated, done));
  REQUIRE(jobs.release(*slot, done));
  CHECK(jobs.load(*slot).generation == allocated.generation + 1);
  CHECK_FALSE(jobs.release(*slot, done));  // the old word is stale now
}

TEST_CASE("allocate reports a full table", "[job_table]") {
  TestSegment seg;
  auto jobs = seg->jobs();
  uint32_t cursor = 0;
  for (uint32_t i = 0; i < jobs.size(); ++i) REQUIRE(jobs.allocate(cursor));
  CHECK_FALSE(jobs.allocate(cursor));
}

TEST_CASE("orphaned jobs are freed by whoever sees them terminal last", "[job_table]") {
  TestSegment seg;
  auto jobs = seg->jobs();
  enqueue(*seg, 0);
  REQUIRE(jobs.claim(0, 1, 1));
  jobs.set_control(0, sp::shm::kControlOrphan);
  jobs.release_if_orphaned(0);
  CHECK(jobs.load(0).state == JobState::kClaimed);  // not terminal yet: kept
  REQUIRE(sp::shm::publish_terminal(*seg, 0, jobs.load(0), JobState::kExited, 0, 0, ""));
  CHECK(jobs.load(0).state == JobState::kFree);
}

TEST_CASE("several processes claiming at once get every job exactly once", "[ring][processes]") {
  sp::shm::Capacities caps = TestSegment::small_caps();
  caps.job_slots = 4096;
  TestSegment seg(caps);
  constexpr int kConsumers = 4;
  constexpr uint32_t kJobs = 4096;
  auto* claims = shared_array<std::atomic<uint32_t>>(kJobs);
  for (uint32_t i = 0; i < kJobs; ++i) claims[i] = 0;
  // Half queued before the consumers start, half while they run.
  for (uint32_t i = 0; i < kJobs / 2; ++i) enqueue(*seg, i);
  auto* producer_done = shared_array<std::atomic<int>>(1);
  *producer_done = 0;
  std::vector<pid_t> kids;
  for (int k = 0; k < kConsumers; ++k) {
    pid_t pid = ::fork();
    if (pid == 0) {
      auto opened = sp::shm::Segment::open(seg.name());
      if (!opened) _exit(2);
      for (;;) {
        auto got = opened->ring().claim(opened->jobs(), uint8_t(k + 1), 1);
        if (got) {
          claims[*got].fetch_add(1);
          continue;
        }
        if (producer_done->load() && opened->ring().depth() == 0) _exit(0);
      }
    }
    kids.push_back(pid);
  }
  for (uint32_t i = kJobs / 2; i < kJobs; ++i) enqueue(*seg, i);
  *producer_done = 1;
  for (pid_t pid : kids) {
    int status;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
  }
  for (uint32_t i = 0; i < kJobs; ++i) {
    INFO("job " << i);
    REQUIRE(claims[i].load() == 1);
    REQUIRE(seg->jobs().load(i).state == JobState::kClaimed);
  }
}

TEST_CASE("claimers killed at random points lose no job and wedge no cell",
          "[ring][processes][crash]") {
  sp::shm::Capacities caps = TestSegment::small_caps();
  caps.job_slots = 2048;
  TestSegment seg(caps);
  constexpr uint32_t kJobs = 2048;
  auto* completions = shared_array<std::atomic<uint32_t>>(kJobs);
  for (uint32_t i = 0; i < kJobs; ++i) {
    completions[i] = 0;
    enqueue(*seg, i);
  }
  std::mt19937 rng(12345);
  uint32_t kills = 0, requeued = 0;
  uint8_t owner = 1;
  // Generations of consumers, each SIGKILLed after a random few microseconds.
  while (seg->ring().depth() > 0 && owner < 60) {
    pid_t pid = ::fork();
    if (pid == 0) {
      auto opened = sp::shm::Segment::open(seg.name());
      if (!opened) _exit(2);
      for (;;) {
        auto got = opened->ring().claim(opened->jobs(), owner, 1);
        if (!got) _exit(0);
        // "Work" between claim and completion: most kills land in this window.
        for (int spin = 0; spin < 20000; ++spin) asm volatile("" ::: "memory");
        complete(*opened, *got);
        completions[*got].fetch_add(1);
      }
    }
    ::usleep(std::uniform_int_distribution<useconds_t>(500, 3000)(rng));
    ::kill(pid, SIGKILL);
    int status;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    if (WIFSIGNALED(status)) ++kills;
    // The supervisor's repair: jobs the dead one claimed but did not finish go back.
    requeued += sp::shm::repair_after_worker_death(*seg, owner - 1, "lost").requeued;
    ++owner;
  }
  // A last, undisturbed consumer drains what is left.
  while (auto got = seg->ring().claim(seg->jobs(), 63, 1)) {
    complete(*seg, *got);
    completions[*got].fetch_add(1);
  }
  INFO("consumers killed: " << kills << ", jobs requeued: " << requeued);
  CHECK(kills > 0);
  CHECK(requeued > 0);
  CHECK(seg->ring().depth() == 0);
  for (uint32_t i = 0; i < kJobs; ++i) {
    INFO("job " << i);
    // Completed exactly once, or completed by a consumer killed right after
    // the state change but before it counted: never twice, never lost.
    REQUIRE(seg->jobs().load(i).state == JobState::kExited);
    REQUIRE(completions[i].load() <= 1);
  }
}

TEST_CASE("a pusher killed between its cell CAS and its tail CAS wedges nothing", "[ring][crash]") {
  TestSegment seg;
  auto jobs = seg->jobs();
  // The state a pusher leaves when killed right after its cell CAS: cell 0
  // holds job 5 for position 0 (seq 0, full), tail still 0.
  JobWord w = jobs.load(5);
  REQUIRE(jobs.transition(5, w, w.with_state(JobState::kQueued)));
  auto* cells = reinterpret_cast<std::atomic<uint64_t>*>(
      reinterpret_cast<unsigned char*>(&seg->header()) + seg->header().ring_off);
  cells[0].store(uint64_t{1} << 31 | 5);
  REQUIRE(seg->header().ring_tail.load() == 0);

  SECTION("the cell is consumed first, then a push helps tail past it") {
    auto got = seg->ring().claim(jobs, 1, 1);
    REQUIRE(got);
    CHECK(*got == 5);
  }
  SECTION("a push finds the full cell and helps tail past it") {}

  // Push in a child with a deadline: a spinning push fails the test, not hangs it.
  pid_t child = ::fork();
  if (child == 0) {
    ::alarm(5);
    JobWord w6 = jobs.load(6);
    jobs.transition(6, w6, w6.with_state(JobState::kQueued));
    _exit(seg->ring().push(6) ? 0 : 1);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));  // not killed by the alarm
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(seg->header().ring_tail.load() == 2);
}
