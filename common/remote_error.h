// The stable error codes of remote jobs and the phase each happened in, as
// clients see them (`error: {code, phase, message}`). Numbered for a job's
// result in shm (shm/job.capnp errorCode, errorPhase): add at the end only.
#pragma once

#include <cstdint>
#include <string_view>

namespace sp {

enum class RemoteError : uint8_t {
  kNone = 0,
  kConnectRefused,
  kConnectTimeout,
  kDnsFailed,
  kProtocolError,
  kLoginTimeout,
  kHostkeyUnknown,
  kHostkeyMismatch,
  kAuthFailed,
  kKeyLoadFailed,
  kAgentUnavailable,
  kChannelOpenFailed,
  kConnectionLost,
  kKeepaliveTimeout,
  kHostRemoved,  // the host was removed before or while the job ran
};

enum class RemotePhase : uint8_t {
  kNone = 0,
  kDns,
  kConnect,
  kHandshake,  // banner and key exchange
  kHostkey,
  kAuth,
  kChannel,  // opening the channel and starting the command
  kRun,      // the command ran
};

inline constexpr std::string_view kRemoteErrorNames[] = {
    "",
    "connect_refused",
    "connect_timeout",
    "dns_failed",
    "protocol_error",
    "login_timeout",
    "hostkey_unknown",
    "hostkey_mismatch",
    "auth_failed",
    "key_load_failed",
    "agent_unavailable",
    "channel_open_failed",
    "connection_lost",
    "keepalive_timeout",
    "host_removed",
};
inline constexpr std::string_view kRemotePhaseNames[] = {
    "", "dns", "connect", "handshake", "hostkey", "auth", "channel", "run",
};

inline std::string_view name_of(RemoteError e) {
  auto i = size_t(e);
  return i < std::size(kRemoteErrorNames) ? kRemoteErrorNames[i] : "unknown";
}
inline std::string_view name_of(RemotePhase p) {
  auto i = size_t(p);
  return i < std::size(kRemotePhaseNames) ? kRemotePhaseNames[i] : "unknown";
}

}  // namespace sp
