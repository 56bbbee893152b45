// What a configuration must satisfy before it is used, at start and at a
// live reload, and which of its options only a restart can change. Pure
// functions over Config.
#pragma once

#include <string>
#include <vector>

#include "common/result.h"
#include "supervisor/config.h"

namespace sp::supervisor {

// Fills in what the flags imply (jobs per worker, the roles' tick).
void derive(Config& c);

// Defaults within their ceilings, lists within their bounds.
Status check(const Config& c);

// `c` as the roles see it (shm::RoleConfig), its lists checked against their
// bounds. The supervisor adds what it found out at start (spool directory,
// isolation).
Result<shm::RoleConfig> role_config(const Config& c);

// The options whose value differs between `running` and `next` and that a
// live reload cannot change (the socket, shared-memory sizes, ...), by flag
// name; empty if the reload may go ahead.
std::vector<std::string> restart_required(const Config& running, const Config& next);

}  // namespace sp::supervisor
