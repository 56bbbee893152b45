// The listening Unix socket: created by the supervisor (directory 0700 when
// it creates it, socket 0600), refused when a live daemon already listens on
// the path, replaced when a dead one left it behind.
#pragma once

#include <string>

#include "common/result.h"
#include "common/unique_fd.h"

namespace sp::supervisor {

enum class SocketState { kAbsent, kStale, kLive };
// Whether something accepts connections on `path`.
SocketState probe_socket(const std::string& path);

// Binds and listens on `path` (which must not be live). Returns the listening fd.
Result<UniqueFd> listen_on(const std::string& path);

// "HOST:PORT" or "[IPV6]:PORT" (--metrics-listen), split; an error says why not.
struct HostPort {
  std::string host, port;
};
Result<HostPort> parse_host_port(const std::string& address);
// A listening TCP socket on `address` (parse_host_port's form; HOST may be a
// name, resolved once).
Result<UniqueFd> listen_tcp(const std::string& address);

}  // namespace sp::supervisor
