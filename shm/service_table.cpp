#include "shm/service_table.h"

#include <algorithm>
#include <cstring>

#include "common/clock.h"
#include "shm/segment.h"

namespace sp::shm {

namespace {

void copy_text(char* dst, size_t cap, std::string_view s) {
  std::memset(dst, 0, cap);
  std::memcpy(dst, s.data(), std::min(s.size(), cap - 1));
}

}  // namespace

ServiceTable::ServiceTable(const Segment& seg)
    : slots_(&seg.service(0)), specs_(seg.service_spec(0)), caps_(seg.caps()) {}

void ServiceTable::recover() {
  for (uint32_t i = 0; i < caps_.service_slots; ++i) {
    uint32_t writing = uint32_t(ServiceSlotState::kWriting);
    slots_[i].state.compare_exchange_strong(writing, uint32_t(ServiceSlotState::kFree));
  }
}

std::variant<uint32_t, ServiceError> ServiceTable::create(std::string_view name,
                                                          std::string_view session_id,
                                                          std::string_view spec,
                                                          uint64_t log_bytes) {
  if (spec.size() > caps_.service_spec_bytes) return ServiceError::kSpecTooLarge;
  if (!session_id.empty() && in_session(session_id) >= caps_.services_per_session)
    return ServiceError::kSessionFull;
  for (uint32_t i = 0; i < caps_.service_slots; ++i) {
    ServiceSlot& s = slots_[i];
    uint32_t expected = uint32_t(ServiceSlotState::kFree);
    if (!s.state.compare_exchange_strong(expected, uint32_t(ServiceSlotState::kWriting))) continue;
    // Every field but the state word: zero, then what a new service has.
    std::memset(reinterpret_cast<char*>(&s) + sizeof s.state, 0, sizeof s - sizeof s.state);
    copy_text(s.name, sizeof s.name, name);
    copy_text(s.session_id, sizeof s.session_id, session_id);
    // Its first generation is due at once: a frontend that dies before it
    // noted one leaves a service the next one starts (not a job it adopts).
    s.phase = uint32_t(ServicePhase::kBackoff);
    s.created_unix_ms = unix_ms();
    s.log_bytes = log_bytes;
    std::memcpy(specs_ + uint64_t(i) * caps_.service_spec_bytes, spec.data(), spec.size());
    s.spec_bytes = uint32_t(spec.size());
    s.state.store(uint32_t(ServiceSlotState::kLive), std::memory_order_release);
    return i;
  }
  return ServiceError::kTableFull;
}

bool ServiceTable::set_spec(uint32_t i, std::string_view spec) {
  if (spec.size() > caps_.service_spec_bytes) return false;
  // One writer: a frontend killed here leaves a spec that is one or the
  // other, or cut; the next frontend's parse refuses a cut one (the
  // service then fails with that reason).
  slots_[i].spec_bytes = 0;
  std::memcpy(specs_ + uint64_t(i) * caps_.service_spec_bytes, spec.data(), spec.size());
  slots_[i].spec_bytes = uint32_t(spec.size());
  return true;
}

void ServiceTable::release(uint32_t i) {
  slots_[i].state.store(uint32_t(ServiceSlotState::kFree), std::memory_order_release);
}

std::optional<uint32_t> ServiceTable::find(std::string_view name) const {
  for (uint32_t i = 0; i < caps_.service_slots; ++i)
    if (live(i) && name == slots_[i].name) return i;
  return std::nullopt;
}

std::vector<uint32_t> ServiceTable::all() const {
  std::vector<uint32_t> out;
  for (uint32_t i = 0; i < caps_.service_slots; ++i)
    if (live(i)) out.push_back(i);
  return out;
}

size_t ServiceTable::in_session(std::string_view session_id) const {
  size_t n = 0;
  for (uint32_t i = 0; i < caps_.service_slots; ++i)
    if (live(i) && session_id == slots_[i].session_id) ++n;
  return n;
}

std::string_view ServiceTable::spec(uint32_t i) const {
  return {specs_ + uint64_t(i) * caps_.service_spec_bytes, slots_[i].spec_bytes};
}

}  // namespace sp::shm
