// Params of the service methods (service_start, ..., service_logs).

#include <algorithm>

#include "frontend/codec/json_codec.h"
#include "frontend/params/readers.h"

namespace sp::rpc {

using namespace detail;

namespace {

bool service_name_ok(std::string_view s) {
  if (s.empty() || s.size() > kMaxServiceNameBytes) return false;
  auto alnum = [](unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!alnum(s[0])) return false;
  return std::all_of(s.begin(), s.end(),
                     [&](unsigned char c) { return alnum(c) || c == '.' || c == '_' || c == '-'; });
}

std::optional<RpcError> read_name(Obj obj, std::string& out) {
  if (auto e = read_string(obj, "name", kRequired | kNonEmpty, out)) return e;
  if (!service_name_ok(out))
    return bad_params(
        "\"name\" must be 1..64 characters of A-Z, a-z, 0-9, '.', '_' and '-', starting with a "
        "letter or digit");
  return std::nullopt;
}

// A number of milliseconds 0..kMaxServiceMs at `key` of `obj` (in `where`).
std::optional<RpcError> read_ms(Obj obj, std::string_view key, uint64_t& out,
                                std::string_view where) {
  std::optional<uint64_t> n;
  if (auto e = read_byte_count(obj, key, n, where)) return e;
  if (!n) return std::nullopt;
  if (*n > kMaxServiceMs)
    return bad_params(quoted(key) + std::string(where) + " must be 0.." +
                      std::to_string(kMaxServiceMs));
  out = *n;
  return std::nullopt;
}

// The object at `key`, or nullptr when absent; an error when not an object.
std::optional<RpcError> sub_object(Obj obj, std::string_view key, Obj& out) {
  out = nullptr;
  const Value* v = field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_object()) return bad_params(quoted(key) + " must be an object");
  out = &v->get_object();
  return std::nullopt;
}

// A command as execute takes it ("command", "args", "shell", ...); with
// "args" alone, args[0] is the program.
Parsed<ExecParams> read_command(const Object& o) {
  const Value* command = o.if_contains("command");
  const Value* args = o.if_contains("args");
  if ((command == nullptr || command->is_null()) && args && args->is_array() &&
      !args->get_array().empty()) {
    Object copy = o;
    Array rest = args->get_array();
    copy["command"] = rest.front();
    rest.erase(rest.begin());
    copy["args"] = std::move(rest);
    if (!copy.if_contains("shell")) copy["shell"] = false;
    return parse_exec_params(Value(std::move(copy)));
  }
  return parse_exec_params(Value(o));
}

std::optional<RpcError> read_restart(Obj obj, RestartParams& r) {
  Obj o;
  if (auto e = sub_object(obj, "restart", o)) return e;
  if (!o) return std::nullopt;
  const char* in = " in \"restart\"";
  std::string policy;
  if (auto e = read_string(o, "policy", kOptional, policy)) return within(*e, "\"restart\"");
  if (policy == "never") {
    r.policy = RestartPolicy::kNever;
  } else if (policy == "always") {
    r.policy = RestartPolicy::kAlways;
  } else if (policy.empty() || policy == "on-failure") {
    r.policy = RestartPolicy::kOnFailure;
  } else {
    return bad_params("\"policy\" in \"restart\" must be \"never\", \"on-failure\" or \"always\"");
  }
  if (auto e = read_ms(o, "backoff_ms", r.backoff_ms, in)) return e;
  if (auto e = read_ms(o, "backoff_max_ms", r.backoff_max_ms, in)) return e;
  r.backoff_max_ms = std::max(r.backoff_max_ms, r.backoff_ms);
  if (auto e = read_ms(o, "window_ms", r.window_ms, in)) return e;
  std::optional<uint64_t> n;
  if (auto e = read_byte_count(o, "max_restarts", n, in)) return e;
  if (n && *n > shm::kMaxServiceRestarts)
    return bad_params("\"max_restarts\" in \"restart\" must be 0.." +
                      std::to_string(shm::kMaxServiceRestarts));
  if (n) r.max_restarts = uint32_t(*n);
  return std::nullopt;
}

std::optional<RpcError> read_readiness(Obj obj, ReadinessParams& r) {
  Obj o;
  if (auto e = sub_object(obj, "readiness", o)) return e;
  if (!o) return std::nullopt;
  const char* in = " in \"readiness\"";
  int kinds = 0;
  Obj k;
  if (auto e = sub_object(o, "tcp", k)) return within(*e, "\"readiness\"");
  if (k) {
    ++kinds;
    r.kind = ProbeKind::kTcp;
    std::optional<uint64_t> port;
    if (auto e = read_byte_count(k, "port", port, " in \"readiness.tcp\"")) return e;
    if (!port || *port < 1 || *port > 65535)
      return bad_params("\"port\" in \"readiness.tcp\" must be 1..65535");
    r.port = uint16_t(*port);
    if (auto e = read_string(k, "host", kNonEmpty, r.host)) return within(*e, "\"readiness.tcp\"");
  }
  if (auto e = sub_object(o, "http", k)) return within(*e, "\"readiness\"");
  if (k) {
    ++kinds;
    r.kind = ProbeKind::kHttp;
    if (auto e = read_string(k, "url", kRequired | kNonEmpty, r.url))
      return within(*e, "\"readiness.http\"");
    if (r.url.rfind("http://", 0) != 0)
      return bad_params(
          "\"url\" in \"readiness.http\" must start with http:// (https is not "
          "probed; probe its port with \"tcp\")");
    std::optional<uint64_t> status;
    if (auto e = read_byte_count(k, "status", status, " in \"readiness.http\"")) return e;
    if (status && (*status < 100 || *status > 599))
      return bad_params("\"status\" in \"readiness.http\" must be 100..599");
    r.status = unsigned(status.value_or(0));
  }
  if (auto e = sub_object(o, "file", k)) return within(*e, "\"readiness\"");
  if (k) {
    ++kinds;
    r.kind = ProbeKind::kFile;
    if (auto e = read_string(k, "path", kRequired | kNonEmpty, r.path))
      return within(*e, "\"readiness.file\"");
  }
  if (auto e = sub_object(o, "command", k)) return within(*e, "\"readiness\"");
  if (k) {
    ++kinds;
    r.kind = ProbeKind::kCommand;
    auto exec = read_command(*k);
    if (auto* e = std::get_if<RpcError>(&exec)) return within(*e, "\"readiness.command\"");
    r.command = std::move(std::get<ExecParams>(exec));
  }
  if (kinds != 1)
    return bad_params(
        "\"readiness\" must hold exactly one of \"tcp\", \"http\", \"file\" and \"command\"");
  if (auto e = read_ms(o, "initial_delay_ms", r.initial_delay_ms, in)) return e;
  if (auto e = read_ms(o, "period_ms", r.period_ms, in)) return e;
  if (auto e = read_ms(o, "timeout_ms", r.timeout_ms, in)) return e;
  if (auto e = read_ms(o, "start_period_ms", r.start_period_ms, in)) return e;
  if (r.period_ms < 50) return bad_params("\"period_ms\" in \"readiness\" must be at least 50");
  if (r.timeout_ms < 10) return bad_params("\"timeout_ms\" in \"readiness\" must be at least 10");
  if (r.start_period_ms <= r.initial_delay_ms)
    return bad_params(
        "\"start_period_ms\" in \"readiness\" must be longer than \"initial_delay_ms\": a "
        "generation not ready within it is stopped");
  return std::nullopt;
}

// `v` with every object's members sorted by key (then by value text).
Value canonical(const Value& v) {
  if (v.is_array()) {
    Array a;
    for (const Value& e : v.get_array()) a.push_back(canonical(e));
    return a;
  }
  if (!v.is_object()) return v;
  std::vector<std::pair<std::string, Value>> members;
  for (const auto& [k, e] : v.get_object()) members.emplace_back(k, canonical(e));
  std::stable_sort(members.begin(), members.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  Object o;
  for (auto& [k, e] : members) o.emplace_back(std::move(k), std::move(e));
  return o;
}

Parsed<ServiceSpec> read_spec(const Value& params) {
  ServiceSpec s;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (!obj) return bad_params("\"name\" and \"command\" are required");
  if (auto e = read_name(obj, s.name)) return *e;
  auto exec = read_command(*obj);
  if (auto* e = std::get_if<RpcError>(&exec)) return *e;
  s.exec = std::move(std::get<ExecParams>(exec));
  if (s.exec.stdin_data || s.exec.stdin_open || s.exec.pty)
    return bad_params("a service takes no \"stdin\", \"stdin_open\" or \"pty\"");
  // Its probes and stop run here: a service on a remote host is not one yet.
  if (!s.exec.host.empty() || !s.exec.hosts.empty())
    return bad_params("a service runs on this machine: it takes no \"host\" or \"hosts\"");
  if (auto e = read_restart(obj, s.restart)) return *e;
  if (auto e = read_readiness(obj, s.readiness)) return *e;
  Obj stop;
  if (auto e = sub_object(obj, "stop", stop)) return *e;
  if (stop) {
    if (auto e = read_signal(stop, "signal", false, s.stop_signal)) return within(*e, "\"stop\"");
    if (auto e = read_ms(stop, "grace_ms", s.stop_grace_ms, " in \"stop\"")) return *e;
  }
  std::optional<uint64_t> log;
  if (auto e = read_byte_count(obj, "log_bytes", log)) return *e;
  if (log && (*log < kMinServiceLogBytes || *log > kMaxServiceLogBytes))
    return bad_params("\"log_bytes\" must be " + std::to_string(kMinServiceLogBytes) + ".." +
                      std::to_string(kMaxServiceLogBytes));
  s.log_bytes = log.value_or(kDefaultServiceLogBytes);
  return s;
}

}  // namespace

Parsed<ServiceStartParams> parse_service_start_params(const Value& params) {
  ServiceStartParams p;
  auto spec = read_spec(params);
  if (auto* e = std::get_if<RpcError>(&spec)) return *e;
  p.spec = std::move(std::get<ServiceSpec>(spec));
  const Object& obj = params.get_object();  // read_spec checked it is one
  if (const Value* w = obj.if_contains("wait_ready"); w && !w->is_null()) {
    if (w->is_bool()) {
      if (w->get_bool()) p.wait_ready_s = -1;  // until it is ready or can no longer be
    } else {
      Object one{{"wait_ready", *w}};
      if (auto e = read_seconds(&one, "wait_ready", false, p.wait_ready_s)) return *e;
    }
  }
  Object kept = obj;
  kept.erase("wait_ready");
  append_value(p.spec_json, canonical(Value(std::move(kept))));
  return p;
}

Parsed<ServiceSpec> parse_service_spec(std::string_view spec_json) {
  std::string why;
  auto v = parse_value(spec_json, &why);
  if (!v) return bad_params("the service's spec kept in shared memory is damaged: " + why);
  return read_spec(*v);
}

Parsed<std::string> parse_service_name_param(const Value& params) {
  std::string name;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_name(obj, name)) return *e;
  return name;
}

Parsed<ServiceRestartParams> parse_service_restart_params(const Value& params) {
  ServiceRestartParams p;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_name(obj, p.name)) return *e;
  if (const Value* spec = field(obj, "spec")) {
    if (!spec->is_object()) return bad_params("\"spec\" must be an object");
    Object with_name = spec->get_object();
    if (const Value* n = with_name.if_contains("name");
        n && !(n->is_string() && n->get_string() == p.name))
      return bad_params("\"name\" in \"spec\" must be the service's own (or absent)");
    with_name["name"] = p.name;
    auto start = parse_service_start_params(Value(std::move(with_name)));
    if (auto* e = std::get_if<RpcError>(&start)) return within(*e, "\"spec\"");
    p.spec = std::move(std::get<ServiceStartParams>(start));
  }
  return p;
}

Parsed<ServiceWaitParams> parse_service_wait_params(const Value& params) {
  ServiceWaitParams p;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_name(obj, p.name)) return *e;
  std::string until;
  if (auto e = read_string(obj, "until", kRequired, until)) return *e;
  if (until == "ready") {
    p.until = ServiceUntil::kReady;
  } else if (until == "stopped") {
    p.until = ServiceUntil::kStopped;
  } else if (until == "exited") {
    p.until = ServiceUntil::kExited;
  } else if (until == "failed") {
    p.until = ServiceUntil::kFailed;
  } else {
    return bad_params("\"until\" must be \"ready\", \"stopped\", \"exited\" or \"failed\"");
  }
  if (auto e = read_seconds(obj, "timeout", false, p.timeout_s)) return *e;
  return p;
}

Parsed<ServiceLogsParams> parse_service_logs_params(const Value& params) {
  ServiceLogsParams p;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_name(obj, p.name)) return *e;
  if (auto e = read_byte_count(obj, "cursor", p.cursor)) return *e;
  if (auto e = read_byte_count(obj, "tail_bytes", p.tail_bytes)) return *e;
  if (auto e = read_bounded(obj, "max_bytes", kMaxOutputRead, p.max_bytes)) return *e;
  if (auto e = read_seconds(obj, "wait", false, p.wait_s)) return *e;
  if (auto e = read_stream_view(obj, p.stream)) return *e;
  if (auto e = read_encoding(obj, "output_encoding", p.encoding)) return *e;
  return p;
}

}  // namespace sp::rpc
