// Reloads: the `reload` method. The caller must be the daemon's own uid or
// root. The frontend counts the call in the segment
// (shm::ReloadState::requested), sends the supervisor SIGHUP and parks the
// call until a reload that covers it has ended (ReloadState::answered), then
// answers with its result. The supervisor coalesces calls that come while it
// reloads into one more reload. Used from the frontend's single thread.
#pragma once

#include <cstdint>
#include <vector>

#include "frontend/connections.h"
#include "frontend/method_table.h"
#include "shm/segment.h"

namespace sp::frontend {

class Reloads {
 public:
  static constexpr size_t kMaxWaiting = 64;                      // beyond: a retryable error
  static constexpr uint64_t kAnswerTimeoutNs = 120'000'000'000;  // then an internal error

  Reloads(const shm::Segment& seg, Connections& out) : seg_(seg), out_(out) {}
  void add_methods(MethodTable& methods);
  // Answers the calls a finished reload covered (call on every bell and tick).
  void service();
  // The `config` section of health: the generation the frontend uses (it
  // takes a new one on its next loop turn after the supervisor published
  // it), when it was loaded, the last reload.
  rpc::Object describe(uint64_t generation_in_use) const;

 private:
  struct Waiting {
    Reply reply;
    uint64_t ticket;
    uint64_t deadline_ns;
  };
  void start(Reply r);

  const shm::Segment& seg_;
  Connections& out_;
  std::vector<Waiting> waiting_;  // bounded: kMaxWaiting
};

}  // namespace sp::frontend
