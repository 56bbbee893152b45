// Micro-benchmarks of the submission ring (Google Benchmark).
//
// BM_RingPushClaim: one thread pushes a job and claims it back: the cost of
// the ring's CAS steps alone. BM_Handoff*: a job handed to another thread and
// answered, woken by eventfd doorbells as the daemon does, against a raw
// eventfd ping-pong in the same run: the ratio is what the ring adds to a
// cross-core wake-up.
#include <benchmark/benchmark.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

#include "common/unique_fd.h"
#include "shm/repair.h"
#include "shm/segment.h"

namespace {

using sp::shm::JobState;
using sp::shm::JobWord;

struct BenchSegment {
  std::string name = "shell-pool-bench-" + std::to_string(::getpid());
  sp::shm::Segment seg;
  BenchSegment() : seg(make(name)) {}
  ~BenchSegment() { sp::shm::Segment::remove(name); }
  static sp::shm::Segment make(const std::string& n) {
    sp::shm::Segment::remove(n);
    sp::shm::Capacities caps;
    caps.job_slots = 64;
    caps.spec_bytes = 1024;
    caps.output_bytes = 4096;
    return std::move(sp::shm::Segment::create(n, caps)).value();
  }
};

// Queued -> claimed -> exited -> free, as one job's life in the table.
void queue(sp::shm::Segment& seg, uint32_t slot) {
  auto jobs = seg.jobs();
  JobWord w = jobs.load(slot);
  jobs.transition(slot, w, w.with_state(JobState::kQueued));
  seg.ring().push(slot);
}
void finish(sp::shm::Segment& seg, uint32_t slot) {
  auto jobs = seg.jobs();
  JobWord w = jobs.load(slot);
  jobs.transition(slot, w, w.with_state(JobState::kExited));
  jobs.release(slot, jobs.load(slot));
}

void BM_RingPushClaim(benchmark::State& state) {
  BenchSegment b;
  auto ring = b.seg.ring();
  for (auto _ : state) {
    queue(b.seg, 0);
    auto got = ring.claim(b.seg.jobs(), 1, 1);
    benchmark::DoNotOptimize(got);
    finish(b.seg, 0);
  }
}
BENCHMARK(BM_RingPushClaim);

void wait_efd(int fd) {
  uint64_t v;
  while (::read(fd, &v, sizeof v) != sizeof v) {
  }
}
void ring_efd(int fd) {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof one);
}

void BM_HandoffRawEventfd(benchmark::State& state) {
  sp::UniqueFd to_fd(::eventfd(0, EFD_CLOEXEC)), back_fd(::eventfd(0, EFD_CLOEXEC));
  int to = to_fd.get(), back = back_fd.get();
  std::atomic<bool> stop{false};
  std::thread peer([&] {
    for (;;) {
      wait_efd(to);
      if (stop) return;
      ring_efd(back);
    }
  });
  for (auto _ : state) {
    ring_efd(to);
    wait_efd(back);
  }
  stop = true;
  ring_efd(to);
  peer.join();
}
BENCHMARK(BM_HandoffRawEventfd)->UseRealTime();

void BM_HandoffRing(benchmark::State& state) {
  BenchSegment b;
  sp::UniqueFd to_fd(::eventfd(0, EFD_CLOEXEC)), back_fd(::eventfd(0, EFD_CLOEXEC));
  int to = to_fd.get(), back = back_fd.get();
  std::atomic<bool> stop{false};
  std::thread worker([&] {
    auto ring = b.seg.ring();
    for (;;) {
      wait_efd(to);
      if (stop) return;
      while (auto slot = ring.claim(b.seg.jobs(), 1, 1)) finish(b.seg, *slot);
      ring_efd(back);
    }
  });
  for (auto _ : state) {
    queue(b.seg, 0);
    ring_efd(to);
    wait_efd(back);
  }
  stop = true;
  ring_efd(to);
  worker.join();
}
BENCHMARK(BM_HandoffRing)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
