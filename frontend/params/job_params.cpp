// Params of the detached-job methods (job_submit, job_status, ...).

#include <algorithm>
#include <cmath>

#include "common/signals.h"
#include "common/text.h"
#include "frontend/names.h"
#include "frontend/params/readers.h"

namespace sp::rpc {

using namespace detail;

namespace {

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

}  // namespace

Parsed<JobSubmitParams> parse_job_submit_params(const Value& params) {
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
    shm::PlanKind kind = strategy == "chain"      ? shm::PlanKind::kChain
                         : strategy == "parallel" ? shm::PlanKind::kParallel
                         : strategy == "dag"      ? shm::PlanKind::kDag
                                                  : shm::PlanKind::kNotAPlan;
    if (kind == shm::PlanKind::kNotAPlan)
      return bad_params("\"strategy\" must be \"chain\", \"parallel\" or \"dag\"");
    auto plan = parse_plan_params(kind, params);
    if (auto* e = std::get_if<RpcError>(&plan)) return *e;
    p.plan = std::move(std::get<PlanParams>(plan));
  }
  if (auto e = read_job_id(obj, false, p.job_id)) return *e;
  if (auto e = check_new_job_id(p.job_id)) return *e;
  return p;
}

Parsed<std::string> parse_job_id_param(const Value& params) {
  std::string id;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_job_id(obj, true, id)) return *e;
  return id;
}

Parsed<JobWaitParams> parse_job_wait_params(const Value& params) {
  JobWaitParams p;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_job_id(obj, true, p.job_id)) return *e;
  if (auto e = read_seconds(obj, "timeout", false, p.timeout_s)) return *e;
  if (auto e = read_byte_count(obj, "max_output_bytes", p.max_output_bytes)) return *e;
  if (auto e = read_encoding(obj, "output_encoding", p.encoding)) return *e;
  return p;
}

Parsed<JobOutputParams> parse_job_output_params(const Value& params) {
  JobOutputParams p;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_job_id(obj, true, p.job_id)) return *e;
  if (auto e = read_stream_view(obj, p.stream)) return *e;
  std::optional<uint64_t> n;
  if (auto e = read_byte_count(obj, "cursor", n)) return *e;
  p.cursor = n.value_or(0);
  if (auto e = read_bounded(obj, "max_bytes", kMaxOutputRead, p.max_bytes)) return *e;
  if (auto e = read_encoding(obj, "output_encoding", p.encoding)) return *e;
  if (auto e = read_seconds(obj, "wait", false, p.wait_s)) return *e;
  return p;
}

Parsed<JobSignalParams> parse_job_signal_params(const Value& params, bool signal_required) {
  JobSignalParams p;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_job_id(obj, true, p.job_id)) return *e;
  if (auto e = read_signal(obj, "signal", signal_required, p.signal)) return *e;
  if (!signal_required)
    if (auto e = read_byte_count(obj, "grace_ms", p.grace_ms)) return *e;
  if (signal_required)
    if (const Value* v = field(obj, "target")) {
      if (!v->is_string() || (v->get_string() != "group" && v->get_string() != "foreground"))
        return bad_params("\"target\" must be \"foreground\" or \"group\"");
      p.foreground = v->get_string() == "foreground";
    }
  return p;
}

Parsed<JobListParams> parse_job_list_params(const Value& params) {
  JobListParams p;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_string(obj, "state", kOptional, p.state)) return *e;
  if (!p.state.empty() &&
      std::find(std::begin(frontend::kStateNames), std::end(frontend::kStateNames), p.state) ==
          std::end(frontend::kStateNames)) {
    std::string names;
    for (std::string_view st : frontend::kStateNames)
      names += (names.empty() ? "" : ", ") + std::string(st);
    return bad_params("\"state\" must be one of " + names);
  }
  if (auto e = read_string(obj, "session_id", kOptional, p.session_id)) return *e;
  return p;
}

Parsed<StdinWriteParams> parse_stdin_write_params(const Value& params) {
  StdinWriteParams p;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_job_id(obj, true, p.job_id)) return *e;
  OutputEncoding enc = OutputEncoding::kUnset;
  std::optional<std::string> data;
  if (auto e = read_bytes(obj, "data", "encoding", data, enc)) return *e;
  p.data = std::move(data).value_or(std::string());
  if (auto e = read_byte_count(obj, "offset", p.offset)) return *e;
  if (auto e = read_bool(obj, "eof", p.eof)) return *e;
  return p;
}

Parsed<ShellOpenParams> parse_shell_open_params(const Value& params) {
  ShellOpenParams p;
  ExecParams& e = p.job.exec;
  Obj obj;
  if (auto err = params_object(params, obj)) return *err;
  if (auto err = read_string(obj, "shell", kNonEmpty, e.command)) return *err;
  p.shell_given = !e.command.empty();
  e.shell = false;
  e.args = {"-i"};
  e.stdin_open = true;
  e.pty.emplace();
  if (auto err = read_term_size(obj, "rows", e.pty->rows)) return *err;
  if (auto err = read_term_size(obj, "cols", e.pty->cols)) return *err;
  if (auto err = read_string(obj, "term", kNonEmpty, e.pty->term)) return *err;
  if (auto err = read_env(obj, "env", e.env)) return *err;
  if (auto err = read_string(obj, "working_dir", kOptional, e.working_dir)) return *err;
  if (auto err = read_string(obj, "session_id", kOptional, e.session_id)) return *err;
  if (auto err = read_secrets(obj, e.secrets, e.env)) return *err;
  if (auto err = read_byte_count(obj, "kill_grace_ms", e.kill_grace_ms)) return *err;
  if (auto err = read_job_id(obj, false, p.job.job_id)) return *err;
  if (auto err = check_new_job_id(p.job.job_id)) return *err;
  return p;
}

Parsed<JobInteractParams> parse_job_interact_params(const Value& params) {
  JobInteractParams p;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_job_id(obj, true, p.job_id)) return *e;
  std::optional<std::string> input;
  if (auto e = read_bytes(obj, "input", "encoding", input, p.encoding)) return *e;
  p.input = std::move(input).value_or(std::string());
  if (auto e = read_encoding(obj, "output_encoding", p.encoding)) return *e;
  std::optional<uint64_t> n;
  if (auto e = read_byte_count(obj, "cursor", n)) return *e;
  if (!n)
    return bad_params("\"cursor\" is required (0 at first, then the last answer's next_cursor)");
  p.cursor = *n;
  for (auto [key, out] : {std::pair{"idle_ms", &p.idle_ms}, std::pair{"wait_ms", &p.wait_ms}}) {
    n.reset();
    if (auto e = read_byte_count(obj, key, n)) return *e;
    if (n && *n > kMaxInteractWaitMs)
      return bad_params(quoted(key) + " must be 0.." + std::to_string(kMaxInteractWaitMs));
    if (n) *out = *n;
  }
  n.reset();
  if (auto e = read_byte_count(obj, "max_bytes", n)) return *e;
  if (n && (*n < 1 || *n > kMaxOutputRead))
    return bad_params("\"max_bytes\" must be 1.." + std::to_string(kMaxOutputRead));
  if (n) p.max_bytes = *n;
  return p;
}

Parsed<StdinWriteParams> parse_stdin_close_params(const Value& params) {
  StdinWriteParams p;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_job_id(obj, true, p.job_id)) return *e;
  p.eof = true;
  return p;
}

Parsed<ResizeParams> parse_resize_params(const Value& params) {
  ResizeParams p;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_job_id(obj, true, p.job_id)) return *e;
  for (auto [key, out] : {std::pair{"rows", &p.rows}, {"cols", &p.cols}}) {
    if (!field(obj, key)) return bad_params(quoted(key) + " is required");
    if (auto e = read_term_size(obj, key, *out)) return *e;
  }
  return p;
}

}  // namespace sp::rpc
