#include "frontend/reloads.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/clock.h"
#include "common/log.h"
#include "frontend/errors.h"
#include "shm/role_config.h"

namespace sp::frontend {

void Reloads::add_methods(MethodTable& methods) {
  methods.add("reload", [this](Reply r) { start(std::move(r)); });
}

void Reloads::start(Reply r) {
  if (!out_.privileged(r.conn_id)) return out_.fail(r, to_rpc(ReloadError::kForbidden));
  if (waiting_.size() >= kMaxWaiting) return out_.fail(r, to_rpc(ReloadError::kBusy));
  shm::ReloadState& state = seg_.header().reload;
  const uint64_t ticket = state.requested.fetch_add(1) + 1;
  // Our parent is the supervisor (a frontend dies with it: PR_SET_PDEATHSIG).
  if (::kill(::getppid(), SIGHUP) != 0)
    spdlog::error("reload: cannot signal the supervisor: {}", std::strerror(errno));
  waiting_.push_back({std::move(r), ticket, monotonic_ns() + kAnswerTimeoutNs});
}

void Reloads::service() {
  if (waiting_.empty()) return;
  const shm::ReloadState& state = seg_.header().reload;
  const uint64_t answered = state.answered.load(std::memory_order_acquire);
  const uint64_t now = monotonic_ns();
  std::erase_if(waiting_, [&](Waiting& w) {
    if (w.ticket <= answered) {
      const std::string message(state.last_message,
                                ::strnlen(state.last_message, sizeof state.last_message));
      if (state.last_ok.load())
        out_.answer(w.reply, rpc::Object{{"generation", shm::config_generation(seg_.header())},
                                         {"loaded_at_ms", state.loaded_unix_ms.load()},
                                         {"message", message}});
      else
        out_.fail(w.reply, to_rpc(ReloadError::kFailed, message));
      return true;
    }
    if (now < w.deadline_ns) return false;
    out_.fail(w.reply, to_rpc(ReloadError::kNoAnswer));
    return true;
  });
}

rpc::Object Reloads::describe(uint64_t generation_in_use) const {
  const shm::ReloadState& state = seg_.header().reload;
  rpc::Object o{{"generation", generation_in_use},
                {"loaded_at_ms", state.loaded_unix_ms.load()},
                {"reloads_ok", state.reloads_ok.load()},
                {"reloads_failed", state.reloads_failed.load()}};
  if (uint64_t at = state.last_unix_ms.load()) {
    o["last_reload"] = rpc::Object{
        {"ok", state.last_ok.load() == 1},
        {"at_ms", at},
        {"message", std::string(state.last_message,
                                ::strnlen(state.last_message, sizeof state.last_message))}};
  }
  return o;
}

}  // namespace sp::frontend
