#include "shm/host_table.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "common/clock.h"
#include "shm/segment.h"

namespace sp::shm {

namespace {

void copy_text(char* dst, size_t cap, std::string_view s) {
  std::memset(dst, 0, cap);
  std::memcpy(dst, s.data(), std::min(s.size(), cap - 1));
}

std::string text_of(const char* src, size_t cap) {
  return std::string(src, ::strnlen(src, cap));
}

}  // namespace

HostTable::HostTable(const Segment& seg) : slots_(&seg.host(0)), count_(seg.caps().host_slots) {}

void HostTable::recover() {
  for (uint32_t i = 0; i < count_; ++i) {
    uint32_t writing = uint32_t(HostSlotState::kWriting);
    if (slots_[i].state.compare_exchange_strong(writing, uint32_t(HostSlotState::kFree)))
      std::memset(slots_[i].secret, 0, sizeof slots_[i].secret);
  }
}

std::variant<uint32_t, HostError> HostTable::add(const HostConfig& c) {
  if (find(c.name)) return HostError::kExists;
  for (uint32_t i = 0; i < count_; ++i) {
    HostSlot& s = slots_[i];
    uint32_t expected = uint32_t(HostSlotState::kFree);
    if (!s.state.compare_exchange_strong(expected, uint32_t(HostSlotState::kWriting))) continue;
    s.generation += 1;
    // The new generation before the new settings: a reader that copied
    // half-written settings sees it changed (read() copies it last).
    std::atomic_thread_fence(std::memory_order_release);
    s.created_unix_ms = unix_ms();
    s.port = c.port;
    s.auth = uint32_t(c.auth);
    s.policy = uint32_t(c.policy);
    s.connect_timeout_ms = c.connect_timeout_ms;
    s.keepalive_ms = c.keepalive_ms;
    s.max_connections = c.max_connections;
    s.idle_timeout_ms = c.idle_timeout_ms;
    s.from_config = c.from_config;
    copy_text(s.name, sizeof s.name, c.name);
    copy_text(s.address, sizeof s.address, c.address);
    copy_text(s.user, sizeof s.user, c.user);
    copy_text(s.key_file, sizeof s.key_file, c.key_file);
    copy_text(s.agent_socket, sizeof s.agent_socket, c.agent_socket);
    copy_text(s.secret, sizeof s.secret, c.secret);
    copy_text(s.fingerprint, sizeof s.fingerprint, c.fingerprint);
    s.state.store(uint32_t(HostSlotState::kLive), std::memory_order_release);
    return i;
  }
  return HostError::kTableFull;
}

void HostTable::remove(uint32_t i) {
  HostSlot& s = slots_[i];
  // The secret goes with the host, not with a later reuse of the slot.
  std::memset(s.secret, 0, sizeof s.secret);
  s.state.store(uint32_t(HostSlotState::kFree), std::memory_order_release);
}

std::optional<uint32_t> HostTable::find(std::string_view name) const {
  for (uint32_t i = 0; i < count_; ++i)
    if (slots_[i].state.load(std::memory_order_acquire) == uint32_t(HostSlotState::kLive) &&
        text_of(slots_[i].name, sizeof slots_[i].name) == name)
      return i;
  return std::nullopt;
}

std::vector<uint32_t> HostTable::all() const {
  std::vector<uint32_t> out;
  for (uint32_t i = 0; i < count_; ++i)
    if (slots_[i].state.load(std::memory_order_acquire) == uint32_t(HostSlotState::kLive))
      out.push_back(i);
  return out;
}

bool HostTable::live(uint32_t i, uint32_t generation) const {
  return i < count_ &&
         slots_[i].state.load(std::memory_order_acquire) == uint32_t(HostSlotState::kLive) &&
         slots_[i].generation == generation;
}

HostConfig HostTable::read(uint32_t i) const {
  const HostSlot& s = slots_[i];
  HostConfig c;
  c.name = text_of(s.name, sizeof s.name);
  c.address = text_of(s.address, sizeof s.address);
  c.user = text_of(s.user, sizeof s.user);
  c.port = s.port;
  c.auth = HostAuth(s.auth);
  c.key_file = text_of(s.key_file, sizeof s.key_file);
  c.agent_socket = text_of(s.agent_socket, sizeof s.agent_socket);
  c.secret = text_of(s.secret, sizeof s.secret);
  c.policy = HostKeyPolicy(s.policy);
  c.fingerprint = text_of(s.fingerprint, sizeof s.fingerprint);
  c.connect_timeout_ms = s.connect_timeout_ms;
  c.keepalive_ms = s.keepalive_ms;
  c.max_connections = s.max_connections;
  c.idle_timeout_ms = s.idle_timeout_ms;
  c.from_config = s.from_config != 0;
  std::atomic_thread_fence(std::memory_order_acquire);
  c.generation = s.generation;
  return c;
}

void HostTable::publish(uint32_t i, const PoolFigures& f) {
  HostSlot& s = slots_[i];
  // Even: no write under way. A writer killed mid-write left it odd.
  uint32_t seq = (s.seq.load(std::memory_order_relaxed) + 1) & ~1u;
  s.seq.store(seq + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  s.seen_generation = f.generation;
  s.connections = f.connections;
  s.busy = f.busy;
  s.channel_cap = f.channel_cap;
  s.connecting = f.connecting;
  s.jobs_started = f.jobs_started;
  s.last_error_unix_ms = f.last_error_unix_ms;
  copy_text(s.seen_fingerprint, sizeof s.seen_fingerprint, f.fingerprint);
  copy_text(s.key_type, sizeof s.key_type, f.key_type);
  copy_text(s.last_error, sizeof s.last_error, f.last_error);
  s.seq.store(seq + 2, std::memory_order_release);
}

PoolFigures HostTable::figures(uint32_t i) const {
  const HostSlot& s = slots_[i];
  for (int tries = 0;; ++tries) {
    uint32_t before = s.seq.load(std::memory_order_acquire);
    PoolFigures f;
    f.generation = s.seen_generation;
    f.connections = s.connections;
    f.busy = s.busy;
    f.channel_cap = s.channel_cap;
    f.connecting = s.connecting;
    f.jobs_started = s.jobs_started;
    f.last_error_unix_ms = s.last_error_unix_ms;
    f.fingerprint = text_of(s.seen_fingerprint, sizeof s.seen_fingerprint);
    f.key_type = text_of(s.key_type, sizeof s.key_type);
    f.last_error = text_of(s.last_error, sizeof s.last_error);
    std::atomic_thread_fence(std::memory_order_acquire);
    // A writer killed mid-write leaves the count odd: take what is there
    // after a few tries rather than spin forever.
    if ((before % 2 == 0 && s.seq.load(std::memory_order_relaxed) == before) || tries >= 100)
      return f;
  }
}

}  // namespace sp::shm
