// Where the daemon's socket lives by default. Pure; thread-safe.
#pragma once

#include <string>

namespace sp {

// $XDG_RUNTIME_DIR/shell-pool/shell-pool.sock, else
// /run/user/$UID/shell-pool/shell-pool.sock when /run/user/$UID exists, else
// /tmp/shell-pool-$UID/shell-pool.sock.
std::string default_socket_path();

}  // namespace sp
