// The one table from the frontend's errors to the wire (docs/protocol.md,
// "Errors"). Each part of the frontend returns its own error values: a kind
// that decides the code, and the detail that makes the message; only
// errors.cpp knows which JSON-RPC code and message each becomes. Pure.
#pragma once

#include <cstdint>
#include <string>

#include "frontend/codec/rpc.h"
#include "shm/service_table.h"
#include "shm/session_table.h"

namespace sp::frontend {

inline constexpr uint64_t kRetryAfterMs = 50;  // the retry hint of a queue-full error

// Connections: a bound of the transport was reached; `limit` is that bound.
enum class TransportError { kTooManyConnections, kLineTooLong, kBatchFull, kTooManyInflight };
rpc::RpcError to_rpc(TransportError e, uint64_t limit);

// Sessions (shm::SessionTable::create); `env_bytes`: what the env asked for.
rpc::RpcError to_rpc(shm::SessionError e, const shm::SessionTable& table, uint64_t env_bytes);

// Why a job or plan was not accepted (JobQueue, Plans, JobRecords).
struct SubmitError {
  enum Kind {
    kShuttingDown,
    kNoSession,     // detail: the session_id, which names no session
    kAboveCeiling,  // a param above the daemon's ceiling or beyond what it can do: detail says
    kQueueFull,     // no job slot or ring cell: detail says which
    kTooLarge,      // the spec or the plan does not fit: detail says why
    kRecordsFull,   // every job record holds an unfinished job
    kNoHost,        // detail: the host name, which names no host (host_add)
  } kind;
  std::string detail;
};
rpc::RpcError to_rpc(const SubmitError& e);

// What a host method could not do (Hosts). `name`: the host's.
struct HostFault {
  enum Kind {
    kNoHost,     // no host of that name
    kExists,     // host_add of a name taken
    kTableFull,  // every host slot is taken (--hosts)
    kBusy,       // host_remove without force while jobs run there: detail is their count
  } kind;
  std::string name;
  std::string detail;
};
rpc::RpcError to_rpc(const HostFault& e);

// What a service method could not do (Services). `name`: the service's.
struct ServiceFault {
  enum Kind {
    kNoService,     // no service of that name
    kRuns,          // it runs with another spec: service_restart changes it (detail: state)
    kWrongState,    // detail says why; `state` is the service's
    kSpecTooLarge,  // detail: the spec's bytes
    kTableFull,     // every service slot is taken
    kSessionFull,   // the session holds --services-per-session services
    kUnreadable,    // its log could not be read: detail says why
    kNoSpool,       // the spool has no room for its log: detail is log_bytes
  } kind;
  std::string name;
  std::string detail;
  std::string state;
};
rpc::RpcError to_rpc(const ServiceFault& e, const shm::ServiceTable& table);

// What a detached-job method could not do (DetachedJobs).
struct JobError {
  enum Kind {
    kNoJob,       // detail: the job_id
    kForgotten,   // the job went while its caller waited
    kWrongState,  // detail says why; `state` is the job's
    kNoOutput,    // a plan has no output of its own: detail names its steps
    kUnreadable,  // its spool file could not be read: detail says why
  } kind;
  std::string detail;
  std::string state;
};
rpc::RpcError to_rpc(const JobError& e);

// Why job_stdin_write / job_stdin_close could not take a job's stdin
// (StdinFeeds); `stdin_bytes`: what the job's stdin had accepted.
struct StdinError {
  enum Kind {
    kNotOpen,     // the job was not started with "stdin_open" (or it is a plan)
    kClosed,      // the client sent EOF already
    kReaderGone,  // the command exited or closed its stdin
    kGap,         // "offset" is past the bytes accepted
    kFull,        // not all of it fitted in time, or the frontend holds too much: retry
    kTerminal,    // EOF asked of a PTY job
  } kind;
  std::string job_id;
  uint64_t stdin_bytes = 0;
  std::string state;  // the job's, for kReaderGone
};
rpc::RpcError to_rpc(const StdinError& e);

// `reload`'s errors; `detail` is the supervisor's message for kFailed.
enum class ReloadError { kForbidden, kFailed, kBusy, kNoAnswer };
rpc::RpcError to_rpc(ReloadError e, const std::string& detail = {});

// What a workspace file method could not do (FileMethods): `kind` is the
// file helper's (files::FileError's, or "failed": the helper itself did
// not end well), `message` its words, `errno_name` ("ENOENT") if any.
struct FileOpError {
  std::string kind;
  std::string message;
  std::string errno_name;
};
rpc::RpcError to_rpc(const FileOpError& e);

// The method table's own: no such method, and a call that cannot be made
// the way it was sent (detail says why).
rpc::RpcError method_not_found(const std::string& method);
rpc::RpcError invalid_request(std::string why);
// A bug or a failed allocation while handling a call.
rpc::RpcError internal_error(const char* what);

}  // namespace sp::frontend
