// Failure: why a remote step failed, as a client is told it: a stable code,
// the phase it happened in, and a message that never holds a secret.
#pragma once

#include <string>

#include "common/remote_error.h"

namespace sp::remote {

struct Failure {
  RemoteError code = RemoteError::kNone;
  RemotePhase phase = RemotePhase::kNone;
  std::string message;
  explicit operator bool() const { return code != RemoteError::kNone; }
};

}  // namespace sp::remote
