// ServiceTable: the verbs on the shm table of supervised services
// (ServiceSlot and its spec blob): finding a service by name, taking a slot
// for a new one with its spec, replacing the spec, freeing the slot. Only
// the frontend writes services, from its single thread; a slot is Writing
// while it is filled and Live once published, so a frontend killed mid-write
// leaves a Writing slot that recover() frees. The fields of a live slot
// that say how the service runs (phase, generation, log, ...) belong to the
// frontend's Services (frontend/services.h). A view over the mapped segment:
// cheap to copy, no state of its own. Bounded by Capacities::service_slots,
// services_per_session and service_spec_bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <variant>
#include <vector>

#include "shm/layout.h"

namespace sp::shm {

class Segment;

enum class ServiceError { kSpecTooLarge, kTableFull, kSessionFull };

class ServiceTable {
 public:
  explicit ServiceTable(const Segment& seg);

  // Frees slots a dead frontend left half-written.
  void recover();
  // A new service `name` of session `session_id` ("" : the daemon's) with
  // `spec` and a log of `log_bytes`, every run field reset, generation 0
  // and its first generation
  // due (phase kBackoff, next_start_ns 0); or why not.
  std::variant<uint32_t, ServiceError> create(std::string_view name, std::string_view session_id,
                                              std::string_view spec, uint64_t log_bytes);
  // Replaces service i's spec; false (nothing changed) if it does not fit.
  bool set_spec(uint32_t i, std::string_view spec);
  void release(uint32_t i);

  std::optional<uint32_t> find(std::string_view name) const;
  // Every live service, in slot order.
  std::vector<uint32_t> all() const;
  size_t in_session(std::string_view session_id) const;

  bool live(uint32_t i) const {
    return slots_[i].state.load(std::memory_order_acquire) == uint32_t(ServiceSlotState::kLive);
  }
  ServiceSlot& at(uint32_t i) const { return slots_[i]; }
  std::string_view spec(uint32_t i) const;
  uint32_t size() const { return caps_.service_slots; }
  uint32_t per_session() const { return caps_.services_per_session; }
  uint32_t spec_bytes() const { return caps_.service_spec_bytes; }

 private:
  ServiceSlot* slots_;
  char* specs_;
  Capacities caps_;
};

}  // namespace sp::shm
