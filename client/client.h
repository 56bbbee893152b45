// The shell-pool CLI's connection to shell-poold: MessagePack-RPC on a Unix
// socket (output comes as bytes, exact), one request at a time (or a few,
// send_async), and the CLI's own exit codes. The CLI's code works on JSON
// objects: a request's strings that are not UTF-8 (bytes from a file or a
// terminal) go as bin, and an answer's bin values become strings holding
// those bytes. Failures end the process with a message on stderr (this is
// a command-line tool).
#pragma once

#include <boost/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"

namespace sp::cli {

namespace json = boost::json;

// Exit codes of the CLI itself (the command's own code otherwise).
inline constexpr int kRefused = 1;  // the daemon refused: a reload that failed, not allowed
inline constexpr int kUsage = 2;
inline constexpr int kNoDaemon = 69;      // EX_UNAVAILABLE
inline constexpr int kStillRunning = 75;  // EX_TEMPFAIL: `wait --timeout` ran out
inline constexpr int kProtocol = 76;      // EX_PROTOCOL
inline constexpr int kTimedOut = 124;     // as timeout(1)
inline constexpr int kLostOrCancelled = 125;
inline constexpr int kCannotRun = 127;  // as a shell for "not found"

[[noreturn]] void die(int code, const std::string& message);

class Client {
 public:
  // Connects, or ends the process (kNoDaemon).
  explicit Client(const std::string& path);
  void send(const std::string& method, json::object params);
  // The next response's result; an error response ends the process (exit
  // kCannotRun, or kUsage for invalid params), as does a closed connection.
  json::object next();
  // send + next.
  json::object call(const std::string& method, json::object params) {
    send(method, std::move(params));
    return next();
  }
  // As call, but an error answer is nullopt (and the error, as JSON, goes
  // to `error`) instead of the end: a file_stat of a path that may not be
  // there, a call whose failure needs cleaning up after.
  std::optional<json::object> try_call(const std::string& method, json::object params,
                                       std::string* error = nullptr);
  // As call, for a request that may be sent again (a read or a wait of a
  // detached job): when the connection is lost (the daemon's frontend
  // restarted), connects again and resends it, up to kMaxResends times in a row.
  json::object call_resending(const std::string& method, const json::object& params);

  static constexpr int kMaxResends = 10;

  // For a client that has several requests out at once (interactive.h):
  // sends a request under a new id (2, 3, ...; call() uses 1) and returns it.
  int64_t send_async(const std::string& method, json::object params);
  int fd() const { return fd_.get(); }
  // Reads once from the socket; false when the connection was lost.
  bool receive();
  // The next whole message received ({id, result} or {id, error}), if any;
  // a stream's chunk (a notification) comes as {id, result} of its call.
  std::optional<json::object> take_message();

 private:
  bool connect();  // errno says why not
  bool send_request(const std::string& method, json::object params, int64_t id = 1);
  std::optional<json::object> read_message();  // ours (id 1); nullopt: the connection was lost
  std::optional<json::object> read_answer();   // its result; an error ends the process

  std::string path_;
  UniqueFd fd_;
  std::string buf_;
  int64_t next_id_ = 2;
};

// The env object of NAME=value flags (--env); exits on one without '='.
json::object env_params(const std::vector<std::string>& env);
// Asks for `command` (non-empty) to be run as a program with arguments, no
// shell: sets the request's command, args and shell.
void add_program(json::object& p, const std::vector<std::string>& command);

// Writes all of `data` to fd (our stdout/stderr); exits if it is gone.
void write_all(int fd, std::string_view data);
// Output from the daemon (bin: the bytes, as a string).
std::string bytes_of(const json::value& data);
// The exit code that stands for a job's result (exit, exit record or status):
// its exit code, 128+N for signal N, or the CLI's codes for the end states.
int exit_code_of(const json::object& result);

}  // namespace sp::cli
