// RemoteJob: one job the remote worker runs on a host, from its claimed slot
// to its published end; the per-job state machine.
//
//   waiting   claimed, queued in its host's pool for a channel
//   opening   the pool gave it a connection: the channel is being opened
//   starting  Running in shm; the command is being started (exec)
//   running   output into its sink, stdin from its input ring
//   closing   the host sent EOF: waiting for the channel's close and exit status
//
// The command runs as `echo $$; cd -- DIR || exit 127; exec [env -- K=V...] ARGV`, so the
// first line of its stdout is its process group on the host (sshd starts
// each session's command in a new session): timeouts and cancels kill that
// group over another channel (HostPool's kills), since libssh2 1.10 has no
// channel signals and closing a channel does not stop a command.
//
// Driven by its host's pool (pool.h) from the remote worker's single thread;
// holds the pool's Env, which outlives it; owns its channel until it ends.
#pragma once

#include <libssh2.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/redactor.h"
#include "remote/connection.h"
#include "remote/failure.h"
#include "remote/resolver.h"
#include "shm/codec.h"
#include "shm/job_table.h"
#include "shm/segment.h"
#include "worker/sinks.h"

namespace sp::remote {

// What the remote worker's jobs share: owned by its loop.
struct Env {
  const shm::Segment& seg;
  shm::JobTable jobs;
  shm::WorkerSlot& rec;
  int spool_dir = -1;
  uint32_t default_grace_ms = 0;
  std::span<char> scratch;       // channels are read into it
  Resolver* resolver = nullptr;  // host names are looked up there
  bool notify_frontend = false;
  bool shutting_down = false;
};

class RemoteJob {
 public:
  enum class Step { kWaiting, kOpening, kStarting, kRunning, kClosing, kDone };

  RemoteJob(Env& env, uint32_t slot, const shm::DecodedSpec& spec);
  ~RemoteJob();
  RemoteJob(const RemoteJob&) = delete;
  RemoteJob& operator=(const RemoteJob&) = delete;

  // The pool gives it `conn` (ready, with room for a channel).
  void assign(Connection& conn);
  // Moves it on after its connection's events, a bell or a timer.
  void pump(uint64_t now);
  // Its connection died: a job not started goes back to waiting (true); a
  // started one ends lost with `why`, and its group is to be killed
  // (take_kill) over another connection: nothing reads it any more.
  bool connection_died(const Failure& why);
  // Ends a job that never started: failed with `why` (cancelled if asked).
  void fail_unstarted(const Failure& why);
  // Cancels and signals the frontend asked for; the timeout and the grace.
  void on_bell();
  void on_timer(uint64_t now);
  void shutdown();  // the worker stops: killed, ends cancelled
  // Its host was removed (host_remove with force): a job not started ends
  // failed with `why`; a running one is killed and ends cancelled with it.
  void remove_host(const Failure& why);

  // The next signal to send to its process group on the host (0: none now):
  // those asked for before the group was known wait for it, in order.
  int take_kill();
  // The pool sent `sig` to its group: the wait for the channel after SIGKILL
  // counts from here.
  void kill_sent(int sig, uint64_t now);
  int32_t remote_pgid() const { return pgid_; }
  uint64_t next_deadline() const;
  Step step() const { return step_; }
  bool done() const { return step_ == Step::kDone; }
  Connection* connection() const { return conn_; }
  // The channel open failed with the server's refusal (MaxSessions): the
  // pool learns a lower cap and puts it back.
  bool refused() const { return refused_; }
  // Its channel opened and the command is (or was) on its way: what the
  // host's jobs_started counts. Never false again once true.
  bool started() const { return started_; }
  void requeue();         // back to waiting, or its end if it was cancelled meanwhile
  uint32_t attempts = 0;  // connections that failed before it got one

 private:
  void open_channel();
  void start_command(uint64_t now);
  void read_stream(int s);
  bool flush_pending(int s);
  // Output read from stream `s`, redacted on its way to pending_[s].
  void append(int s, std::string_view bytes);
  // The end of both streams: what the redactors held goes out (once).
  void finish_redaction();
  void take(int s, size_t n);
  void feed_stdin();
  void wait_closed();
  void finish(shm::JobState state, int code, int sig, const std::string& why,
              const Failure& f = {});
  void stop(int sig, uint64_t grace_ns);
  // A libssh2 call on its channel failed with `rc`: the channel's own error
  // ends the job lost; any other ends the connection, and the pool ends the
  // job with it.
  void broke(int rc, const std::string& what);
  void stalled();
  void send(int sig);
  void drop_channel();

  Env* env_;
  uint32_t slot_;
  shm::JobWord word_;
  std::string command_;  // the remote command line
  uint64_t timeout_ms_ = 0;
  uint64_t grace_ns_ = 0;
  bool has_stdin_ = false;
  Step step_ = Step::kWaiting;
  Connection* conn_ = nullptr;
  LIBSSH2_CHANNEL* channel_ = nullptr;
  std::unique_ptr<worker::OutputSink> sink_;
  std::string pending_[2];                  // read (and redacted) but not yet in the sink
  std::unique_ptr<Redactor> redactors_[2];  // per stream, when the job has secrets
  bool redaction_done_ = false;
  bool ended_ = false;  // the channel closed: the command's end is known
  int exit_code_ = -1;
  int exit_signal_ = 0;
  bool paused_[2] = {};
  bool eof_sent_ = false;
  bool refused_ = false;
  bool started_ = false;
  std::string head_;          // stdout before the pgid line ended
  int32_t pgid_ = 0;          // on the host; 0: not known yet
  std::vector<int> signals_;  // to send to its group, once it is known
  bool cancelled_ = false, timed_out_ = false, output_killed_ = false;
  Failure removed_;  // why it was cancelled, when its host was removed
  uint64_t deadline_ns_ = 0, kill_at_ns_ = 0, give_up_ns_ = 0;
  uint64_t step_by_ns_ = 0;  // the host's answer to a channel step is due (0: none due)
};

}  // namespace sp::remote
