#include "frontend/errors.h"

#include "frontend/params/readers.h"

namespace sp::frontend {

using rpc::Code;
using rpc::RpcError;

RpcError to_rpc(TransportError e, uint64_t limit) {
  const rpc::Value data = rpc::Object{{"limit", limit}};
  switch (e) {
    case TransportError::kTooManyConnections:
      return {Code::LimitExceeded,
              "too many connections (the limit is " + std::to_string(limit) + ")"};
    case TransportError::kLineTooLong:
      return {Code::LimitExceeded, "request line exceeds " + std::to_string(limit) + " bytes",
              data};
    case TransportError::kBatchFull:
      return {Code::LimitExceeded,
              "the batch's answers passed " + std::to_string(limit) +
                  " bytes; this member was not run: send it again",
              data};
    case TransportError::kTooManyInflight:
      return {Code::LimitExceeded,
              "more than --max-inflight (" + std::to_string(limit) +
                  ") unfinished requests on this connection",
              data};
  }
  return internal_error("unknown transport error");
}

RpcError to_rpc(shm::SessionError e, const shm::SessionTable& table, uint64_t env_bytes) {
  switch (e) {
    case shm::SessionError::kNameTooLong:
      return rpc::detail::bad_params("\"name\": session name is longer than " +
                                     std::to_string(table.max_name_bytes()) + " bytes");
    case shm::SessionError::kEnvTooLarge:
      return {Code::LimitExceeded, "session env_vars need " + std::to_string(env_bytes) +
                                       " bytes, the limit is " + std::to_string(table.env_bytes())};
    case shm::SessionError::kTableFull:
      return {Code::LimitExceeded,
              "too many sessions (the limit is " + std::to_string(table.slots()) + ")"};
  }
  return internal_error("unknown session error");
}

RpcError to_rpc(const SubmitError& e) {
  switch (e.kind) {
    case SubmitError::kShuttingDown:
      return {Code::ShuttingDown, "the daemon is shutting down"};
    case SubmitError::kNoSession:
      return {Code::NotFound, "no session with session_id " + e.detail,
              rpc::Object{{"session_id", e.detail}}};
    case SubmitError::kNoHost:
      return {Code::NotFound, "no host named " + e.detail + " (host_add adds one)",
              rpc::Object{{"host", e.detail}}};
    case SubmitError::kAboveCeiling:
      return rpc::detail::bad_params(e.detail);
    case SubmitError::kQueueFull:
      return rpc::queue_full_error(kRetryAfterMs, "queue full: " + e.detail + "; retry later");
    case SubmitError::kTooLarge:
    case SubmitError::kRecordsFull:
      return {Code::LimitExceeded, e.detail};
  }
  return internal_error("unknown submit error");
}

RpcError to_rpc(const HostFault& e) {
  rpc::Object data{{"host", e.name}};
  switch (e.kind) {
    case HostFault::kNoHost:
      return {Code::NotFound, "no host named " + e.name, std::move(data)};
    case HostFault::kExists:
      return {Code::WrongState, "a host named " + e.name + " exists; host_remove it first",
              std::move(data)};
    case HostFault::kTableFull:
      return {Code::LimitExceeded, "every host slot is taken (--hosts)", std::move(data)};
    case HostFault::kBusy:
      data["running"] = std::stoull(e.detail);
      return {
          Code::WrongState,
          "host " + e.name + " has " + e.detail + " jobs queued or running; force: true ends them",
          std::move(data)};
  }
  return {Code::Internal, "unknown host error"};
}

RpcError to_rpc(const ServiceFault& e, const shm::ServiceTable& table) {
  const rpc::Object name{{"name", e.name}};
  switch (e.kind) {
    case ServiceFault::kNoService:
      return {Code::NotFound, "no service named " + e.name, name};
    case ServiceFault::kRuns:
      return {Code::WrongState,
              "service " + e.name +
                  " runs with a different spec; service_restart with \"spec\" changes it",
              rpc::Object{{"name", e.name}, {"state", e.state}}};
    case ServiceFault::kWrongState:
      return {Code::WrongState, e.detail, rpc::Object{{"name", e.name}, {"state", e.state}}};
    case ServiceFault::kSpecTooLarge:
      return {Code::LimitExceeded,
              "the service's spec is " + e.detail + " bytes as JSON, the limit is " +
                  std::to_string(table.spec_bytes()) + " (--service-spec-bytes)"};
    case ServiceFault::kTableFull:
      return {Code::LimitExceeded, "too many services (the limit is " +
                                       std::to_string(table.size()) +
                                       ", --services); remove one with service_remove"};
    case ServiceFault::kSessionFull:
      return {Code::LimitExceeded, "the session holds " + std::to_string(table.per_session()) +
                                       " services, its limit (--services-per-session)"};
    case ServiceFault::kNoSpool:
      return {Code::LimitExceeded,
              "the spool has no room for the service's log of " + e.detail +
                  " bytes (--spool-bytes holds detached jobs' output and service logs); "
                  "ask for a smaller \"log_bytes\", or remove a service"};
    case ServiceFault::kUnreadable:
      return {Code::Internal, "the log of service " + e.name + " cannot be read: " + e.detail};
  }
  return internal_error("unknown service error");
}

RpcError to_rpc(const JobError& e) {
  switch (e.kind) {
    case JobError::kNoJob:
      return {Code::NotFound,
              "no job with job_id " + e.detail + " (never submitted, forgotten, or evicted)",
              rpc::Object{{"job_id", e.detail}}};
    case JobError::kForgotten:
      return {Code::NotFound, "the job was forgotten"};
    case JobError::kWrongState:
      return {Code::WrongState, e.detail, rpc::Object{{"state", e.state}}};
    case JobError::kNoOutput:
      return rpc::detail::bad_params(e.detail);
    case JobError::kUnreadable:
      return {Code::Internal, e.detail};
  }
  return internal_error("unknown job error");
}

RpcError to_rpc(const StdinError& e) {
  rpc::Object data{{"job_id", e.job_id}, {"stdin_bytes", e.stdin_bytes}};
  const std::string job = "job " + e.job_id;
  switch (e.kind) {
    case StdinError::kNotOpen:
      data["state"] = e.state;
      return {Code::WrongState,
              job +
                  " has no open stdin: submit it with \"stdin_open\": true (job_submit, "
                  "execute_stream)",
              std::move(data)};
    case StdinError::kClosed:
      data["state"] = e.state;
      return {Code::WrongState, job + ": its stdin was closed (EOF sent)", std::move(data)};
    case StdinError::kReaderGone:
      data["state"] = e.state;
      return {Code::WrongState,
              job + ": its command no longer reads stdin (it " +
                  (e.state == "running" ? "closed it" : "ended: " + e.state) + ")",
              std::move(data)};
    case StdinError::kGap:
      return {Code::InvalidParams,
              "invalid params: \"offset\" is past the " + std::to_string(e.stdin_bytes) +
                  " bytes " + job + "'s stdin accepted (a gap)",
              std::move(data)};
    case StdinError::kTerminal:
      return {Code::InvalidParams,
              "invalid params: " + job +
                  " runs on a terminal, where end of input is a character: send \"\\u0004\" "
                  "(Ctrl-D) with job_stdin_write",
              std::move(data)};
    case StdinError::kFull:
      data["retry_after_ms"] = kRetryAfterMs;
      return {Code::QueueFull,
              job +
                  ": its stdin buffer is full (the command reads slower than it is written); "
                  "retry from stdin_bytes with \"offset\"",
              std::move(data)};
  }
  return internal_error("unknown stdin error");
}

RpcError to_rpc(const FileOpError& e) {
  rpc::Object data{{"error", e.kind}};
  if (!e.errno_name.empty()) data["errno"] = e.errno_name;
  // A path that leads out of the files root, or a request that cannot be
  // done as asked, is the caller's to fix; a missing entry is -32001 as a
  // missing job or session is.
  if (e.kind == "escape" || e.kind == "invalid" || e.kind == "not_text")
    return {Code::InvalidParams, "invalid params: " + e.message, std::move(data)};
  if (e.kind == "not_found") return {Code::NotFound, e.message, std::move(data)};
  return {Code::FileFailed, e.message, std::move(data)};
}

RpcError method_not_found(const std::string& method) {
  return {Code::MethodNotFound, "method not found: " + method};
}

RpcError invalid_request(std::string why) {
  return {Code::InvalidRequest, std::move(why)};
}

RpcError internal_error(const char* what) {
  return {Code::Internal, std::string("internal error: ") + what};
}

RpcError to_rpc(ReloadError e, const std::string& detail) {
  switch (e) {
    case ReloadError::kForbidden:
      return {Code::Forbidden, "reload is allowed only to the daemon's own uid and root"};
    case ReloadError::kFailed:
      return {Code::ReloadFailed, "reload failed, the configuration in use is unchanged: " + detail,
              rpc::Object{{"message", detail}}};
    case ReloadError::kBusy:
      return rpc::queue_full_error(kRetryAfterMs, "too many reload calls waiting; retry later");
    case ReloadError::kNoAnswer:
      return {Code::Internal, "the supervisor did not answer the reload in time"};
  }
  return internal_error("unknown reload error");
}

}  // namespace sp::frontend
