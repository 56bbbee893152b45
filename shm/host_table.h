// HostTable: the verbs on the shm table of remote hosts (HostSlot). The
// frontend adds and removes hosts from its single thread (host_add, and
// the configuration's --host hosts); a slot is Writing
// while it is filled and Live once published, so a writer killed mid-way
// leaves a Writing slot that recover() frees. The remote worker reads a live
// host's settings and publishes its pool's figures (PoolFigures) under the
// slot's sequence lock; host_list reads them. A view over the mapped segment:
// cheap to copy, no state of its own. Bounded by Capacities::host_slots.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "shm/layout.h"

namespace sp::shm {

class Segment;

// A host's settings, as host_add takes them (the secret included).
struct HostConfig {
  std::string name, address, user;
  uint32_t port = 22;
  HostAuth auth = HostAuth::kKey;
  std::string key_file, agent_socket, secret;
  HostKeyPolicy policy = HostKeyPolicy::kStrict;
  std::string fingerprint;  // kPinned: "SHA256:..."
  uint32_t connect_timeout_ms = 10'000;
  uint32_t keepalive_ms = 15'000;
  uint32_t max_connections = 4;
  uint32_t idle_timeout_ms = 60'000;  // a connection without channels this long is closed
  bool from_config = false;
  uint32_t generation = 0;  // read(): the slot's generation
};

// What the remote worker publishes about a host's pool.
struct PoolFigures {
  uint32_t generation = 0;  // the host generation they are of
  uint32_t connections = 0, busy = 0, channel_cap = 0, connecting = 0;
  uint64_t jobs_started = 0;
  uint64_t last_error_unix_ms = 0;
  std::string fingerprint, key_type, last_error;
};

enum class HostError { kTableFull, kExists };

class HostTable {
 public:
  explicit HostTable(const Segment& seg);

  // Frees slots a dead writer left half-written.
  void recover();
  // A new host (its name not taken), with a fresh generation; or why not.
  std::variant<uint32_t, HostError> add(const HostConfig& c);
  void remove(uint32_t i);

  std::optional<uint32_t> find(std::string_view name) const;
  std::vector<uint32_t> all() const;  // live hosts, in slot order
  bool live(uint32_t i, uint32_t generation) const;
  HostConfig read(uint32_t i) const;  // a live slot's settings
  uint32_t generation(uint32_t i) const { return slots_[i].generation; }

  // The remote worker only.
  void publish(uint32_t i, const PoolFigures& f);
  PoolFigures figures(uint32_t i) const;

  uint32_t size() const { return count_; }

 private:
  HostSlot* slots_;
  uint32_t count_;
};

}  // namespace sp::shm
