// The verbs on RoleConfig (layout.h): its bounded lists and strings, which
// the supervisor fills from its flags, checking their bounds, and the roles
// read (pure functions over plain data); and its publication in the header,
// under a sequence lock so that a live reload is never seen half written.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "shm/layout.h"

namespace sp::shm {

// Each fails, naming the flag, when the values do not fit their bound.
Status set_env_pass(RoleConfig& c, const std::vector<std::string>& names);
Status set_allow_uids(RoleConfig& c, const std::vector<uint32_t>& uids);
Status set_spool_dir(RoleConfig& c, std::string_view path);
Status set_files_root(RoleConfig& c, std::string_view path);
// The remote worker's known_hosts files: its own, and one it only reads ("": none).
Status set_known_hosts(RoleConfig& c, std::string_view own, std::string_view user);
// The --host specs, one per line; an error if they do not fit.
Status set_hosts(RoleConfig& c, const std::vector<std::string>& specs);
// They again, one each.
std::vector<std::string> config_hosts(const RoleConfig& c);
// Cut to fit (a note for operators).
void set_isolation(RoleConfig& c, Isolation isolation, std::string_view note);

std::vector<std::string> env_pass(const RoleConfig& c);
std::span<const uint32_t> allow_uids(const RoleConfig& c);

// The supervisor (the only writer): makes `c` the roles' configuration, as
// the next generation.
void publish_config(Header& h, const RoleConfig& c);
// Any role: a consistent copy of the configuration in the header.
RoleConfig read_config(const Header& h);
// The generation of the configuration in the header: 1 at start, + 1 per reload.
inline uint64_t config_generation(const Header& h) {
  return h.reload.config_seq.load(std::memory_order_acquire) / 2;
}

}  // namespace sp::shm
