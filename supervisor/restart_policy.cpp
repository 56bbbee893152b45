#include "supervisor/restart_policy.h"

#include <algorithm>

namespace sp::supervisor {

std::optional<uint64_t> RestartPolicy::on_death(uint64_t started_ns, uint64_t now_ns,
                                                shm::DeathKind kind,
                                                const std::function<uint64_t(uint64_t)>& jitter) {
  if (now_ns - started_ns > kHealthyNs) streak_ = 0;
  if (kind == shm::DeathKind::kAfterReady) {
    boot_failures_.clear();
  } else if (kind == shm::DeathKind::kBootFailure) {
    while (!boot_failures_.empty() && now_ns - boot_failures_.front() > window_)
      boot_failures_.pop_front();
    boot_failures_.push_back(now_ns);
    if (boot_failures_.size() > max_) return std::nullopt;
  }
  streak_ = std::min<uint32_t>(streak_ + 1, 64);
  uint64_t delay = std::min<uint64_t>(kFloorNs << std::min<uint32_t>(streak_ - 1, 16), kCapNs);
  return delay + jitter(delay / 4);
}

}  // namespace sp::supervisor
