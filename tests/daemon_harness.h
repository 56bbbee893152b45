// Harness for the integration and crash tests: starts the real shell-poold
// (the SHELL_POOLD binary) on a private socket in a fresh temp dir, talks
// JSON-RPC to it, and inspects its processes through /proc.
//
// Every wait is bounded, so a daemon that hangs fails a test instead of
// hanging it. TestDaemon and the Catch2-asserting helpers (Client::call,
// TestDaemon::stop) are for the test's main thread only; Client's try_*/raw
// I/O methods and the /proc helpers assert nothing and may be used from other
// threads (one Client per thread).
#pragma once

#include <sys/types.h>

#include <boost/json.hpp>
#include <chrono>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/unique_fd.h"

namespace sp::test {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;

// Seconds since `start`, for "finishes within N s" bounds.
double seconds_since(Clock::time_point start);

// Calls `pred` every `poll_s` until it returns true or `timeout_s` passed;
// returns its last value.
bool wait_until(const std::function<bool()>& pred, double timeout_s, double poll_s = 0.01);

// A fresh directory /tmp/sp-test-XXXXXX, removed with its contents on
// destruction. Move-only.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// /proc helpers. All return "nothing" for processes that are gone; a zombie
// counts as gone (its cmdline is empty).
std::vector<pid_t> children_of(pid_t pid);
std::string cmdline_of(pid_t pid);  // argv joined with spaces
pid_t parent_of(pid_t pid);         // 0 if gone
// Like `pgrep -f needle`: live processes whose cmdline contains `needle`,
// not counting this test process.
std::vector<pid_t> pids_matching(std::string_view needle);

bool file_exists(const std::string& path);  // lstat succeeds
// How often `what` occurs in `text` (lines of a log, say).
int count_of(const std::string& text, const std::string& what);
std::string read_file(const std::string& path);

// Gates: a job held at a point until the test lets it go on, where a `sleep`
// in the command would only hope the test got there in time. until_file is a
// shell line that waits (polling every `poll_s`, at most `timeout_s`) until
// `path` exists, and exits 124 if it never does; open_gate creates `path`
// (and fails the test if it cannot). Each poll forks a `sleep`: many jobs at
// a gate at once want a longer `poll_s`.
std::string until_file(const std::string& path, double timeout_s = 30, double poll_s = 0.01);
void open_gate(const std::string& path);

// The kernel function `pid` sleeps in (/proc/<pid>/wchan); "" if gone.
std::string wchan_of(pid_t pid);
// Whether `pid` is held by a pipe nobody drains: it sleeps writing to a pipe
// and wrote nothing for `quiet_s` (sampled, so it takes that long). A
// momentarily full pipe that its reader is still emptying is not held.
bool held_on_pipe(pid_t pid, double quiet_s = 0.2);

// The shm segment name of the daemon on `socket_path`, computed as
// shm::Segment::name_for_socket does (FNV-1a 64 of the path).
std::string shm_name_for_socket(const std::string& socket_path);

// Fields have initializers so designated initializers may leave any out.
struct DaemonOptions {
  std::vector<std::string> flags = {};  // extra shell-poold flags
  std::vector<std::string> env = {};    // extra "NAME=value" entries for its environment
  std::string socket = {};              // default: <temp dir>/sock
  bool wait_ready = true;               // wait (10 s) until the socket accepts a connection
  // With wait_ready: also wait until the frontend and every worker sleep in
  // epoll_wait, so tests that look for the role processes find them all.
  bool wait_workers = true;
  std::string binary = SHELL_POOLD;  // or SHELL_POOLD_CRASHPOINTS
  // A command that runs the daemon (its argv follows), such as
  // systemd-socket-activate; it must exec it, so that pid() is the daemon's.
  std::vector<std::string> wrapper = {};
};

// One shell-poold process started by fork+exec, with stderr (and stdout) in
// <dir>/daemon.log. The destructor stops it if it still runs (SIGTERM, then
// SIGKILL) and removes the temp dir.
class TestDaemon {
 public:
  explicit TestDaemon(std::vector<std::string> flags = {});
  explicit TestDaemon(DaemonOptions options);
  ~TestDaemon();
  TestDaemon(const TestDaemon&) = delete;
  TestDaemon& operator=(const TestDaemon&) = delete;

  bool ready() const { return ready_; }  // it started as DaemonOptions asked for
  // "pid N, running" or "pid N, exited with code N" (as last seen).
  std::string state() const;
  pid_t pid() const { return pid_; }
  const std::string& socket() const { return socket_; }
  const std::string& dir() const { return dir_.path(); }
  std::string shm_name() const { return shm_name_for_socket(socket_); }
  std::string shm_path() const { return "/dev/shm/" + shm_name(); }
  // Its spool directory (detached jobs' output), as the supervisor names it.
  std::string spool_dir() const {
    return socket_.substr(0, socket_.rfind('/')) + "/" + shm_name() + ".spool";
  }
  std::string log() const;

  // Not reaped yet (polls waitpid).
  bool running();
  // Waits for the daemon to exit by itself; its exit code (128+N for signal
  // N), or nullopt if it still runs after `timeout_s`.
  std::optional<int> wait_exit(double timeout_s);
  // SIGTERM and a bounded wait; if it does not exit in `timeout_s`: SIGKILL
  // and a test failure. Returns the exit code as wait_exit does.
  int stop(double timeout_s = 20);

  std::vector<pid_t> children() const { return children_of(pid_); }
  // The frontend and all its workers are up and sleep in epoll_wait.
  bool idle() const;
  // Its children by role (argv[1] "worker" / "frontend"); 0 if none.
  std::vector<pid_t> worker_pids() const;  // the local workers
  pid_t remote_worker_pid() const;         // `worker --ssh`; 0 if none
  pid_t worker_pid(unsigned index) const;
  pid_t frontend_pid() const;

 private:
  void start(const DaemonOptions& options);
  void kill_and_reap();

  TempDir dir_;
  std::string socket_;
  pid_t pid_ = -1;
  bool reaped_ = true;
  int exit_code_ = -1;
  bool ready_ = false;
  size_t workers_ = 0;  // how many it was told to start (--workers, else the CPU count)
};

// A JSON-RPC client on one connection. Reads are bounded by a deadline.
class Client {
 public:
  // One connection attempt; see connected().
  explicit Client(const std::string& socket_path);
  // Retries connecting every `poll_s` until it succeeds or `timeout_s` passed.
  static Client connect_retry(const std::string& socket_path, double timeout_s,
                              double poll_s = 0.01);

  bool connected() const { return fd_.valid(); }
  int connect_errno() const { return connect_errno_; }
  bool eof() const { return eof_; }  // the daemon closed the connection
  // Bytes sent that the daemon has not read from the socket yet (SIOCOUTQ:
  // a Unix socket counts what its peer has not consumed); -1 if unknown. At
  // 0 the daemon has read every line sent so far, and handled it unless the
  // connection is past its bounds (docs/protocol.md: --max-inflight).
  int unread_by_peer() const;
  void close() { fd_.reset(); }
  void shutdown_write();  // half-close: the daemon sees EOF on its read side

  // Sends `line` plus '\n' (whole, bounded by `timeout_s`).
  bool send_line(std::string_view line, double timeout_s = 10);
  bool send_raw(std::string_view bytes, double timeout_s = 10);
  // The next line without its '\n'; nullopt on timeout or EOF (see eof()).
  std::optional<std::string> read_line(double timeout_s = 30);
  // The next MessagePack object (a MessagePack-RPC frame), whole; nullopt
  // on timeout, EOF or bytes that are not MessagePack.
  std::optional<std::string> read_frame(double timeout_s = 30);
  // The next line parsed as JSON; nullopt on timeout, EOF or a parse error
  // (then last_line() holds the text).
  std::optional<json::value> read_json(double timeout_s = 30);
  const std::string& last_line() const { return last_line_; }

  // A request line {"jsonrpc":"2.0","id":id,"method":..,"params":..}.
  static std::string request(const json::value& id, std::string_view method,
                             const json::value& params);
  // Sends a request with a fresh integer id and returns the whole response
  // object with that id; nullopt on timeout/EOF or an answer with another id.
  std::optional<json::object> try_call(std::string_view method, const json::value& params,
                                       double timeout_s = 30);
  // As try_call, but a missing answer fails the test.
  json::object call(std::string_view method, const json::value& params, double timeout_s = 30);
  int64_t next_id() { return ++last_id_; }

 private:
  Client() = default;
  // Reads until `take` finds a whole unit in buf_ (its length), or timeout/EOF.
  template <typename Take>
  std::optional<std::string> read_until(double timeout_s, Take take);
  UniqueFd fd_;
  int connect_errno_ = 0;
  bool eof_ = false;
  std::string buf_;
  std::string last_line_;
  int64_t last_id_ = 0;
};

// Prints the daemon's log to stderr when the scope is left by an exception
// (a failed REQUIRE), so a failure shows what the daemon said.
class LogOnFailure {
 public:
  explicit LogOnFailure(const TestDaemon& d) : d_(d) {}
  ~LogOnFailure();
  LogOnFailure(const LogOnFailure&) = delete;
  LogOnFailure& operator=(const LogOnFailure&) = delete;

 private:
  const TestDaemon& d_;
  int exceptions_ = std::uncaught_exceptions();
};

// Declares TestDaemon `name` from the remaining arguments and requires that
// it starts.
#define START_DAEMON(name, ...)               \
  ::sp::test::TestDaemon name{__VA_ARGS__};   \
  ::sp::test::LogOnFailure name##_log_{name}; \
  INFO("shell-poold: " << name.state());      \
  REQUIRE(name.ready())

// The "result" of a response; fails the test if it is an error.
json::object result_of(const json::object& response);
// The "error" object of a response; fails the test if it is a result.
json::object error_of(const json::object& response);
// Field `key` of `o`, which must be a string / an integer (else the test fails).
std::string str(const json::object& o, std::string_view key);
int64_t num(const json::object& o, std::string_view key);
// execute params for a shell line.
inline json::object sh(std::string_view command) {
  return {{"command", command}};
}
// Runs `execute` with `params` on `c` and returns its result.
json::object execute(Client& c, const json::object& params, double timeout_s = 30);
// The `health` result as seen from `c`.
json::object health(Client& c);
// The frontend and the workers: the processes a client's input reaches.
std::vector<pid_t> role_pids(const TestDaemon& d);
// Nothing crashed or was restarted: the roles are still the processes `roles`.
void check_same_roles(TestDaemon& d, Client& c, const std::vector<pid_t>& roles);

// Connects as `uid` (from a child process; needs root) and sends one
// request line; returns the answer line, or "" if the daemon closed the
// connection without one.
std::string answer_as_uid(const std::string& socket, uid_t uid, const std::string& request);

// Kills worker 0 `times` times, each incarnation once it reported ready
// (health), then waits for the next one to start. Fails the test if one
// does not come.
void kill_ready_worker(TestDaemon& d, Client& c, int times);
// SIGKILLs the frontend, waits (bounded by `timeout_s`) until the supervisor
// started the next one, and returns a client connected to it. Fails the
// test if no frontend comes.
Client kill_frontend(TestDaemon& d, double timeout_s = 20);

// Checks after the daemon exited: its socket file, spool directory and
// /dev/shm entry are gone, and none of `former_children` nor any process carrying its shm name
// in its argv (its roles) is alive.
void check_left_nothing(const TestDaemon& d, const std::vector<pid_t>& former_children);
// stop() expecting exit code 0, then check_left_nothing.
void stop_cleanly(TestDaemon& d);

// What one execute_stream answered.
struct Streamed {
  std::string out, err;  // the chunks' data, concatenated per stream
  json::object exit;     // the final {"type":"exit",...} record
  size_t chunks = 0;
  bool ok = false;      // ended with an exit record, every line with the request's id
  std::string problem;  // why not ok
};
// Reads the answers to execute_stream request `id` on `c` up to its exit
// record. Asserts nothing.
Streamed read_stream(Client& c, const json::value& id, double timeout_s);

// Standard base64 (padding and unknown characters are skipped).
std::string base64_decode(std::string_view in);
std::string base64(std::string_view bytes);
// `n` bytes from a generator seeded with `seed` (the same each run).
std::string random_bytes(size_t n, unsigned seed);

struct CliRun {
  bool finished = false;  // false: killed after the timeout
  int exit_code = -1;
  std::string out, err;
};
// Runs the shell-pool CLI (SHELL_POOL_CLI) with `args`; stdout and stderr go
// to files in `dir`, stdin is `stdin_data` (from a file) or /dev/null.
// Asserts nothing: may run on other threads.
CliRun run_cli(const std::vector<std::string>& args, const std::string& dir, double timeout_s = 30,
               const std::optional<std::string>& stdin_data = std::nullopt);

}  // namespace sp::test
