#include "supervisor/config_check.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "common/log.h"
#include "frontend/params/params.h"
#include "shm/role_config.h"
#include "supervisor/listener.h"

namespace sp::supervisor {

void derive(Config& c) {
  c.caps.jobs_per_worker = c.jobs_per_worker();
  // Roles beat at least 4 times per hang timeout, so an idle one is never taken for hung.
  if (c.hang_timeout_s > 0)
    c.caps.tick_ms = uint32_t(std::clamp(c.hang_timeout_s * 1000 / 4, 10.0, 1000.0));
  c.role.log_level = int32_t(spdlog::level::from_str(c.log_level));
}

Status check(const Config& c) {
  // Defaults above their ceilings would refuse jobs for params they never sent.
  const shm::RoleConfig& role = c.role;
  if (role.max_timeout_s > 0 && role.default_timeout_s > role.max_timeout_s)
    return Error{0, "--default-timeout is above --max-timeout"};
  for (const auto& [name, field] : shm::kLimitNames)
    if (role.max_limits.*field && role.default_limits.*field > role.max_limits.*field)
      return Error{0, "--limit " + std::string(name) + " is above its --max-limit"};
  if (spdlog::level::from_str(c.log_level) == spdlog::level::off && c.log_level != "off")
    return Error{0, "--log-level " + c.log_level +
                        ": not one of trace, debug, info, warn, error, critical, off"};
  if (!c.metrics_listen.empty())
    if (auto a = parse_host_port(c.metrics_listen); !a) return a.error();
  return role_config(c).status();
}

namespace {

// --files-root made absolute and resolved; "" is the working directory.
Result<std::string> files_root(const std::string& flag) {
  std::string path = flag;
  if (path.empty()) {
    char cwd[PATH_MAX];
    if (::getcwd(cwd, sizeof cwd) == nullptr)
      return Error{errno, "--files-root: the working directory"};
    path = cwd;
  }
  char real[PATH_MAX];
  if (::realpath(path.c_str(), real) == nullptr) return Error{errno, "--files-root " + path};
  struct stat st {};
  if (::stat(real, &st) < 0) return Error{errno, "--files-root " + path};
  if (!S_ISDIR(st.st_mode)) return Error{ENOTDIR, "--files-root " + path};
  return std::string(real);
}

std::string home_file(const char* rel) {
  const char* home = ::getenv("HOME");
  return home && *home ? std::string(home) + "/" + rel : "";
}

std::string known_hosts_file(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* state = ::getenv("STATE_DIRECTORY"); state && *state) {
    std::string dir(state);
    return dir.substr(0, dir.find(':')) + "/known_hosts";  // the first of several
  }
  return home_file(".ssh/shell-pool_known_hosts");
}

std::string user_known_hosts_file(const std::string& flag) {
  if (flag == "none") return "";
  return flag.empty() ? home_file(".ssh/known_hosts") : flag;
}

}  // namespace

Result<shm::RoleConfig> role_config(const Config& c) {
  shm::RoleConfig r = c.role;
  if (Status st = shm::set_env_pass(r, c.env_pass); !st) return st.error();
  if (Status st = shm::set_allow_uids(r, c.allow_uids); !st) return st.error();
  auto root = files_root(c.files_root);
  if (!root) return root.error();
  if (Status st = shm::set_files_root(r, *root); !st) return st.error();
  for (const std::string& spec : c.hosts)
    if (auto parsed = rpc::parse_host_spec(spec); auto* e = std::get_if<rpc::RpcError>(&parsed))
      return Error{EINVAL, "--host: " + e->message.substr(e->message.find(": ") + 2)};
  if (Status st = shm::set_hosts(r, c.hosts); !st) return st.error();
  if (Status st = shm::set_known_hosts(r, known_hosts_file(c.known_hosts),
                                       user_known_hosts_file(c.user_known_hosts));
      !st)
    return st.error();
  return r;
}

std::vector<std::string> restart_required(const Config& running, const Config& next) {
  std::vector<std::string> flags;
  auto differs = [&](bool changed, const char* flag) {
    if (changed) flags.emplace_back(flag);
  };
  const shm::Capacities &a = running.caps, &b = next.caps;
  differs(running.socket_path != next.socket_path, "--socket");
  differs(a.job_slots != b.job_slots, "--queue-size");
  differs(a.input_bytes != b.input_bytes, "--input-buffer");
  differs(a.output_bytes != b.output_bytes, "--output-buffer");
  differs(a.output_rings != b.output_rings, "--output-rings");
  differs(a.spec_bytes != b.spec_bytes, "--spec-bytes");
  differs(a.session_slots != b.session_slots, "--sessions");
  differs(a.session_env_bytes != b.session_env_bytes, "--session-env-bytes");
  differs(a.job_records != b.job_records, "--retain-jobs");
  differs(a.service_slots != b.service_slots, "--services");
  differs(a.services_per_session != b.services_per_session, "--services-per-session");
  differs(a.service_spec_bytes != b.service_spec_bytes, "--service-spec-bytes");
  differs(a.spool_bytes != b.spool_bytes, "--spool-bytes");
  differs(a.host_slots != b.host_slots, "--hosts");
  differs(a.remote_jobs != b.remote_jobs, "--remote-jobs");
  differs(running.known_hosts != next.known_hosts, "--known-hosts");
  differs(running.user_known_hosts != next.user_known_hosts, "--user-known-hosts");
  differs(running.hang_timeout_s != next.hang_timeout_s, "--hang-timeout");
  differs(running.spool_dir != next.spool_dir, "--spool-dir");
  differs(running.cgroups != next.cgroups, "--cgroups");
  differs(running.env_pass != next.env_pass, "--env-pass");
  differs(running.log_format != next.log_format, "--log-format");
  differs(running.metrics_listen != next.metrics_listen, "--metrics-listen");
  return flags;
}

}  // namespace sp::supervisor
