#include "supervisor/restart_policy.h"

#include <algorithm>

namespace sp::supervisor {

std::optional<uint64_t> RestartPolicy::on_death(uint64_t started_ns, uint64_t now_ns,
                                                const std::function<uint64_t(uint64_t)>& jitter) {
  if (now_ns - started_ns > kHealthyNs) deaths_.clear();
  while (!deaths_.empty() && now_ns - deaths_.front() > window_) deaths_.pop_front();
  deaths_.push_back(now_ns);
  if (deaths_.size() > max_) return std::nullopt;
  size_t n = deaths_.size();
  if (n <= 1) return 0;
  uint64_t delay = std::min<uint64_t>(kFirstBackoffNs << std::min<size_t>(n - 2, 6), kMaxBackoffNs);
  return delay + jitter(delay / 4);
}

}  // namespace sp::supervisor
