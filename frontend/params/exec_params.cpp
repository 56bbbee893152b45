// Params of execute / execute_stream (and every step of a plan) and of the
// session methods.
#include "frontend/params/readers.h"

namespace sp::rpc {

using namespace detail;

namespace {

// "host", or "hosts" with "max_parallel" and "fail_fast" (fan-out).
std::optional<RpcError> read_hosts(Obj obj, ExecParams& p) {
  if (auto e = read_string(obj, "host", kOptional, p.host)) return e;
  if (auto e = read_string_array(obj, "hosts", p.hosts)) return e;
  if (field(obj, "hosts") && p.hosts.empty()) return bad_params("\"hosts\" must not be empty");
  if (!p.host.empty() && !p.hosts.empty())
    return bad_params("give \"host\" or \"hosts\", not both");
  if (p.hosts.size() > kMaxFanOutHosts)
    return bad_params("\"hosts\" takes at most " + std::to_string(kMaxFanOutHosts) + " names");
  for (size_t i = 0; i < p.hosts.size(); ++i) {
    if (p.hosts[i].empty()) return bad_params("\"hosts\" holds an empty name");
    for (size_t j = 0; j < i; ++j)
      if (p.hosts[j] == p.hosts[i])
        return bad_params("\"hosts\" names " + quoted_key(p.hosts[i]) + " twice");
  }
  uint64_t max_parallel = 0;
  if (auto e = read_bounded(obj, "max_parallel", kMaxFanOutHosts, max_parallel)) return e;
  p.max_parallel = uint32_t(max_parallel);
  if (auto e = read_bool(obj, "fail_fast", p.fail_fast)) return e;
  if (p.hosts.empty() && (field(obj, "max_parallel") || field(obj, "fail_fast")) && !p.host.empty())
    return bad_params("\"max_parallel\" and \"fail_fast\" go with \"hosts\"");
  return std::nullopt;
}

}  // namespace

Parsed<ExecParams> parse_exec_params(const Value& params) {
  ExecParams p;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_string(obj, "command", kRequired | kNonEmpty, p.command)) return *e;
  if (auto e = read_string_array(obj, "args", p.args)) return *e;
  p.shell = p.args.empty();
  if (auto e = read_bool(obj, "shell", p.shell)) return *e;
  if (auto e = read_seconds(obj, "timeout", true, p.timeout_s)) return *e;
  if (auto e = read_string(obj, "working_dir", kOptional, p.working_dir)) return *e;
  if (auto e = read_string(obj, "session_id", kOptional, p.session_id)) return *e;
  if (auto e = read_env(obj, "env", p.env)) return *e;
  if (auto e = read_encoding(obj, "output_encoding", p.encoding)) return *e;
  if (auto e = read_byte_count(obj, "max_output_bytes", p.max_output_bytes)) return *e;
  if (auto e = read_byte_count(obj, "kill_grace_ms", p.kill_grace_ms)) return *e;
  if (auto e = read_limits(obj, p.limits)) return *e;
  if (auto e = read_output_policy(obj, p.kill_on_output_cap)) return *e;
  if (auto e = read_stdin(obj, p.stdin_data, p.stdin_open)) return *e;
  if (auto e = read_pty(obj, p.pty)) return *e;
  if (auto e = read_secrets(obj, p.secrets, p.env)) return *e;
  std::optional<uint64_t> heartbeat;
  if (auto e = read_byte_count(obj, "heartbeat_ms", heartbeat)) return *e;
  if (heartbeat && *heartbeat > 3'600'000) return bad_params("\"heartbeat_ms\" must be 0..3600000");
  p.heartbeat_ms = heartbeat.value_or(0);
  if (auto e = read_hosts(obj, p)) return *e;
  return p;
}

Parsed<SessionCreateParams> parse_session_create_params(const Value& params) {
  SessionCreateParams p;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_string(obj, "name", kOptional, p.name)) return *e;
  if (auto e = read_env(obj, "env_vars", p.env_vars)) return *e;
  if (auto e = read_secrets(obj, p.secrets, p.env_vars)) return *e;
  return p;
}

Parsed<std::string> parse_session_id_param(const Value& params) {
  std::string id;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_string(obj, "session_id", kRequired | kNonEmpty, id)) return *e;
  return id;
}

}  // namespace sp::rpc
