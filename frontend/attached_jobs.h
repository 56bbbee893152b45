// AttachedJobs: execute and execute_stream, the jobs a client waits for on
// its connection. Drains each job's shm output ring into its answer (up to
// the output cap) or into stream chunks, answers when the job ends, and
// cancels the jobs of a client that leaves.
//
// Memory: the execute output it holds, plus the transport's unsent answers,
// is held to --output-budget: over it only the oldest job with output
// waiting drains, and the others' commands block on their pipes
// (docs/architecture.md, "Output memory in the frontend"). Pending jobs are
// bounded by the job table.
//
// Used from the frontend's single thread.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "frontend/connections.h"
#include "frontend/job_queue.h"
#include "frontend/method_table.h"
#include "shm/doorbell.h"
#include "shm/segment.h"

namespace sp::frontend {

class AttachedJobs {
 public:
  AttachedJobs(const shm::RoleConfig& o, const shm::Segment& seg, JobQueue& queue, Connections& out,
               const shm::Doorbell& bell)
      : o_(o), seg_(seg), jobs_(seg.jobs()), queue_(queue), out_(out), bell_(bell) {}

  void add_methods(MethodTable& methods);

  // A job run for another part of the frontend (the file methods): instead
  // of execute's answer, `done` gets its output (each stream up to
  // p.max_output_bytes, else execute's cap) and how it ended, with the
  // Reply to answer. Not called when the client left: the job is cancelled.
  // A job that cannot be queued is answered with the error here.
  struct Ended {
    std::string out, err;
    shm::JobState state = shm::JobState::kFree;
    int exit_code = 0;
    std::string failure;  // why it failed to start, was lost, ...
    int signal = 0;
    bool truncated = false;
    uint64_t duration_ms = 0;
    uint64_t job_id = 0;
    uint8_t error_code = 0, error_phase = 0;  // a remote job's (common/remote_error.h)
  };
  using Done = std::function<void(Reply r, Ended e)>;
  void run(rpc::ExecParams& p, Reply r, Done done);
  // One of several jobs answered together (a fan-out): its output streams
  // as execute_stream's chunks (with "host") when `stream`, and `r` is
  // never answered here (the caller answers it once); `done` gets the job's
  // end. False (nothing started) with why, if it could not be queued.
  std::optional<SubmitError> run_shared(rpc::ExecParams& p, const Reply& r, bool stream, Done done);
  // Fan-out: execute and execute_stream with "hosts" go to `f`.
  using FanOut = std::function<void(rpc::ExecParams& p, Reply r, bool stream)>;
  void set_fan_out(FanOut f) { fan_out_ = std::move(f); }
  // A job the frontend itself waits for (a service's readiness probe): as
  // run(), with no client (`done` gets an empty Reply, and is called however
  // the job ends); why it could not be queued, if it could not.
  std::optional<SubmitError> run_internal(rpc::ExecParams& p, Done done);

  // Moves output and answers ended jobs (the frontend's doorbell rang, or
  // its tick came).
  void service_all();
  // Its client left: its jobs are cancelled.
  void client_gone(uint64_t conn_id);
  // Its client read its backlog down: its jobs may move again.
  void client_drained(uint64_t conn_id);
  // Jobs were held for the budget and the budget has room again.
  bool want_service() const { return held_back_ && !over_budget(); }

  uint64_t held_bytes() const { return buffered_ + out_.unsent(); }
  // The slot and generation of unfinished job `job_id`, if it is one of ours.
  std::optional<std::pair<uint32_t, uint32_t>> find(std::string_view job_id) const;
  uint64_t budget_holds() const { return budget_holds_; }
  // The loop's epoll timeout: `tick_ms`, or sooner for a stream's heartbeat.
  int next_wait_ms(int tick_ms) const;

 private:
  // A job this frontend submitted and has not finished answering.
  struct Pending {
    uint32_t slot = 0;
    uint64_t job_id = 0;
    Reply reply;
    bool stream = false;
    OutputEncoding encoding = OutputEncoding::kUtf8;
    uint64_t cap = 0;  // bytes kept per stream
    uint64_t seen[2] = {};
    bool truncated = false;
    bool kill_on_cap = false;  // output_policy "kill": past the cap the job is stopped
    bool killed_for_output = false;
    std::string data[2];        // execute: raw output kept so far
    std::string carry[2];       // execute_stream: incomplete UTF-8 sequence between chunks
    uint64_t heartbeat_ns = 0;  // execute_stream "heartbeat_ms"; 0: none
    uint64_t started_ns = 0;
    uint64_t next_beat_ns = 0;  // a heartbeat is due then (moved on by every chunk)
    Done done;                  // run(): gets the output instead of an answer
    bool internal = false;      // run_internal(): no client; `done` waits for it
    bool shared = false;        // run_shared(): the reply is the caller's to answer
    std::string host;           // a remote job's host
  };

  void execute(rpc::ExecParams& p, Reply r, bool stream);
  // Queues the job and keeps it as pending, or answers `r` with why not.
  Pending* start(rpc::ExecParams& p, Reply& r, bool stream);
  Pending& track(uint32_t slot, Reply r, bool stream, const rpc::ExecParams& p);
  // execute_stream's "heartbeat_ms" (0: none) for `job`.
  void arm_heartbeat(Pending& job, uint64_t ms);
  bool wanted(const Pending& p) const { return p.internal || out_.wanted(p.reply); }
  bool service(Pending& p);  // true: answered, drop it
  void on_output(Pending& p, uint8_t stream, std::string_view bytes);
  void send_chunk(Pending& p, int stream, std::string_view bytes, bool final);
  void finish(Pending& p, shm::JobWord w);
  void cancel(Pending& p, const char* why);
  bool keeps_output(const Pending& p) const;
  bool over_budget() const;

  const shm::RoleConfig& o_;
  const shm::Segment& seg_;
  shm::JobTable jobs_;
  JobQueue& queue_;
  Connections& out_;
  const shm::Doorbell& bell_;
  std::unordered_map<uint32_t, Pending> pending_;  // by job slot
  uint64_t buffered_ = 0;                          // execute output held in Pending::data
  uint64_t draining_ = UINT64_MAX;  // over budget: the one execute job that may drain (job_id)
  bool held_back_ = false;          // service() skipped a job for the budget
  uint64_t next_beat_ns_ = 0;       // the earliest heartbeat due (0: none); may be early
  uint64_t budget_holds_ = 0;       // times it did, since this frontend started (health)
  // A text stream's chunks copied out of its output ring, so the ring is
  // freed before they are encoded (at most one ring's worth; reused). Bytes
  // are framed from the ring itself (send_chunk).
  struct Staged {
    uint8_t stream;
    size_t off, len;  // in staged_bytes_
  };
  std::vector<Staged> staged_;
  std::string staged_bytes_;
  FanOut fan_out_;
};

}  // namespace sp::frontend
