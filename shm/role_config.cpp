#include "shm/role_config.h"

#include <algorithm>
#include <atomic>
#include <cstring>

namespace sp::shm {

Status set_env_pass(RoleConfig& c, const std::vector<std::string>& names) {
  size_t at = 0;
  std::memset(c.env_pass, 0, sizeof c.env_pass);
  for (const std::string& name : names) {
    if (name.empty() || name.find('=') != std::string::npos || name.find('\0') != std::string::npos)
      return Error{0, "--env-pass " + name + ": not a variable name"};
    if (at + name.size() + 2 > sizeof c.env_pass)  // its NUL, and the empty name that ends the list
      return Error{0, "--env-pass names take more than " + std::to_string(sizeof c.env_pass) +
                          " bytes together"};
    std::memcpy(c.env_pass + at, name.data(), name.size());
    at += name.size() + 1;
  }
  return {};
}

Status set_allow_uids(RoleConfig& c, const std::vector<uint32_t>& uids) {
  if (uids.size() > kMaxAllowUids)
    return Error{0, "more than " + std::to_string(kMaxAllowUids) + " --allow-uid"};
  std::copy(uids.begin(), uids.end(), c.allow_uids);
  c.allow_uid_count = uint32_t(uids.size());
  return {};
}

Status set_spool_dir(RoleConfig& c, std::string_view path) {
  if (path.size() >= sizeof c.spool_dir) return Error{ENAMETOOLONG, "spool directory"};
  std::memset(c.spool_dir, 0, sizeof c.spool_dir);
  std::memcpy(c.spool_dir, path.data(), path.size());
  return {};
}

Status set_files_root(RoleConfig& c, std::string_view path) {
  if (path.size() >= sizeof c.files_root) return Error{ENAMETOOLONG, "--files-root"};
  std::memset(c.files_root, 0, sizeof c.files_root);
  std::memcpy(c.files_root, path.data(), path.size());
  return {};
}

Status set_known_hosts(RoleConfig& c, std::string_view own, std::string_view user) {
  if (own.size() >= sizeof c.known_hosts) return Error{ENAMETOOLONG, "--known-hosts"};
  if (user.size() >= sizeof c.user_known_hosts) return Error{ENAMETOOLONG, "--user-known-hosts"};
  std::memset(c.known_hosts, 0, sizeof c.known_hosts);
  std::memcpy(c.known_hosts, own.data(), own.size());
  std::memset(c.user_known_hosts, 0, sizeof c.user_known_hosts);
  std::memcpy(c.user_known_hosts, user.data(), user.size());
  return {};
}

Status set_hosts(RoleConfig& c, const std::vector<std::string>& specs) {
  std::string all;
  for (const std::string& s : specs) {
    if (s.find('\n') != std::string::npos || s.find('\0') != std::string::npos)
      return Error{EINVAL, "a --host spec holds a newline"};
    all += s + "\n";
  }
  if (all.size() >= sizeof c.hosts)
    return Error{0, "--host specs take more than " + std::to_string(sizeof c.hosts - 1) + " bytes"};
  std::memset(c.hosts, 0, sizeof c.hosts);
  std::memcpy(c.hosts, all.data(), all.size());
  return {};
}

std::vector<std::string> config_hosts(const RoleConfig& c) {
  std::vector<std::string> out;
  std::string_view all(c.hosts, ::strnlen(c.hosts, sizeof c.hosts));
  for (size_t at = 0; at < all.size();) {
    size_t nl = all.find('\n', at);
    if (nl == std::string_view::npos) nl = all.size();
    if (nl > at) out.emplace_back(all.substr(at, nl - at));
    at = nl + 1;
  }
  return out;
}

void set_isolation(RoleConfig& c, Isolation isolation, std::string_view note) {
  c.isolation = isolation;
  std::memset(c.isolation_note, 0, sizeof c.isolation_note);
  std::memcpy(c.isolation_note, note.data(), std::min(note.size(), sizeof c.isolation_note - 1));
}

std::vector<std::string> env_pass(const RoleConfig& c) {
  std::vector<std::string> out;
  for (size_t at = 0; at < sizeof c.env_pass && c.env_pass[at];) {
    out.emplace_back(c.env_pass + at);
    at += out.back().size() + 1;
  }
  return out;
}

std::span<const uint32_t> allow_uids(const RoleConfig& c) {
  return {c.allow_uids, std::min<uint32_t>(c.allow_uid_count, kMaxAllowUids)};
}

// A sequence lock: config_seq is odd while the one writer copies; a reader
// that saw it odd, or changed across its copy, copies again. Reloads are
// rare and the copy is a few KiB, so a reader retries at most a few times.
void publish_config(Header& h, const RoleConfig& c) {
  const uint64_t seq = h.reload.config_seq.load(std::memory_order_relaxed);
  h.reload.config_seq.store(seq + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  std::memcpy(static_cast<void*>(&h.config), &c, sizeof c);
  h.reload.config_seq.store(seq + 2, std::memory_order_release);
}

RoleConfig read_config(const Header& h) {
  RoleConfig c;
  for (;;) {
    const uint64_t before = h.reload.config_seq.load(std::memory_order_acquire);
    if (before & 1) continue;
    std::memcpy(static_cast<void*>(&c), &h.config, sizeof c);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (h.reload.config_seq.load(std::memory_order_relaxed) == before) return c;
  }
}

}  // namespace sp::shm
