// A private shm segment for one test: unique name, removed on destruction.
#pragma once

#include <unistd.h>

#include <atomic>
#include <string>

#include "shm/segment.h"

namespace sp::test {

class TestSegment {
 public:
  explicit TestSegment(shm::Capacities caps = small_caps())
      : name_("shell-pool-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++)),
        seg_(create(name_, caps)) {}
  ~TestSegment() { shm::Segment::remove(name_); }
  TestSegment(const TestSegment&) = delete;
  TestSegment& operator=(const TestSegment&) = delete;

  shm::Segment& operator*() { return seg_; }
  shm::Segment* operator->() { return &seg_; }
  const std::string& name() const { return name_; }

  static shm::Capacities small_caps() {
    shm::Capacities c;
    c.job_slots = 64;
    c.spec_bytes = 4096;
    c.output_bytes = 4096;
    c.session_slots = 4;
    c.session_env_bytes = 1024;
    c.workers = 8;
    return c;
  }

 private:
  static std::atomic<int>& counter() {
    static std::atomic<int> n{0};
    return n;
  }
  static shm::Segment create(const std::string& name, const shm::Capacities& caps) {
    shm::Segment::remove(name);
    auto s = shm::Segment::create(name, caps);
    if (!s) throw std::runtime_error(s.error().message());
    return std::move(s).value();
  }
  std::string name_;
  shm::Segment seg_;
};

// Puts slot `i` (Free) on the queue as the frontend does.
inline void enqueue(shm::Segment& seg, uint32_t i) {
  shm::JobTable jobs = seg.jobs();
  shm::JobWord w = jobs.load(i);
  shm::JobWord queued = w.with_state(shm::JobState::kQueued);
  if (!jobs.transition(i, w, queued) || !seg.ring().push(i)) throw std::runtime_error("enqueue");
}

}  // namespace sp::test
