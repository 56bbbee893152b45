// The verbs on RoleConfig's bounded lists and strings (layout.h): the
// supervisor fills them from its flags, checking their bounds; the roles read
// them. Pure functions over plain data.
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
// Cut to fit (a note for operators).
void set_isolation(RoleConfig& c, Isolation isolation, std::string_view note);

std::vector<std::string> env_pass(const RoleConfig& c);
std::span<const uint32_t> allow_uids(const RoleConfig& c);

}  // namespace sp::shm
