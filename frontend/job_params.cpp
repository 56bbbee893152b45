// Params of the detached-job methods (job_submit, job_status, ...).
#include <signal.h>
#include <string.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>

#include "frontend/param_readers.h"
#include "frontend/protocol.h"

namespace sp::rpc {

namespace json = boost::json;
using namespace detail;

namespace {

constexpr std::string_view kJobStates[] = {"waiting",   "queued", "running", "exited", "timed_out",
                                           "cancelled", "failed", "lost",    "skipped"};

std::optional<RpcError> read_job_id(Obj obj, bool required, std::string& out) {
  if (auto e = read_string(obj, "job_id", required ? kRequired | kNonEmpty : kNonEmpty, out))
    return e;
  // A plan's step is "<plan id>/<name>", each part up to kMaxJobIdBytes.
  size_t slash = out.find('/');
  size_t longest =
      slash == std::string::npos ? out.size() : std::max(slash, out.size() - slash - 1);
  if (longest > kMaxJobIdBytes)
    return bad_params("\"job_id\" is longer than " + std::to_string(kMaxJobIdBytes) +
                      " bytes (a plan's step: each side of its '/')");
  return std::nullopt;
}

// A client-chosen id for job_submit: see kMaxJobIdBytes.
std::optional<RpcError> check_new_job_id(const std::string& id) {
  if (id.empty()) return std::nullopt;
  if (id.size() > kMaxJobIdBytes)
    return bad_params("\"job_id\" is longer than " + std::to_string(kMaxJobIdBytes) + " bytes");
  if (!id_chars(id)) return bad_params("\"job_id\" may only hold letters, digits and . _ : -");
  if (id.find_first_not_of("0123456789") == std::string::npos)
    return bad_params(
        "\"job_id\" needs a character that is not a digit (numbers are the ids "
        "the daemon generates)");
  return std::nullopt;
}

// Seconds >= 0 (0: do not wait).
std::optional<RpcError> read_seconds(Obj obj, std::string_view key, std::optional<double>& out) {
  const json::value* v = field(obj, key);
  if (v == nullptr) return std::nullopt;
  double d = -1;
  if (v->is_int64()) {
    d = static_cast<double>(v->get_int64());
  } else if (v->is_uint64()) {
    d = static_cast<double>(v->get_uint64());
  } else if (v->is_double()) {
    d = v->get_double();
  }
  if (!(d >= 0) || !std::isfinite(d)) return bad_params(quoted(key) + " must be seconds >= 0");
  out = d;
  return std::nullopt;
}

std::optional<RpcError> read_signal(Obj obj, bool required, int& out) {
  const json::value* v = field(obj, "signal");
  if (v == nullptr) {
    if (required) return bad_params("\"signal\" is required");
    return std::nullopt;
  }
  if (v->is_int64() && v->get_int64() >= 1 && v->get_int64() <= 64) {
    out = int(v->get_int64());
    return std::nullopt;
  }
  if (v->is_string()) {
    std::string name(v->get_string().data(), v->get_string().size());
    for (char& ch : name) ch = char(std::toupper(static_cast<unsigned char>(ch)));
    if (name.rfind("SIG", 0) == 0) name.erase(0, 3);
    for (int sig = 1; sig <= 64; ++sig)
      if (const char* abbrev = sigabbrev_np(sig); abbrev && name == abbrev) {
        out = sig;
        return std::nullopt;
      }
  }
  return bad_params(
      "\"signal\" must be a signal name (\"TERM\", \"INT\", \"KILL\", \"HUP\", "
      "\"USR1\", ...) or a number 1..64");
}

}  // namespace

bool detail::id_chars(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           ch == '.' || ch == '_' || ch == ':' || ch == '-';
  });
}

Parsed<JobSubmitParams> parse_job_submit_params(const json::value& params,
                                                const std::optional<std::string>& duplicate_node) {
  try {
    JobSubmitParams p;
    Obj obj;
    if (auto e = params_object(params, obj)) return *e;
    std::string strategy;
    if (auto e = read_string(obj, "strategy", kNonEmpty, strategy)) return *e;
    if (strategy.empty()) {
      auto exec = parse_exec_params(params);
      if (auto* e = std::get_if<RpcError>(&exec)) return *e;
      p.exec = std::move(std::get<ExecParams>(exec));
    } else {
      PlanKind kind = strategy == "chain"      ? PlanKind::kChain
                      : strategy == "parallel" ? PlanKind::kParallel
                      : strategy == "dag"      ? PlanKind::kDag
                                               : PlanKind{};
      if (kind == PlanKind{})
        return bad_params("\"strategy\" must be \"chain\", \"parallel\" or \"dag\"");
      auto plan = parse_plan_params(kind, params, duplicate_node);
      if (auto* e = std::get_if<RpcError>(&plan)) return *e;
      p.plan = std::move(std::get<PlanParams>(plan));
    }
    if (auto e = read_job_id(obj, false, p.job_id)) return *e;
    if (auto e = check_new_job_id(p.job_id)) return *e;
    return p;
  } catch (const std::exception& e) {
    return internal_error(e);
  }
}

Parsed<std::string> parse_job_id_param(const json::value& params) {
  try {
    std::string id;
    Obj obj;
    if (auto e = params_object(params, obj)) return *e;
    if (auto e = read_job_id(obj, true, id)) return *e;
    return id;
  } catch (const std::exception& e) {
    return internal_error(e);
  }
}

Parsed<JobWaitParams> parse_job_wait_params(const json::value& params) {
  try {
    JobWaitParams p;
    Obj obj;
    if (auto e = params_object(params, obj)) return *e;
    if (auto e = read_job_id(obj, true, p.job_id)) return *e;
    if (auto e = read_seconds(obj, "timeout", p.timeout_s)) return *e;
    if (auto e = read_byte_count(obj, "max_output_bytes", p.max_output_bytes)) return *e;
    if (auto e = read_encoding(obj, p.base64)) return *e;
    return p;
  } catch (const std::exception& e) {
    return internal_error(e);
  }
}

Parsed<JobOutputParams> parse_job_output_params(const json::value& params) {
  try {
    JobOutputParams p;
    Obj obj;
    if (auto e = params_object(params, obj)) return *e;
    if (auto e = read_job_id(obj, true, p.job_id)) return *e;
    std::string stream = "both";
    if (auto e = read_string(obj, "stream", kOptional, stream)) return *e;
    if (stream == "stdout") {
      p.stream = OutputStream::kStdout;
    } else if (stream == "stderr") {
      p.stream = OutputStream::kStderr;
    } else if (stream == "both") {
      p.stream = OutputStream::kBoth;
    } else {
      return bad_params("\"stream\" must be \"stdout\", \"stderr\" or \"both\"");
    }
    std::optional<uint64_t> n;
    if (auto e = read_byte_count(obj, "cursor", n)) return *e;
    p.cursor = n.value_or(0);
    n.reset();
    if (auto e = read_byte_count(obj, "max_bytes", n)) return *e;
    if (n && (*n < 1 || *n > kMaxOutputRead))
      return bad_params("\"max_bytes\" must be 1.." + std::to_string(kMaxOutputRead));
    if (n) p.max_bytes = *n;
    if (auto e = read_encoding(obj, p.base64)) return *e;
    if (auto e = read_seconds(obj, "wait", p.wait_s)) return *e;
    return p;
  } catch (const std::exception& e) {
    return internal_error(e);
  }
}

Parsed<JobSignalParams> parse_job_signal_params(const json::value& params, bool signal_required) {
  try {
    JobSignalParams p;
    Obj obj;
    if (auto e = params_object(params, obj)) return *e;
    if (auto e = read_job_id(obj, true, p.job_id)) return *e;
    if (auto e = read_signal(obj, signal_required, p.signal)) return *e;
    if (!signal_required)
      if (auto e = read_byte_count(obj, "grace_ms", p.grace_ms)) return *e;
    return p;
  } catch (const std::exception& e) {
    return internal_error(e);
  }
}

Parsed<JobListParams> parse_job_list_params(const json::value& params) {
  try {
    JobListParams p;
    Obj obj;
    if (auto e = params_object(params, obj)) return *e;
    if (auto e = read_string(obj, "state", kOptional, p.state)) return *e;
    if (!p.state.empty() &&
        std::find(std::begin(kJobStates), std::end(kJobStates), p.state) == std::end(kJobStates)) {
      std::string names;
      for (std::string_view st : kJobStates) names += (names.empty() ? "" : ", ") + std::string(st);
      return bad_params("\"state\" must be one of " + names);
    }
    if (auto e = read_string(obj, "session_id", kOptional, p.session_id)) return *e;
    return p;
  } catch (const std::exception& e) {
    return internal_error(e);
  }
}

}  // namespace sp::rpc
