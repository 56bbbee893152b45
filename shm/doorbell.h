// Doorbell: an eventfd inherited from the supervisor plus a BellWord in shm.
// ring() writes the eventfd only on the 0 -> 1 edge of `pending`, so a busy
// sleeper costs its ringers no syscalls. The sleeper calls acknowledge()
// (read the eventfd, clear `pending`) before it looks for work, so nothing
// published before a ring() is missed. Safe from any process that has the fd.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

#include "shm/layout.h"

namespace sp::shm {

class Doorbell {
 public:
  Doorbell() = default;
  Doorbell(BellWord* word, int eventfd) : word_(word), fd_(eventfd) {}

  void ring() const {
    if (word_->pending.exchange(1, std::memory_order_seq_cst) == 0) force();
  }
  // Writes the eventfd regardless of `pending` (the supervisor, after a death).
  void force() const {
    uint64_t one = 1;
    // A full eventfd counter (EAGAIN) is still a pending wake-up: nothing lost.
    [[maybe_unused]] ssize_t n = ::write(fd_, &one, sizeof one);
  }
  void acknowledge() const {
    uint64_t count;
    [[maybe_unused]] ssize_t n = ::read(fd_, &count, sizeof count);  // non-blocking fd
    word_->pending.store(0, std::memory_order_seq_cst);
  }
  int fd() const { return fd_; }

 private:
  BellWord* word_ = nullptr;
  int fd_ = -1;
};

}  // namespace sp::shm
