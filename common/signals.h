// Signal names as clients and logs write them: "SIGTERM" for 15, and back
// from "TERM", "SIGTERM" or "term" (pure; thread-safe); and the signalfd the
// roles' event loops read their stop signals from.
#pragma once

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "common/unique_fd.h"

namespace sp {

// "SIGTERM"; "" for a number without a name (real-time signals).
std::string signal_name(int sig);

// The signal called `name` (case-insensitive, "SIG" optional), 1..64.
std::optional<int> signal_number(std::string_view name);

// Blocks `signals` in the calling thread and answers a non-blocking,
// close-on-exec signalfd that reports them. Children spawned later must
// unblock them again (spawn does).
Result<UniqueFd> open_signalfd(std::initializer_list<int> signals);

// Reads every pending signal from a signalfd; the last one read, 0 if none.
int drain_signalfd(int fd);

}  // namespace sp
