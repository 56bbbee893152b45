// The environment a job gets: a scrubbed base taken from the daemon's own
// environment (only the names below), then the session's variables, then the
// request's; a later source overrides an earlier one. Pure; thread-compatible.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/env_pairs.h"

namespace sp::frontend {

// Names copied from the daemon's environment when present. PATH defaults to
// /usr/local/bin:/usr/bin:/bin when the daemon has none.
inline constexpr const char* kBaseEnvNames[] = {"PATH", "HOME",   "USER", "LOGNAME", "SHELL",
                                                "LANG", "LC_ALL", "TZ",   "TMPDIR"};

// `extra_names`: more names to copy (configured passthrough).
EnvPairs base_env(char** environ_ptr, const std::vector<std::string>& extra_names);

// Appends "NAME=value" strings for base, then each overlay in order, with
// later values replacing earlier ones of the same name.
void merge_env(std::vector<std::string>& out, const EnvPairs& base,
               std::initializer_list<const EnvPairs*> overlays);

}  // namespace sp::frontend
