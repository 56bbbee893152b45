// The frontend's JSON-RPC 2.0 protocol layer: turns one request line into
// calls to run (or errors to answer), validates the params of the built-in
// methods, and serializes responses. Pure functions without I/O; no exception
// escapes (failures are RpcError values). Thread-compatible: no shared state.
// Boost.JSON is confined to this layer and its callers in frontend/.
//
// Every *_text function returns one complete JSON text without the trailing
// '\n'. Values are serialized by append_value below, never by
// boost::json::serialize, which writes "1.5E0" for doubles and the invalid
// token "Infinity" for 1e400.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <boost/json/value.hpp>

#include "common/env_pairs.h"
#include "shm/codec.h"

namespace sp::rpc {

// Error codes on the wire. The server-defined ones (-32000..-32099) are the
// table clients rely on; keep docs in step when adding one.
enum class Code : int {
  ParseError = -32700,
  InvalidRequest = -32600,
  MethodNotFound = -32601,
  InvalidParams = -32602,
  Internal = -32603,
  QueueFull = -32000,      // retryable: data {"retry_after_ms": N}
  NotFound = -32001,       // unknown session_id / job_id
  LimitExceeded = -32002,  // request line too long, too many sessions, spec too large...
  ShuttingDown = -32003,
  SpawnFailed = -32004,  // reserved; spawn failures are normally reported in the result
  WrongState = -32005,   // the job's state does not allow it: data {"state": ...}
};

struct RpcError {
  Code code;
  std::string message;
  boost::json::value data = nullptr;  // serialized as "data" unless null
};

// Builds {code: QueueFull, data: {"retry_after_ms": retry_after_ms}}.
RpcError queue_full_error(uint64_t retry_after_ms, std::string message = "queue full, retry later");

// Largest nesting of arrays/objects accepted in a request line; deeper input
// is a parse error (bounded recursion, no stack overflow).
inline constexpr size_t kMaxJsonDepth = 64;

// One element of a line: a request to run, or an error to answer.
struct Call {
  // The "id" member is absent and the request is valid: never answered, not
  // even with an error. Always false when `error` is set (an invalid request
  // is answered with id null even if it had no id).
  bool notification = false;
  boost::json::value id;          // echoed back; null when absent or invalid
  std::string method;             // empty when `error` is set
  boost::json::value params;      // object, array, or null (absent or JSON null)
  std::optional<RpcError> error;  // set: answer with this error instead of running
  // execute_dag / job_submit: a name given twice in a "nodes" object (the
  // parsed params keep only the last), to be refused as invalid params.
  std::optional<std::string> duplicate_node;
};

struct Line {
  bool batch = false;  // the line was a JSON array: answer with one array (batch_text)
  std::vector<Call> calls;
  std::optional<RpcError> error;  // parse error or empty batch: answer ONE error with id null
};

// Parses one request line (without its '\n'; a trailing '\r' is whitespace).
// A line that is empty or only whitespace yields no calls and no error:
// nothing to answer. The caller enforces the line-length limit beforehand.
Line parse_line(std::string_view text);

// Serialization.
std::string result_text(const boost::json::value& id, const boost::json::value& result);
std::string error_text(const boost::json::value& id, const RpcError& err);
// "[a,b,c]". An empty vector (a batch of notifications only) yields "": send
// nothing at all, as the spec requires.
std::string batch_text(const std::vector<std::string>& member_texts);

// Low-level writers for building texts without an intermediate
// boost::json::value (e.g. streamed output chunks).
// Appends `v` as JSON. Integers exactly; doubles in shortest round-trip form
// (std::to_chars), with ".0" added to integral ones so a float id stays a
// float; non-finite doubles as null.
void append_value(std::string& out, const boost::json::value& v);
// Appends `s` as a quoted JSON string. `s` must be valid UTF-8 (sanitize
// command output with append_utf8_sanitized first); bytes are not checked.
void append_string(std::string& out, std::string_view s);

// Params of the built-in methods. Unknown fields are ignored (compatibility
// with existing clients); a JSON null counts as absent for every optional
// field. All errors are Code::InvalidParams with a message naming the field.
template <typename T>
using Parsed = std::variant<T, RpcError>;

struct ExecParams {
  std::string command;              // required, non-empty, no NUL
  std::vector<std::string> args;    // "args": array of strings without NUL
  bool shell = true;                // default: true iff args empty; "shell": bool overrides
  std::optional<double> timeout_s;  // "timeout": finite number > 0 (seconds)
  std::string working_dir;          // "working_dir": "" = daemon default
  std::string session_id;           // "session_id": "" = no session
  EnvPairs env;                     // "env": object string->string, in request order
  bool base64 = false;              // "output_encoding": "utf8" (default) | "base64"
  std::optional<uint64_t> max_output_bytes;  // "max_output_bytes": integer >= 0, per stream
  bool kill_on_output_cap = false;           // "output_policy": "truncate" (default) | "kill"
  std::optional<uint64_t> kill_grace_ms;     // "kill_grace_ms": TERM -> KILL on timeout/cancel
  shm::Rlimits limits;  // "limits": {"cpu_seconds": N, ...} by shm::kLimitNames; 0: not asked
};
// Used by execute and execute_stream. "stdin" must be absent, null or "".
Parsed<ExecParams> parse_exec_params(const boost::json::value& params);

struct SessionCreateParams {
  std::string name;   // "name": optional, default ""
  EnvPairs env_vars;  // "env_vars": optional object string->string
};
Parsed<SessionCreateParams> parse_session_create_params(const boost::json::value& params);

// {"session_id": non-empty string}, as session_destroy takes it.
Parsed<std::string> parse_session_id_param(const boost::json::value& params);

// Detached jobs (job_params.cpp). Generated job ids are decimal numbers; a
// client-chosen "job_id" is 1..64 bytes of [A-Za-z0-9._:-] with at least one
// non-digit, so the two never collide; a plan's steps are "<plan id>/<step
// name>", which neither can be.
inline constexpr size_t kMaxJobIdBytes = 64;
inline constexpr size_t kMaxStepIdBytes = 2 * kMaxJobIdBytes + 1;  // "<plan id>/<name>"

// Strategies: execute_chain, execute_parallel, execute_dag, and job_submit
// with "strategy". Each step is an execute spec (its own env, working_dir,
// timeout, session_id, ...).
inline constexpr size_t kMaxPlanSteps = 64;
enum class PlanKind : uint8_t { kChain = 1, kParallel = 2, kDag = 3 };
struct PlanStep {
  std::string name;  // dag: the node's name; else its index
  ExecParams exec;
  std::vector<std::string> depends_on;  // dag: "depends_on", names of other nodes
};
struct PlanParams {
  PlanKind kind = PlanKind::kChain;
  std::vector<PlanStep> steps;  // chain/parallel: "commands" in order; dag: "nodes" by name
  bool stop_on_error = true;    // chain: "stop_on_error"
  bool fail_fast = false;       // dag, parallel: "fail_fast": after a failure, start no more steps
  uint32_t max_parallel = 0;    // parallel, dag: "max_parallel" >= 1; 0: no bound
  // How the attached methods answer each step's output (as execute's).
  bool base64 = false;                       // "output_encoding"
  std::optional<uint64_t> max_output_bytes;  // "max_output_bytes", per step and stream
};
// Checks the steps, and for a DAG that every dependency names a node and
// there is no cycle (-32602 naming the culprit). `duplicate_node`: from Call.
Parsed<PlanParams> parse_plan_params(PlanKind kind, const boost::json::value& params,
                                     const std::optional<std::string>& duplicate_node);

struct JobSubmitParams {
  ExecParams exec;
  std::optional<PlanParams> plan;  // "strategy": "chain" | "parallel" | "dag"
  std::string job_id;              // "" = generate one
};
Parsed<JobSubmitParams> parse_job_submit_params(const boost::json::value& params,
                                                const std::optional<std::string>& duplicate_node);

// {"job_id": string}: job_status, job_forget.
Parsed<std::string> parse_job_id_param(const boost::json::value& params);

struct JobWaitParams {
  std::string job_id;
  std::optional<double> timeout_s;           // "timeout": seconds >= 0; absent = until it ends
  std::optional<uint64_t> max_output_bytes;  // per stream, as execute
  bool base64 = false;                       // "output_encoding"
};
Parsed<JobWaitParams> parse_job_wait_params(const boost::json::value& params);

enum class OutputStream : uint8_t { kStdout = 0, kStderr = 1, kBoth = 2 };
struct JobOutputParams {
  std::string job_id;
  OutputStream stream = OutputStream::kBoth;  // "stream": "stdout" | "stderr" | "both"
  uint64_t cursor = 0;                        // "cursor": byte offset into that stream
  uint64_t max_bytes = 64 * 1024;             // "max_bytes": 1..kMaxOutputRead
  bool base64 = false;                        // "output_encoding"
  std::optional<double> wait_s;  // "wait": seconds to wait for data when there is none yet
};
inline constexpr uint64_t kMaxOutputRead = 16u << 20;
Parsed<JobOutputParams> parse_job_output_params(const boost::json::value& params);

struct JobSignalParams {
  std::string job_id;
  int signal = 0;                    // "signal": "TERM", "SIGTERM" or a number 1..64
  std::optional<uint64_t> grace_ms;  // job_cancel only: "grace_ms" before SIGKILL
};
// job_cancel: "signal" optional (default TERM); job_signal: required.
Parsed<JobSignalParams> parse_job_signal_params(const boost::json::value& params,
                                                bool signal_required);

struct JobListParams {
  std::string state;       // "" = any; else one of the job states, "waiting" or "skipped"
  std::string session_id;  // "" = any
};
Parsed<JobListParams> parse_job_list_params(const boost::json::value& params);

}  // namespace sp::rpc
