// The typed params of the built-in methods, and their readers: each turns a
// request's params (an rpc::Value from any codec) into a params struct, or
// a -32602 error naming the field and why. Unknown fields are ignored
// (compatibility with existing clients); a null counts as absent for every
// optional field. Pure functions; no exception escapes. Thread-compatible.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/env_pairs.h"
#include "common/text.h"
#include "frontend/codec/rpc.h"
#include "shm/codec.h"
#include "shm/host_table.h"
#include "shm/layout.h"
#include "shm/spool.h"

namespace sp::rpc {

template <typename T>
using Parsed = std::variant<T, RpcError>;

// "pty": {"rows", "cols", "term"} (or true): the command runs on a new
// terminal of that size with TERM=term; its output is all "stdout". At
// namespace scope: a nested struct with member initializers is not yet
// default-constructible where std::optional<Pty> is declared (clang).
struct PtyParams {
  uint16_t rows = 24, cols = 80;
  std::string term = "xterm-256color";
};

struct ExecParams {
  std::string command;              // required, non-empty, no NUL
  std::vector<std::string> args;    // "args": array of strings without NUL
  bool shell = true;                // default: true iff args empty; "shell": bool overrides
  std::optional<double> timeout_s;  // "timeout": finite number > 0 (seconds)
  std::string working_dir;          // "working_dir": "" = daemon default
  std::string session_id;           // "session_id": "" = no session
  EnvPairs env;                     // "env": object string->string, in request order
  OutputEncoding encoding =
      OutputEncoding::kUnset;                // "output_encoding": "utf8" (default) | "base64"
  std::optional<uint64_t> max_output_bytes;  // "max_output_bytes": integer >= 0, per stream
  bool kill_on_output_cap = false;           // "output_policy": "truncate" (default) | "kill"
  std::optional<uint64_t> kill_grace_ms;     // "kill_grace_ms": TERM -> KILL on timeout/cancel
  shm::Rlimits limits;  // "limits": {"cpu_seconds": N, ...} by shm::kLimitNames; 0: not asked
  // "stdin": bytes written to the command, then EOF ("stdin_encoding": "utf8"
  // (default) | "base64"); absent: stdin is /dev/null.
  std::optional<std::string> stdin_data;
  // "stdin_open": stdin stays open after `stdin_data` for job_stdin_write
  // (job_submit and execute_stream only; the methods check).
  bool stdin_open = false;
  std::optional<PtyParams> pty;  // "pty": see PtyParams
  // "secrets" and "secret_env" (whose values are in `env` too): replaced
  // with "***" in the job's output (common/redactor.h).
  std::vector<std::string> secrets;
  // "heartbeat_ms" (execute_stream only; 0: off): a {"type": "heartbeat"}
  // chunk after this long without one or any output.
  uint64_t heartbeat_ms = 0;
  // "host": the name of a remote host (host_add) the job runs on; "": here.
  std::string host;
  // "hosts": fan-out, the same job on each of these hosts (execute,
  // execute_stream, job_submit), at most "max_parallel" at once (0: all),
  // starting no more after a failure with "fail_fast".
  std::vector<std::string> hosts;
  uint32_t max_parallel = 0;
  bool fail_fast = false;
  // Not from the wire: host_check's job (log in to `host`, run nothing).
  bool host_check = false;
};
inline constexpr size_t kMaxFanOutHosts = 4096;
// Used by execute and execute_stream, job_submit and every plan step.
Parsed<ExecParams> parse_exec_params(const Value& params);

struct SessionCreateParams {
  std::string name;                  // "name": optional, default ""
  EnvPairs env_vars;                 // "env_vars": optional object string->string
  std::vector<std::string> secrets;  // "secrets", "secret_env" (also in env_vars)
};
Parsed<SessionCreateParams> parse_session_create_params(const Value& params);

// {"session_id": non-empty string}, as session_destroy takes it.
Parsed<std::string> parse_session_id_param(const Value& params);

// Detached jobs (job_params.cpp). Generated job ids are decimal numbers; a
// client-chosen "job_id" is 1..64 bytes of [A-Za-z0-9._:-] with at least one
// non-digit, so the two never collide; a plan's steps are "<plan id>/<step
// name>", which neither can be.
inline constexpr size_t kMaxJobIdBytes = 64;
inline constexpr size_t kMaxStepIdBytes = 2 * kMaxJobIdBytes + 1;  // "<plan id>/<name>"

// Strategies: execute_chain, execute_parallel, execute_dag, and job_submit
// with "strategy". Each step is an execute spec (its own env, working_dir,
// timeout, session_id, ...).
// Their kinds and bounds are shm's (shm::PlanKind, shm::kMaxPlanSteps):
// plans live in job records.
struct PlanStep {
  std::string name;  // dag: the node's name; else its index
  ExecParams exec;
  std::vector<std::string> depends_on;  // dag: "depends_on", names of other nodes
};
struct PlanParams {
  shm::PlanKind kind = shm::PlanKind::kChain;
  std::vector<PlanStep> steps;  // chain/parallel: "commands" in order; dag: "nodes" by name
  bool stop_on_error = true;    // chain: "stop_on_error"
  bool fail_fast = false;       // dag, parallel: "fail_fast": after a failure, start no more steps
  uint32_t max_parallel = 0;    // parallel, dag: "max_parallel" >= 1; 0: no bound
  // How the attached methods answer each step's output (as execute's).
  OutputEncoding encoding = OutputEncoding::kUnset;  // "output_encoding"
  std::optional<uint64_t> max_output_bytes;          // "max_output_bytes", per step and stream
};
// Checks the steps, and for a DAG that every dependency names a node, no
// name is given twice and there is no cycle (-32602 naming the culprit).
Parsed<PlanParams> parse_plan_params(shm::PlanKind kind, const Value& params);

struct JobSubmitParams {
  ExecParams exec;
  std::optional<PlanParams> plan;  // "strategy": "chain" | "parallel" | "dag"
  std::string job_id;              // "" = generate one
};
Parsed<JobSubmitParams> parse_job_submit_params(const Value& params);

// {"job_id": string}: job_status, job_forget.
Parsed<std::string> parse_job_id_param(const Value& params);

struct JobWaitParams {
  std::string job_id;
  std::optional<double> timeout_s;           // "timeout": seconds >= 0; absent = until it ends
  std::optional<uint64_t> max_output_bytes;  // per stream, as execute
  OutputEncoding encoding = OutputEncoding::kUnset;  // "output_encoding"
};
Parsed<JobWaitParams> parse_job_wait_params(const Value& params);

struct JobOutputParams {
  std::string job_id;
  shm::SpoolView stream = shm::SpoolView::kBoth;     // "stream": "stdout" | "stderr" | "both"
  uint64_t cursor = 0;                               // "cursor": byte offset into that stream
  uint64_t max_bytes = 64 * 1024;                    // "max_bytes": 1..kMaxOutputRead
  OutputEncoding encoding = OutputEncoding::kUnset;  // "output_encoding"
  std::optional<double> wait_s;  // "wait": seconds to wait for data when there is none yet
};
inline constexpr uint64_t kMaxOutputRead = 16u << 20;
Parsed<JobOutputParams> parse_job_output_params(const Value& params);

// Remote hosts (host_params.cpp). Names as services'.
struct HostAddParams {
  shm::HostConfig host;  // its secret (passphrase, password) never goes into a message
};
Parsed<HostAddParams> parse_host_add_params(const Value& params);
struct HostNameParams {
  std::string name;
  bool force = false;  // host_remove: end its running jobs
};
Parsed<HostNameParams> parse_host_name_params(const Value& params);
// A host of the configuration (--host): "NAME [USER@]ADDRESS[:PORT] [KEY=VALUE | agent]...",
// KEY one of port, user, key_file, passphrase_file, password_file,
// agent_socket, host_key, fingerprint, connect_timeout_ms, keepalive_ms,
// idle_timeout_ms, max_connections. A secret comes from a file
// (`secret_file`, read by whoever applies the spec), never from the spec.
struct HostSpec {
  HostAddParams add;
  std::string secret_file;  // passphrase_file or password_file; "": none
};
Parsed<HostSpec> parse_host_spec(std::string_view spec);

// Supervised services (service_params.cpp). Names are 1..64 bytes of
// [A-Za-z0-9._-], starting with a letter or digit.
inline constexpr size_t kMaxServiceNameBytes = 64;
inline constexpr uint64_t kDefaultServiceLogBytes = 1u << 20;
inline constexpr uint64_t kMinServiceLogBytes = 4096;
inline constexpr uint64_t kMaxServiceLogBytes = 64u << 20;
inline constexpr uint64_t kMaxServiceMs = 86'400'000;  // a day: every *_ms of a service
enum class RestartPolicy : uint8_t { kNever, kOnFailure, kAlways };
struct RestartParams {
  RestartPolicy policy = RestartPolicy::kOnFailure;
  uint64_t backoff_ms = 250;  // before the first restart; doubles per failure in window_ms
  uint64_t backoff_max_ms = 30'000;
  uint32_t max_restarts = 5;  // 0..shm::kMaxServiceRestarts
  uint64_t window_ms = 60'000;
};
enum class ProbeKind : uint8_t { kNone, kTcp, kHttp, kFile, kCommand };
struct ReadinessParams {
  ProbeKind kind = ProbeKind::kNone;
  std::string host = "127.0.0.1";  // tcp
  uint16_t port = 0;               // tcp
  std::string url;                 // http (http:// only)
  unsigned status = 0;             // http: the status expected; 0: any 2xx or 3xx
  std::string path;                // file
  ExecParams command;              // command: run like the service (its env, dir, session)
  uint64_t initial_delay_ms = 0, period_ms = 1000, timeout_ms = 1000, start_period_ms = 60'000;
};
struct ServiceSpec {
  std::string name;
  ExecParams exec;  // the service's command, env, working_dir, session_id, secrets, limits
  RestartParams restart;
  ReadinessParams readiness;
  int stop_signal = 15;             // "stop": {"signal"} (SIGTERM)
  uint64_t stop_grace_ms = 10'000;  // then SIGKILL
  uint64_t log_bytes = kDefaultServiceLogBytes;
};
struct ServiceStartParams {
  ServiceSpec spec;
  // The params without "wait_ready", as canonical JSON (object keys sorted):
  // what is kept in shm and compared to tell "the same spec".
  std::string spec_json;
  std::optional<double> wait_ready_s;  // "wait_ready": true (until it can no longer be) or seconds
};
Parsed<ServiceStartParams> parse_service_start_params(const Value& params);
// A spec kept in shm (spec_json), read again after a frontend restart.
Parsed<ServiceSpec> parse_service_spec(std::string_view spec_json);

// service_stop, service_remove, service_status: {"name"}.
Parsed<std::string> parse_service_name_param(const Value& params);
struct ServiceRestartParams {
  std::string name;
  std::optional<ServiceStartParams> spec;  // "spec": new service_start params (same name)
};
Parsed<ServiceRestartParams> parse_service_restart_params(const Value& params);
enum class ServiceUntil : uint8_t { kReady, kStopped, kExited, kFailed };
struct ServiceWaitParams {
  std::string name;
  ServiceUntil until = ServiceUntil::kReady;
  std::optional<double> timeout_s;  // absent: until it is reached or can no longer be
};
Parsed<ServiceWaitParams> parse_service_wait_params(const Value& params);
struct ServiceLogsParams {
  std::string name;
  std::optional<uint64_t> cursor;      // absent: from the oldest byte kept (or tail_bytes)
  std::optional<uint64_t> tail_bytes;  // without a cursor: the last this many bytes
  uint64_t max_bytes = 64 * 1024;      // 1..kMaxOutputRead
  std::optional<double> wait_s;
  shm::SpoolView stream = shm::SpoolView::kBoth;
  OutputEncoding encoding = OutputEncoding::kUnset;
};
Parsed<ServiceLogsParams> parse_service_logs_params(const Value& params);

struct JobSignalParams {
  std::string job_id;
  int signal = 0;  // "signal": "TERM", "SIGTERM" or a number 1..64
  // job_signal's "target": "group" (its process group) or "foreground" (a
  // PTY job's terminal's foreground group); absent: foreground for a PTY
  // job, else group.
  std::optional<bool> foreground;
  std::optional<uint64_t> grace_ms;  // job_cancel only: "grace_ms" before SIGKILL
};
// job_cancel: "signal" optional (default TERM); job_signal: required.
Parsed<JobSignalParams> parse_job_signal_params(const Value& params, bool signal_required);

// job_stdin_write (and job_stdin_close: "job_id" only, eof).
struct StdinWriteParams {
  std::string job_id;
  std::string data;                // "data": string, decoded per "encoding" ("utf8" | "base64")
  std::optional<uint64_t> offset;  // "offset": bytes of the job's stdin before this write
  bool eof = false;                // "eof": EOF after it
};
Parsed<StdinWriteParams> parse_stdin_write_params(const Value& params);
Parsed<StdinWriteParams> parse_stdin_close_params(const Value& params);

// job_resize: {"job_id", "rows", "cols"}, rows and cols 1..65535.
struct ResizeParams {
  std::string job_id;
  uint16_t rows = 0, cols = 0;
};
Parsed<ResizeParams> parse_resize_params(const Value& params);

// shell_open: an interactive shell on a PTY, as a detached job.
struct ShellOpenParams {
  JobSubmitParams job;       // "shell" (as args[0], with "-i"), "rows", "cols", "term", "env",
                             // "working_dir", "session_id", "secrets", "secret_env", "job_id"
  bool shell_given = false;  // "shell" was given (else the frontend picks one)
};
Parsed<ShellOpenParams> parse_shell_open_params(const Value& params);

// job_interact: write `input`, then answer once output was quiet for
// idle_ms, the job ended, max_bytes are there or wait_ms ran out.
struct JobInteractParams {
  std::string job_id;
  std::string input;       // "input", decoded per "encoding"
  uint64_t cursor = 0;     // "cursor": required, as job_output's
  uint64_t idle_ms = 300;  // "idle_ms": quiet this long after the last output
  uint64_t wait_ms = 30'000;
  uint64_t max_bytes = 64 * 1024;
  OutputEncoding encoding =
      OutputEncoding::kUnset;  // "encoding" ("output_encoding" overrides it for the output)
};
inline constexpr uint64_t kMaxInteractWaitMs = 3'600'000;
Parsed<JobInteractParams> parse_job_interact_params(const Value& params);

struct JobListParams {
  std::string state;       // "" = any; else one of the job states, "waiting" or "skipped"
  std::string session_id;  // "" = any
};
Parsed<JobListParams> parse_job_list_params(const Value& params);

// The workspace file methods (file_params.cpp): file_read, file_write,
// file_list, file_stat, file_remove, file_mkdir. Paths are relative to the
// files root (or absolute inside it); the helper resolves them beneath it.
// archive_extract is kExtract: "path" the directory, "data" (with
// "encoding") or "source" (an archive file beneath the root), "max_bytes"
// the content of all entries together (default kDefaultExtractBytes).
enum class FileOp { kRead, kWrite, kList, kStat, kRemove, kMkdir, kExtract };
inline constexpr uint64_t kDefaultExtractBytes = 1ull << 30;
inline constexpr uint64_t kMaxExtractBytes = 1ull << 40;
inline constexpr uint64_t kDefaultFileRead = 1u << 20;   // file_read "max_bytes" default
inline constexpr uint64_t kMaxFileRead = 16u << 20;      // and its ceiling: more goes by "offset"
inline constexpr uint64_t kDefaultListEntries = 10'000;  // file_list "max_entries" default
inline constexpr uint64_t kMaxListEntries = 100'000;     // and its ceiling
struct FileParams {
  FileOp op = FileOp::kStat;
  std::string path;  // "path": required, non-empty, no NUL, at most 4095 bytes
  // read: "offset" (default 0); write: "offset" writes in place there.
  std::optional<uint64_t> offset;
  uint64_t max_bytes = kDefaultFileRead;  // read: "max_bytes", 1..kMaxFileRead
  OutputEncoding encoding =
      OutputEncoding::kUnset;                  // "encoding": read: the answer's; write: "data"'s
  std::string data;                            // write: "data" (required), decoded
  bool append = false;                         // write: "append" (not with "offset")
  bool mkdirs = false;                         // write: "mkdirs"
  bool recursive = false;                      // list, remove: "recursive"
  std::optional<uint32_t> mode;                // write, mkdir: "mode", 0..07777 or an octal string
  uint64_t max_entries = kDefaultListEntries;  // list: "max_entries", 1..kMaxListEntries
  std::string source;                          // extract: "source"
};
Parsed<FileParams> parse_file_params(FileOp op, const Value& params);

// archive_create: packs directory "path" (format "tar.gz", the default, or
// "tar") as a detached job and answers its first part; each call with
// "archive_id" and "cursor" answers the next, as job_output reads.
struct ArchiveCreateParams {
  std::string path;                       // required without archive_id
  bool gzip = true;                       // "format"
  std::string archive_id;                 // "archive_id": the archive a first call started
  uint64_t cursor = 0;                    // "cursor": bytes of the archive already read
  uint64_t max_bytes = kDefaultFileRead;  // "max_bytes" per answer, 1..kMaxFileRead
  double wait_s = 30;                     // "wait": for the next part, seconds
};
Parsed<ArchiveCreateParams> parse_archive_create_params(const Value& params);

}  // namespace sp::rpc
