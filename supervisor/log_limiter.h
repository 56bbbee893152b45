// LogLimiter: bounds how often one kind of message is logged, so a kill
// storm does not flood the log. At most `burst` messages within `window`;
// the rest are counted, and the first message allowed after the window says
// how many were left out. Pure (time is passed in).
#pragma once

#include <cstdint>

namespace sp::supervisor {

class LogLimiter {
 public:
  LogLimiter(uint32_t burst, uint64_t window_ns) : burst_(burst), window_(window_ns) {}

  // Whether to log a message at `now_ns`. When it is allowed after some were
  // left out, `*left_out` is their count (else 0).
  bool allow(uint64_t now_ns, uint64_t* left_out) {
    *left_out = 0;
    if (now_ns - window_start_ >= window_ || !started_) {
      started_ = true;
      window_start_ = now_ns;
      count_ = 0;
      *left_out = dropped_;
      dropped_ = 0;
    }
    if (count_ < burst_) {
      ++count_;
      return true;
    }
    ++dropped_;
    return false;
  }

 private:
  uint32_t burst_;
  uint64_t window_;
  bool started_ = false;
  uint64_t window_start_ = 0;
  uint32_t count_ = 0;
  uint64_t dropped_ = 0;
};

}  // namespace sp::supervisor
