// Sessions: named environment sets that jobs can refer to by session_id.
// Stored in the shm session table so they survive a frontend restart; only
// the frontend writes them (one at a time, single-threaded). Bounded by the
// segment's session_slots and session_env_bytes.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "frontend/env.h"
#include "shm/segment.h"

namespace sp::frontend {

struct SessionInfo {
  std::string id;
  std::string name;
  EnvPairs env;
  uint64_t created_unix_ms = 0;
};

class Sessions {
 public:
  explicit Sessions(const shm::Segment& seg) : seg_(seg) {}

  // Frees slots a dead frontend left half-written.
  void recover();
  // ENOSPC: the table is full; E2BIG: env too large; ENAMETOOLONG: name too long.
  Result<std::string> create(std::string_view name, const EnvPairs& env);
  bool destroy(std::string_view id);
  std::optional<EnvPairs> env_of(std::string_view id) const;
  std::vector<SessionInfo> list() const;

 private:
  std::optional<uint32_t> find(std::string_view id) const;
  EnvPairs read_env(uint32_t i) const;
  const shm::Segment& seg_;
};

}  // namespace sp::frontend
