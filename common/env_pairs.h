// EnvPairs: environment variables as (name, value) pairs in the order they
// were given, as requests, sessions and the daemon's own environment carry
// them. Plain value type.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace sp {

using EnvPairs = std::vector<std::pair<std::string, std::string>>;

}  // namespace sp
