// How results name things on the wire: a job's state ("queued", "exited",
// ...), a plan's kind ("chain", ...) and a signal ("SIGTERM"). One list each,
// used by the results and by the params that filter on them. Pure.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/text.h"
#include "frontend/codec/value.h"
#include "shm/layout.h"

namespace sp::frontend {

// As job_status says it: states a client cannot tell apart share a name
// (Free/Allocated/Queued are "queued", Claimed/Running "running").
const char* state_name(shm::JobState s);
// Every name state_name gives, for job_list's "state" filter.
inline constexpr std::string_view kStateNames[] = {"waiting", "queued",    "running",
                                                   "exited",  "timed_out", "cancelled",
                                                   "failed",  "lost",      "skipped"};

const char* plan_kind_name(shm::PlanKind kind);  // "" for kNotAPlan

// "process-group", "cgroup-v1" or "cgroup-v2".
const char* isolation_name(shm::Isolation i);
// How a role's last unplanned death counted: "none", "after_ready" or
// "killed_starting" (restarted however often), "boot_failure" (counts toward
// the crash-loop bound).
const char* death_kind_name(shm::DeathKind k);

// null for 0, "SIGTERM" for a named signal, else its number.
rpc::Value signal_value(int sig);

// A remote job's error (common/remote_error.h) as {code, phase, message},
// or null when it has none: fan-out entries carry it as "error".
rpc::Value remote_error_value(uint8_t code, uint8_t phase, const std::string& message);
// "error_code" and "error_phase" of a single remote job's result (names, or
// null), beside its "error" message.
void add_remote_error(rpc::Object& o, uint8_t code, uint8_t phase);

// Output as append_output_text made it, as an answer's value: rpc::Bytes
// for OutputEncoding::kBytes, else a string.
rpc::Value output_value(std::string text, OutputEncoding e);
// "encoding": "base64" or "binary" when the output is not UTF-8 text.
void add_encoding(rpc::Object& o, OutputEncoding e);

}  // namespace sp::frontend
