#include "worker/worker.h"

#include "common/log.h"
#include "shm/segment.h"
#include "worker/loop.h"

namespace sp::worker {

int run(const Options& options) {
  auto seg = shm::Segment::open(options.shm_name);
  if (!seg) {
    spdlog::critical("{}", seg.error().message());
    return 1;
  }
  Loop loop(options, std::move(seg).value());
  if (Status s = loop.init(); !s) {
    spdlog::critical("{}", s.error().message());
    return 1;
  }
  return loop.run();
}

}  // namespace sp::worker
