// Spawning a job's process, and the move-only handle that owns it.
//
// spawn() starts the command with vfork + execve in a new session (so its pid
// is its process group id), stdin from /dev/null or from a fresh pipe, and
// stdout/stderr into fresh pipes, and returns a Process. Signals are blocked around the vfork; the
// child sets every disposition the caller changed back to default (the
// caller says which: SignalDispositions), unblocks everything and closes
// every fd but 0, 1 and 2 before exec, whatever the caller had.
//
// A Process owns the child (pid, pidfd) and the read ends of its pipes. Its
// methods do all the signalling; once it has reaped the leader it never
// signals the group again (the pgid may have been reused). Destroying one
// that still owns a process kills the group and reaps the leader, so none is
// left behind. Single-threaded (the worker's loop, or a test); not for use
// between vfork and exec.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <span>
#include <string>

#include "common/result.h"
#include "common/unique_fd.h"
#include "shm/codec.h"

namespace sp::worker {

// A child's output pipe; also an index into per-stream arrays.
enum Stream : uint8_t { kStdout = 0, kStderr = 1 };
inline constexpr Stream kStreams[] = {kStdout, kStderr};

// The signals whose disposition is not the default in this process: caught
// or ignored, which a command must not inherit (an ignored signal stays
// ignored across exec; a handler of ours must not run in the vfork child).
// A worker takes them once, when it has set its own, for all its spawns:
// asking for all 64 in every child cost 64 system calls per job with the
// worker suspended in vfork. Whoever changes a disposition later takes them
// again.
class SignalDispositions {
 public:
  static SignalDispositions current();
  std::span<const int> changed() const { return {signals_, size_t(count_)}; }

 private:
  int count_ = 0;
  int signals_[NSIG] = {};
};

class Process {
 public:
  struct Exit {
    int code = -1;   // exit status, when it exited
    int signal = 0;  // the signal that killed it, when one did
  };

  Process() = default;  // owns nothing
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  // Its pid, which is also its process group id; -1 once reaped (or none).
  pid_t pid() const { return pid_; }
  bool owned() const { return pid_ > 0; }
  // Readable when the leader exits; closed by kill_and_reap().
  int pidfd() const { return pidfd_.get(); }

  // The read end of a pipe (non-blocking); -1 once closed.
  int pipe(Stream s) const { return pipe_[s].get(); }
  bool pipe_open(Stream s) const { return pipe_[s].valid(); }
  // Bytes read into `buf`, 0 at EOF, or -errno (-EAGAIN: nothing now).
  ssize_t read(Stream s, std::span<char> buf);
  // Closing drops the pipe from any epoll set: after exec nobody else holds it.
  void close_pipe(Stream s) { pipe_[s].reset(); }

  // The write end of its stdin pipe (non-blocking), when it was given one;
  // -1 otherwise or once closed (the command then reads EOF).
  int stdin_fd() const { return stdin_.get(); }
  bool stdin_open() const { return stdin_.valid(); }
  // Bytes written, or -errno (-EAGAIN: the pipe is full; -EPIPE: nobody reads).
  ssize_t write_stdin(std::span<const unsigned char> bytes);
  void close_stdin() { stdin_.reset(); }

  // Sets the terminal's size (the foreground process group gets SIGWINCH).
  void resize(uint16_t rows, uint16_t cols);
  // Sends `sig` to the terminal's foreground process group (a PTY job), or
  // to the whole group when there is no terminal or no foreground group.
  // False, sending nothing, once the leader has been reaped.
  bool signal_foreground(int sig);

  // Records the pgid in `word` (shm, for a repair after our death), and
  // clears it again before the leader is reaped: once reaped, the pgid may be
  // reused, and such a repair must not kill(-pgid) a stranger. `word` must
  // outlive the Process.
  void publish_pgid(std::atomic<int32_t>& word);

  // Sends `sig` to the whole process group. False, sending nothing, once the
  // leader has been reaped.
  bool signal_group(int sig);

  // Ends it: SIGKILLs what is left of the group while the leader is still an
  // unreaped zombie (so its pgid cannot have been reused), clears the
  // published pgid, reaps the leader (blocking until it is dead) and closes
  // the pidfd. The pipes stay open: escaped processes may still write. Call
  // it when the pidfd is readable, or to stop it at once.
  Exit kill_and_reap();

  // Whether the leader has ended (a zombie, not yet reaped), without waiting
  // for its pidfd to be seen.
  bool ended() const;

 private:
  friend Result<Process> spawn(const shm::DecodedSpec& spec, const std::string& program,
                               int devnull, bool stdin_pipe, const char* const* cgroup_procs,
                               const SignalDispositions& dispositions);
  friend Result<Process> spawn_on_pty(const shm::DecodedSpec& spec, const std::string& program,
                                      const char* const* cgroup_procs,
                                      const SignalDispositions& dispositions);
  explicit Process(pid_t pid) : pid_(pid) {}

  pid_t pid_ = -1;
  UniqueFd pidfd_;
  UniqueFd pipe_[2];
  UniqueFd stdin_;
  UniqueFd terminal_;
  std::atomic<int32_t>* pgid_word_ = nullptr;
};

// Finds `name` in the spec's PATH (or a default PATH) unless it has a slash.
// ENOENT if it is nowhere; EACCES if found but not executable.
Result<std::string> resolve_program(const shm::DecodedSpec& spec);

// Starts the command, in the cgroups whose cgroup.procs paths `cgroup_procs`
// lists (null-terminated; null: none), its stdin a pipe (Process::stdin_fd)
// when `stdin_pipe`, else `devnull` (borrowed for the call). A spec with
// pty_rows runs on a new terminal instead: stdin, stdout and stderr are its
// slave, pipe(kStdout) reads its master (kStderr stays closed) and
// stdin_fd() writes it. `dispositions` are this process's (above). On failure
// nothing is left running and the Error says what failed (chdir, exec,
// pipe...) with the child's errno.
Result<Process> spawn(const shm::DecodedSpec& spec, const std::string& program, int devnull,
                      bool stdin_pipe, const char* const* cgroup_procs,
                      const SignalDispositions& dispositions);
Result<Process> spawn_on_pty(const shm::DecodedSpec& spec, const std::string& program,
                             const char* const* cgroup_procs,
                             const SignalDispositions& dispositions);

}  // namespace sp::worker
