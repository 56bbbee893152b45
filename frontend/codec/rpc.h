// What a wire protocol's codec produces and consumes: requests with their id
// and params as Values, and the errors of the JSON-RPC 2.0 error model
// (which MessagePack-RPC shares). Method handlers, the method table and the
// transport work on these types only; each codec (json_codec.h) turns bytes
// into them and them into bytes. Plain value types; thread-compatible.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "frontend/codec/value.h"

namespace sp::rpc {

// Error codes on the wire. The server-defined ones (-32000..-32099) are the
// table clients rely on (docs/protocol.md); frontend/errors.cpp maps the
// modules' errors onto them.
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
  SpawnFailed = -32004,   // reserved; spawn failures are normally reported in the result
  WrongState = -32005,    // the job's state does not allow it: data {"state": ...}
  Forbidden = -32006,     // the caller may not do this (reload: only the daemon's uid and root)
  ReloadFailed = -32007,  // the new configuration was not applied; the old one stays
  FileFailed = -32008,    // a workspace file operation failed: data {"error": kind, "errno"}
};

struct RpcError {
  Code code;
  std::string message;
  Value data = nullptr;  // sent as "data" unless null
};

// {code: QueueFull, data: {"retry_after_ms": retry_after_ms}}.
inline RpcError queue_full_error(uint64_t retry_after_ms,
                                 std::string message = "queue full, retry later") {
  return {Code::QueueFull, std::move(message), Object{{"retry_after_ms", retry_after_ms}}};
}

// One request of a frame: a call to run, or an error to answer.
struct Call {
  // The "id" member is absent and the request is valid: never answered, not
  // even with an error. JSON-RPC: always false when `error` is set (an
  // invalid request is answered with id null even if it had no id);
  // MessagePack-RPC: a notification ([2, ...]) is never answered at all.
  bool notification = false;
  Value id;                       // echoed back; null when absent or invalid
  std::string method;             // empty when `error` is set
  Value params;                   // object, array, or null (absent or null)
  std::optional<RpcError> error;  // set: answer with this error instead of running
};

// One frame from a client (a JSON-RPC line).
struct Line {
  bool batch = false;  // answer with one batch of all answers (Codec::batch)
  std::vector<Call> calls;
  std::optional<RpcError> error;  // parse error or empty batch: answer ONE error with id null
};

// A wire protocol: frames in, answers out. Stateless; one instance serves
// every connection that speaks it.
class Codec {
 public:
  virtual ~Codec() = default;
  // A frame that is empty or only whitespace yields no calls and no error.
  virtual Line decode(std::string_view frame) const = 0;
  // Each returns one complete frame without its terminator.
  virtual std::string result(const Value& id, const Value& result) const = 0;
  virtual std::string error(const Value& id, const RpcError& err) const = 0;
  // The answers of a batch as one frame; "" when there are none (a batch of
  // notifications only gets no answer at all).
  virtual std::string batch(const std::vector<std::string>& members) const = 0;
  // Appends one chunk of a streaming call (execute_stream), before its
  // answer, as a complete frame without its terminator: JSON-RPC sends a
  // result with the call's id, MessagePack-RPC a "stream" notification
  // naming it. Written where it goes (the connection's buffer): a chunk's
  // bytes are copied once.
  virtual void chunk(std::string& out, const Value& id, const Value& v) const = 0;
  // What follows each frame on the wire: a newline for JSON-RPC's lines,
  // nothing for MessagePack (its frames end themselves).
  virtual std::string_view terminator() const = 0;
  // The dialect carries bytes (MessagePack's bin): output comes as Bytes
  // unless the call asked for an encoding.
  virtual bool carries_bytes() const { return false; }
};

}  // namespace sp::rpc
