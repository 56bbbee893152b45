// Hosts: the remote-host methods (host_add, host_list, host_remove,
// host_check) and fan-out (execute and execute_stream with "hosts"). Hosts
// live in shm (shm::HostTable), so a frontend restart loses none; the remote
// worker owns their connections (remote/) and publishes each pool's
// figures, which host_list shows. A secret (passphrase, password) goes into
// the table and never out of it: no answer, message or log holds one.
//
// A fan-out runs one attached job per host through AttachedJobs, at most
// max_parallel at once, and answers once with every host's entry in request
// order and a summary; a host's failure is its entry's, never the call's.
// Memory: one entry per host of each open fan-out call, bounded by the
// calls in flight and kMaxFanOutHosts.
//
// Used from the frontend's single thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "frontend/attached_jobs.h"
#include "frontend/connections.h"
#include "frontend/job_queue.h"
#include "frontend/method_table.h"
#include "shm/host_table.h"
#include "shm/segment.h"

namespace sp::frontend {

class Hosts {
 public:
  Hosts(const shm::Segment& seg, JobQueue& queue, AttachedJobs& attached, Connections& out);

  void add_methods(MethodTable& methods);
  // After a frontend restart: slots the last one left half-written.
  void recover() { table_.recover(); }
  // The hosts of the configuration (--host), at start and after a reload:
  // new ones are added, changed ones replaced, gone ones removed (their
  // jobs end); hosts added by host_add are left alone.
  void apply_config(const shm::RoleConfig& o);
  // execute / execute_stream with "hosts".
  void fan_out(rpc::ExecParams& p, Reply r, bool stream);
  // Starts the next hosts of the fan-outs whose jobs ended: after
  // AttachedJobs' pass, never inside it (a job started there could take the
  // slot being finished, and would change the map it iterates).
  void service();
  size_t count() const { return table_.all().size(); }

 private:
  struct FanOutCall;

  void add(rpc::HostAddParams& p, Reply r);
  void list(Reply r);
  void remove(rpc::HostNameParams& p, Reply r);
  void check(rpc::HostNameParams& p, Reply r);
  rpc::Object describe(uint32_t i) const;
  // Jobs queued or running on host slot `i` of generation `gen`.
  uint32_t jobs_on(uint32_t i, uint32_t gen) const;
  void launch(const std::shared_ptr<FanOutCall>& call);
  void settle(FanOutCall& call, size_t i, AttachedJobs::Ended e);

  const shm::Segment& seg_;
  std::vector<std::shared_ptr<FanOutCall>> to_launch_;  // ended a job since the last service()
  shm::HostTable table_;
  JobQueue& queue_;
  AttachedJobs& attached_;
  Connections& out_;
};

}  // namespace sp::frontend
