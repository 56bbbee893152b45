// SessionTable: the verbs on the shm session table (SessionSlot and its env
// blob): named environment sets that jobs refer to by session_id. They live
// in shm so that they survive a frontend restart. Only the frontend writes
// them, one at a time from its single thread; a slot is Writing while it is
// filled and Live once published, so a frontend killed mid-write leaves a
// Writing slot that recover() frees. A view over the mapped segment: cheap
// to copy, no state of its own. Bounded by Capacities::session_slots and
// session_env_bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/env_pairs.h"
#include "shm/layout.h"

namespace sp::shm {

class Segment;

struct SessionInfo {
  std::string id;
  std::string name;
  EnvPairs env;
  uint64_t created_unix_ms = 0;
  size_t secrets = 0;  // how many (never their values)
};

// What a session gives each of its jobs.
struct SessionEnv {
  EnvPairs env;
  std::vector<std::string> secrets;
};

enum class SessionError { kNameTooLong, kEnvTooLarge, kTableFull };

class SessionTable {
 public:
  explicit SessionTable(const Segment& seg);

  // Frees slots a dead frontend left half-written.
  void recover();
  // A new session under a fresh random id (a UUID), or why not.
  std::variant<std::string, SessionError> create(std::string_view name, const EnvPairs& env,
                                                 const std::vector<std::string>& secrets = {});
  bool destroy(std::string_view id);
  std::optional<SessionEnv> env_of(std::string_view id) const;
  // Its secrets alone (none for an unknown session).
  std::vector<std::string> secrets_of(std::string_view id) const;
  std::vector<SessionInfo> list() const;
  size_t count() const;

  uint32_t slots() const { return caps_.session_slots; }
  uint32_t env_bytes() const { return caps_.session_env_bytes; }
  static constexpr uint32_t max_name_bytes() { return kSessionNameBytes - 1; }
  // Bytes `env` and `secrets` take in a session's blob ("K=V\0" each, then
  // a 4-byte length and the bytes of each secret).
  static uint64_t env_size(const EnvPairs& env, const std::vector<std::string>& secrets = {});

 private:
  std::optional<uint32_t> find(std::string_view id) const;
  EnvPairs read_env(uint32_t i) const;
  std::vector<std::string> read_secrets(uint32_t i) const;
  SessionSlot* slots_;
  char* envs_;
  Capacities caps_;
};

}  // namespace sp::shm
