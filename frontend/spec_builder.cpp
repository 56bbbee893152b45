#include "frontend/spec_builder.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "common/redactor.h"
#include "frontend/env.h"

namespace sp::frontend {

namespace {

constexpr double kMaxTimeoutS = 1e9;         // ~31 years: effectively none, and no overflow
constexpr uint64_t kMaxGraceMs = 3'600'000;  // a kill grace beyond an hour is taken as an hour

// The job's limits and timeout: what it asks for, else the daemon's default,
// else the daemon's ceiling; more than the ceiling is refused.
std::optional<SubmitError> effective_limits(const shm::RoleConfig& o, const rpc::ExecParams& p,
                                            shm::Rlimits& limits, uint64_t& timeout_ms) {
  for (const auto& [name, field] : shm::kLimitNames) {
    uint64_t ceiling = o.max_limits.*field;
    uint64_t v = p.limits.*field;
    if (v && ceiling && v > ceiling)
      return SubmitError{SubmitError::kAboveCeiling,
                         "\"" + std::string(name) + "\" in \"limits\" is " + std::to_string(v) +
                             ", above the daemon's ceiling of " + std::to_string(ceiling)};
    if (!v) v = o.default_limits.*field ? o.default_limits.*field : ceiling;
    limits.*field = v;
  }
  if (p.limits.memory_bytes && o.isolation == shm::Isolation::kProcessGroup)
    return SubmitError{SubmitError::kAboveCeiling,
                       "\"memory_bytes\" in \"limits\" needs per-job cgroups, which this daemon "
                       "does not have: " +
                           std::string(o.isolation_note)};
  double timeout_s = p.timeout_s.value_or(o.default_timeout_s);
  if (o.max_timeout_s > 0) {
    if (timeout_s > o.max_timeout_s)
      return SubmitError{SubmitError::kAboveCeiling,
                         "\"timeout\" is above the daemon's ceiling of " +
                             fmt::format("{:g}", o.max_timeout_s) + " s"};
    if (timeout_s <= 0) timeout_s = o.max_timeout_s;
  }
  timeout_ms = timeout_s > 0 ? uint64_t(std::ceil(std::min(timeout_s, kMaxTimeoutS) * 1e3)) : 0;
  return std::nullopt;
}

}  // namespace

std::variant<shm::SpecInput, SubmitError> SpecBuilder::build(const rpc::ExecParams& p,
                                                             const shm::SessionEnv* session,
                                                             bool remote) {
  static const EnvPairs kNone;
  EnvPairs terminal;  // TERM for a PTY job; the session's and the request's env win
  if (p.pty) terminal.emplace_back("TERM", p.pty->term);
  merge_env(env_strings_, remote ? kNone : base_env_,
            {&terminal, session ? &session->env : &kNone, &p.env});
  env_views_.assign(env_strings_.begin(), env_strings_.end());

  argv_views_.clear();
  std::string_view path;
  if (p.shell) {
    path = "/bin/sh";
    argv_views_ = {"sh", "-c", p.command};
    if (!p.args.empty()) argv_views_.push_back("sh");  // $0; args become $1...
  } else {
    path = p.command;
    argv_views_.push_back(p.command);
  }
  for (const std::string& a : p.args) argv_views_.push_back(a);

  shm::SpecInput in{path, argv_views_, env_views_, p.working_dir, 0, 0, {}, 0, 0, {}};
  if (auto e = effective_limits(o_, p, in.limits, in.timeout_ms)) return *e;
  if (remote) {
    // Limits, cgroups and terminals are this machine's: a host gets none.
    for (const auto& [name, field] : shm::kLimitNames)
      if (p.limits.*field)
        return SubmitError{SubmitError::kAboveCeiling,
                           "\"limits\" do not apply to a job on a remote host"};
    if (p.pty)
      return SubmitError{SubmitError::kAboveCeiling, "\"pty\" is not available on a remote host"};
    in.limits = {};
  }
  in.kill_grace_ms =
      uint32_t(std::min<uint64_t>(p.kill_grace_ms.value_or(o_.kill_grace_ms), kMaxGraceMs));
  if (p.pty) {
    in.pty_rows = p.pty->rows;
    in.pty_cols = p.pty->cols;
  }
  secret_views_.assign(p.secrets.begin(), p.secrets.end());
  if (session)
    secret_views_.insert(secret_views_.end(), session->secrets.begin(), session->secrets.end());
  if (secret_views_.size() > kMaxSecrets)
    return SubmitError{SubmitError::kTooLarge,
                       std::to_string(secret_views_.size()) +
                           " secrets with the session's; a job takes at most " +
                           std::to_string(kMaxSecrets)};
  in.secrets = secret_views_;
  return in;
}

}  // namespace sp::frontend
