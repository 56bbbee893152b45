// Signal names as clients and logs write them: "SIGTERM" for 15, and back
// from "TERM", "SIGTERM" or "term". Pure; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sp {

// "SIGTERM"; "" for a number without a name (real-time signals).
std::string signal_name(int sig);

// The signal called `name` (case-insensitive, "SIG" optional), 1..64.
std::optional<int> signal_number(std::string_view name);

}  // namespace sp
