// The supervisor's repairs after a death, on a real segment with real
// process groups.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "shm/codec.h"
#include "shm/repair.h"
#include "tests/shm_fixture.h"

using sp::shm::JobState;
using sp::shm::JobWord;
using sp::test::enqueue;
using sp::test::TestSegment;

namespace {

bool alive(pid_t pid) {
  // Reap if it is our zombie; then probe.
  ::waitpid(pid, nullptr, WNOHANG);
  return ::kill(pid, 0) == 0;
}

}  // namespace

TEST_CASE("a dead worker's running jobs are killed and lost; unstarted ones requeued", "[repair]") {
  TestSegment seg;
  auto jobs = seg->jobs();
  for (uint32_t i = 0; i < 3; ++i) enqueue(*seg, i);
  // Worker index 1 (owner 2) claims all three; it "runs" job 0 in a real process group.
  for (int i = 0; i < 3; ++i) REQUIRE(seg->ring().claim(jobs, 2, 1));
  pid_t child = ::fork();
  if (child == 0) {
    ::setsid();
    ::pause();
    _exit(0);
  }
  // Until it has its own group, killing "its" group would kill ours.
  bool own_group = false;
  for (int i = 0; i < 1000 && !(own_group = ::getpgid(child) == child); ++i) ::usleep(1000);
  if (!own_group) ::kill(child, SIGKILL);
  REQUIRE(own_group);
  jobs.slot(0).pgid.store(child);
  JobWord w = jobs.load(0);
  REQUIRE(jobs.transition(0, w, w.with_state(JobState::kRunning)));
  // Job 2 belongs to another worker and must not be touched.
  JobWord other = jobs.load(2);
  other.owner = 3;
  REQUIRE(jobs.transition(2, jobs.load(2), other));

  auto report = sp::shm::repair_after_worker_death(*seg, 1, "lost: worker 1 was killed");
  CHECK(report.lost == 1);
  CHECK(report.requeued == 1);
  CHECK(jobs.load(0).state == JobState::kLost);
  auto& s = jobs.slot(0);
  CHECK(sp::shm::decode_result(s.result, s.result_words).failure == "lost: worker 1 was killed");
  CHECK(jobs.load(1).state == JobState::kQueued);
  CHECK(jobs.load(2) == other);
  for (int i = 0; i < 100 && alive(child); ++i) ::usleep(10000);
  CHECK_FALSE(alive(child));
  // The requeued job is claimable again.
  auto again = seg->ring().claim(jobs, 1, 2);
  REQUIRE(again);
  CHECK(*again == 1);
}

TEST_CASE("after a frontend death its jobs are cancelled and its slots freed", "[repair]") {
  TestSegment seg;
  auto jobs = seg->jobs();
  uint32_t cursor = 0;
  auto filling = jobs.allocate(cursor);  // slot 0: being written when it died
  REQUIRE(filling);
  enqueue(*seg, 1);  // queued
  enqueue(*seg, 2);  // running
  enqueue(*seg, 3);  // finished, not yet read
  // Pop the cells of 1, 2 and 3 in order; 1 goes back to plain Queued (a stale cell is fine).
  REQUIRE(seg->ring().claim(jobs, 1, 1));
  JobWord one = jobs.load(1);
  REQUIRE(jobs.transition(1, one, {JobState::kQueued, 0, 0, one.generation}));
  REQUIRE(seg->ring().claim(jobs, 1, 1));
  JobWord two = jobs.load(2);
  REQUIRE(jobs.transition(2, two, two.with_state(JobState::kRunning)));
  REQUIRE(seg->ring().claim(jobs, 1, 1));
  JobWord three = jobs.load(3);
  REQUIRE(sp::shm::publish_terminal(*seg, 3, three, JobState::kExited, 0, 0, ""));

  auto report = sp::shm::repair_after_frontend_death(*seg);
  CHECK(jobs.load(0).state == JobState::kFree);
  CHECK(jobs.load(1).state == JobState::kFree);
  CHECK(jobs.load(3).state == JobState::kFree);
  CHECK(jobs.load(2).state == JobState::kRunning);  // its worker stops it...
  CHECK((jobs.slot(2).control.load() & sp::shm::kControlCancel));
  // ...and when it ends, the slot frees itself: nobody is left to read it.
  REQUIRE(sp::shm::publish_terminal(*seg, 2, jobs.load(2), JobState::kCancelled, -1, 15, ""));
  CHECK(jobs.load(2).state == JobState::kFree);
  CHECK(report.released == 3);
}

TEST_CASE("shutdown cancels queued jobs and counts the unfinished", "[repair]") {
  TestSegment seg;
  for (uint32_t i = 0; i < 4; ++i) enqueue(*seg, i);
  REQUIRE(seg->ring().claim(seg->jobs(), 1, 1));
  CHECK(sp::shm::unfinished_jobs(*seg) == 4);
  CHECK(sp::shm::cancel_queued(*seg, "shutting down") == 3);
  CHECK(sp::shm::unfinished_jobs(*seg) == 1);
  CHECK(seg->jobs().load(3).state == JobState::kCancelled);
}
