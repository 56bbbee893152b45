// The frontend's event loop state (internal to frontend/). One instance per
// frontend process, used from its single thread only. Split by concern:
// server.cpp (loop, connections, framing, answers), methods.cpp (method
// dispatch and sessions), jobs.cpp (submission into shm and servicing
// output/results).
#pragma once

#include <sys/types.h>
#include <boost/json/value.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include "common/unique_fd.h"
#include "frontend/env.h"
#include "frontend/frontend.h"
#include "frontend/protocol.h"
#include "frontend/records.h"
#include "shm/doorbell.h"
#include "shm/segment.h"
#include "shm/session_table.h"
#include "shm/spool.h"

namespace sp::frontend {

// Bounds per connection (documented in docs/protocol.md).
inline constexpr size_t kMaxBacklogBytes = 4u << 20;  // unsent answers: stop reading requests
                                                      // and draining its streams beyond this

struct Conn {
  uint64_t id = 0;
  UniqueFd fd;
  // Bytes read and not yet handled, from in_off: whole request lines that
  // wait while the connection is at its bounds (see takes_requests), then an
  // incomplete one. At most one read (64 KiB) plus one line.
  std::string in;
  size_t in_off = 0;
  bool skipping = false;  // discarding the rest of an over-long line
  std::string out;        // answers not yet written, from out_off
  size_t out_off = 0;
  bool read_closed = false;    // peer shut its write side: answer what is in flight, then close
  uint32_t events = 0;         // epoll interest currently registered
  std::vector<uint32_t> jobs;  // slots of its unfinished jobs
  uint32_t waits = 0;          // its parked job_wait / job_output calls
  size_t backlog() const { return out.size() - out_off; }
  size_t unfinished() const { return jobs.size() + waits; }  // requests not answered yet
  bool lines_waiting() const { return in_off < in.size(); }
  // The client shut its side and has everything: time to close.
  bool done() const { return read_closed && !unfinished() && !backlog() && !lines_waiting(); }
};

// Collects the answers of one batch line; sent as one array when all are in.
struct Batch {
  uint64_t conn_id = 0;
  std::vector<std::string> answers;
  uint64_t held_bytes = 0;  // of answers, counted in Frontend::unsent_ until sent
  size_t remaining = 0;
};

// Where an answer goes.
struct Reply {
  uint64_t conn_id = 0;  // 0: the client is gone
  boost::json::value id;
  bool silent = false;  // a notification
  std::shared_ptr<Batch> batch;
};

// A batch is answered whole, so its answers are held to kMaxBacklogBytes:
// a member answered after they passed it gets this -32002 instead.
inline bool batch_full(const Reply& r) {
  return r.batch && r.batch->held_bytes >= kMaxBacklogBytes;
}
rpc::RpcError batch_full_error();

// A job this frontend submitted and has not finished answering.
struct Pending {
  uint32_t slot = 0;
  uint64_t job_id = 0;
  Reply reply;
  bool stream = false;
  bool base64 = false;
  uint64_t cap = 0;  // bytes kept per stream
  uint64_t seen[2] = {};
  bool truncated = false;
  bool kill_on_cap = false;  // output_policy "kill": past the cap the job is stopped
  bool killed_for_output = false;
  std::string data[2];   // execute: raw output kept so far
  std::string carry[2];  // execute_stream: incomplete UTF-8 sequence between chunks
};

// How results name a job's state ("queued", "exited", ...) and a signal
// ("SIGTERM"; null for none) on the wire (detached.cpp).
const char* state_name(shm::JobState s);
const char* plan_kind_name(uint32_t kind);  // shm::PlanKind: "chain", "parallel", "dag"
boost::json::value signal_name(int sig);

inline constexpr uint64_t kRetryAfterMs = 50;  // the retry hint of a queue-full error

// A job_wait, or a job_output with "wait", parked until its job ends (or
// has output) or its deadline passes.
struct Waiter {
  Reply reply;
  uint32_t record = 0;
  uint64_t seq = 0;          // the job it waits for (records are reused)
  uint64_t deadline_ns = 0;  // 0: none
  uint64_t seen_end = 0;     // job_output: the spool's end when last looked at
  bool owner = false;        // the execute_* call of an attached plan (forgets it when answered)
  std::variant<rpc::JobWaitParams, rpc::JobOutputParams> params;
};

class Frontend {
 public:
  Frontend(const Options& o, shm::Segment seg);
  Status init();
  int run();

 private:
  // server.cpp
  void accept_all();
  void on_conn_event(uint64_t id, uint32_t events);
  void read_from(Conn& c);
  void take_bytes(Conn& c, std::string_view data);
  bool takes_requests(const Conn& c) const;  // below its backlog and in-flight bounds
  void handle_lines(Conn& c);                // the whole lines in c.in, while it takes requests
  void handle_line(Conn& c, std::string_view line);
  void line_too_long(Conn& c);  // the -32002 for a line over --max-line
  void send(uint64_t conn_id, std::string text);
  void answer(Reply& r, std::string text);
  void flush(Conn& c);
  void update_events(Conn& c);
  void request_finished(Conn& c);  // after c.jobs or c.waits shrank
  void close_conn(uint64_t id);
  Conn* conn(uint64_t id);
  bool allowed(uid_t uid) const;
  void check_draining();
  // methods.cpp
  void handle_call(Conn& c, rpc::Call& call, Reply r);
  rpc::RpcError inflight_error() const;  // -32002: the connection is at --max-inflight
  boost::json::value health();
  std::optional<rpc::RpcError> session_method(const std::string& method,
                                              const boost::json::value& params,
                                              boost::json::value& result);
  // jobs.cpp
  // Puts a job into a slot and on the ring: the slot, or why not. `record`:
  // index + 1 of a detached job's record (0: attached); `seq`: its job
  // number, already taken (0: take one).
  // `waiting`: a plan step, left waiting for its dependencies (not queued).
  std::variant<uint32_t, rpc::RpcError> enqueue(rpc::ExecParams& p, uint32_t record, uint64_t seq,
                                                bool waiting = false);
  std::optional<rpc::RpcError> submit(Conn& c, rpc::ExecParams& p, Reply r, bool stream);
  void service_all();
  bool service(Pending& p);
  void on_output(Pending& p, uint8_t stream, std::string_view bytes);
  void finish(Pending& p, shm::JobWord w);
  void send_chunk(Pending& p, int stream, std::string_view bytes, bool final);
  void cancel(Pending& p, const char* why);
  bool keeps_output(const Pending& p) const;
  bool over_budget() const;           // buffered_ + unsent_ against o_.output_budget
  bool backlogged(const Pending& p);  // its client's unsent answers are at kMaxBacklogBytes
  void ring_owner(shm::JobWord w);
  // detached.cpp
  bool job_method(Conn& c, rpc::Call& call, Reply& r);  // false: not a job_* method
  std::optional<rpc::RpcError> job_submit(const boost::json::value& params,
                                          const std::optional<std::string>& duplicate_node,
                                          boost::json::value& result);
  std::optional<uint32_t> lookup(const std::string& id, rpc::RpcError& err) const;
  const char* job_state(uint32_t rec) const;  // as job_status says it
  boost::json::object job_status(uint32_t rec) const;
  boost::json::object job_result(uint32_t rec, const rpc::JobWaitParams& p);
  // The answer to job_output; `ready` false: nothing to return yet (park it).
  std::variant<boost::json::object, rpc::RpcError> job_output(uint32_t rec,
                                                              const rpc::JobOutputParams& p,
                                                              bool& ready);
  std::optional<rpc::RpcError> job_cancel(uint32_t rec, const rpc::JobSignalParams& p,
                                          boost::json::value& result);
  std::optional<rpc::RpcError> job_signal(uint32_t rec, int sig);
  // `seen_end`: for job_output, the spool's end read before the read that
  // found nothing new (a later write then wakes the waiter).
  void park(Conn& c, Reply& r, uint32_t rec, std::optional<double> wait_s,
            std::variant<rpc::JobWaitParams, rpc::JobOutputParams> params, bool owner = false,
            uint64_t seen_end = 0);
  void unpark(const Waiter& w);
  void fill_record(shm::JobRecord& r, const rpc::ExecParams& p) const;
  void service_detached();
  void expire();
  bool try_answer(Waiter& w, bool timed_out);  // true: answered (drop it)
  void drop_waiters(uint64_t conn_id);
  int next_wait_ms(int tick_ms) const;
  // plans.cpp
  std::variant<uint32_t, rpc::RpcError> submit_plan(rpc::PlanParams& p, const std::string& id,
                                                    bool attached);
  bool advance_plan(uint32_t plan);  // true: the plan has ended (settled)
  bool promote(uint32_t slot, shm::JobWord waiting);
  bool step_succeeded(uint32_t rec) const;
  boost::json::object plan_result(uint32_t plan, const rpc::JobWaitParams& p);
  boost::json::array plan_steps(uint32_t plan) const;
  void cancel_plan(uint32_t plan, const rpc::JobSignalParams& how);
  void service_plans();

  Options o_;
  shm::Segment seg_;
  shm::JobTable jobs_;
  shm::SubmitRing ring_;
  shm::SessionTable sessions_;
  shm::Doorbell bell_, submit_;
  std::vector<shm::Doorbell> worker_bells_;
  uint32_t incarnation_ = 0;
  EnvPairs base_env_;
  UniqueFd epoll_, signal_fd_, listen_;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  std::unordered_map<uint32_t, Pending> pending_;
  std::vector<uint64_t> dirty_;  // connections with answers to write
  uint64_t next_conn_id_ = 16;   // ids below are fixed epoll tags
  uint32_t alloc_cursor_ = 0;
  uint64_t buffered_ = 0;           // execute output held in Pending::data
  uint64_t unsent_ = 0;             // answers not yet written, all connections
  uint64_t draining_ = UINT64_MAX;  // over budget: the one execute job that may drain (job_id)
  bool held_back_ = false;          // service() skipped a job for the budget
  uint64_t budget_holds_ = 0;       // times it did, since this frontend started (health)
  bool stopping_ = false;
  UniqueFd spool_dir_;
  JobRecords records_;
  // Detached jobs and plans not yet settled, by record index and seq (a
  // record forgotten meanwhile may be reused by another job: the seq tells).
  std::vector<std::pair<uint32_t, uint64_t>> unsettled_;
  std::vector<std::pair<uint32_t, uint64_t>> open_plans_;
  std::vector<Waiter> waiters_;    // bounded: --max-inflight per connection
  uint64_t next_deadline_ns_ = 0;  // earliest deadline of a waiter (0: none); may be early
  std::unordered_set<uint32_t> owned_plans_;  // attached plans whose execute_* call waits
  // Where reading each detached job's spool stopped, so reading on does not
  // rescan it; one entry per job read, dropped when the job is forgotten.
  std::unordered_map<uint32_t, std::pair<uint64_t, shm::SpoolPos>> read_pos_;
  std::unordered_set<uid_t> refused_uids_;  // logged once each (bounded)
  bool accept_paused_ = false;              // out of fds: the listening fd is out of epoll
  // Reused per submission to avoid per-job allocations.
  std::vector<std::string> env_strings_;
  std::vector<std::string_view> env_views_, argv_views_;
};

}  // namespace sp::frontend
