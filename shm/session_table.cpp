#include "shm/session_table.h"

#include <sys/random.h>

#include <cstdio>
#include <cstring>

#include "common/clock.h"
#include "common/redactor.h"
#include "shm/segment.h"

namespace sp::shm {

namespace {

std::string new_uuid() {
  unsigned char b[16];
  if (::getrandom(b, sizeof b, 0) != sizeof b) {
    uint64_t t = monotonic_ns();  // getrandom only fails before the pool is ready
    std::memcpy(b, &t, 8);
    std::memcpy(b + 8, &t, 8);
  }
  b[6] = (b[6] & 0x0f) | 0x40;  // version 4
  b[8] = (b[8] & 0x3f) | 0x80;  // RFC 4122 variant
  char out[37];
  std::snprintf(out, sizeof out,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
  return out;
}

}  // namespace

SessionTable::SessionTable(const Segment& seg)
    : slots_(&seg.session(0)), envs_(seg.session_env(0)), caps_(seg.caps()) {}

void SessionTable::recover() {
  for (uint32_t i = 0; i < caps_.session_slots; ++i) {
    uint32_t writing = uint32_t(SessionState::kWriting);
    slots_[i].state.compare_exchange_strong(writing, uint32_t(SessionState::kFree));
  }
}

std::variant<std::string, SessionError> SessionTable::create(
    std::string_view name, const EnvPairs& env, const std::vector<std::string>& secrets) {
  if (name.size() > max_name_bytes()) return SessionError::kNameTooLong;
  if (env_size(env, secrets) > caps_.session_env_bytes) return SessionError::kEnvTooLarge;
  for (uint32_t i = 0; i < caps_.session_slots; ++i) {
    SessionSlot& s = slots_[i];
    uint32_t expected = uint32_t(SessionState::kFree);
    if (!s.state.compare_exchange_strong(expected, uint32_t(SessionState::kWriting))) continue;
    std::string id = new_uuid();
    std::memset(s.id, 0, sizeof s.id);
    std::memcpy(s.id, id.data(), id.size());
    std::memset(s.name, 0, sizeof s.name);
    std::memcpy(s.name, name.data(), name.size());
    char* blob = envs_ + uint64_t(i) * caps_.session_env_bytes;
    uint32_t at = 0;
    for (auto& [k, v] : env) {
      std::memcpy(blob + at, k.data(), k.size());
      at += uint32_t(k.size());
      blob[at++] = '=';
      std::memcpy(blob + at, v.data(), v.size());
      at += uint32_t(v.size());
      blob[at++] = '\0';
    }
    s.env_bytes = at;
    for (const std::string& secret : secrets) {
      const auto len = uint32_t(secret.size());
      std::memcpy(blob + at, &len, 4);
      std::memcpy(blob + at + 4, secret.data(), len);
      at += 4 + len;
    }
    s.secret_bytes = at - s.env_bytes;
    s.created_unix_ms = unix_ms();
    s.state.store(uint32_t(SessionState::kLive), std::memory_order_release);
    return id;
  }
  return SessionError::kTableFull;
}

uint64_t SessionTable::env_size(const EnvPairs& env, const std::vector<std::string>& secrets) {
  uint64_t bytes = 0;
  for (auto& [k, v] : env) bytes += k.size() + v.size() + 2;
  for (const std::string& s : secrets) bytes += 4 + s.size();
  return bytes;
}

std::optional<uint32_t> SessionTable::find(std::string_view id) const {
  if (id.empty() || id.size() >= kSessionIdBytes) return std::nullopt;
  for (uint32_t i = 0; i < caps_.session_slots; ++i) {
    const SessionSlot& s = slots_[i];
    if (s.state.load(std::memory_order_acquire) == uint32_t(SessionState::kLive) &&
        id == std::string_view(s.id))
      return i;
  }
  return std::nullopt;
}

EnvPairs SessionTable::read_env(uint32_t i) const {
  EnvPairs out;
  std::string_view all(envs_ + uint64_t(i) * caps_.session_env_bytes, slots_[i].env_bytes);
  while (!all.empty()) {
    std::string_view entry(all.data());
    size_t eq = entry.find('=');
    out.emplace_back(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
    all.remove_prefix(entry.size() + 1);
  }
  return out;
}

std::vector<std::string> SessionTable::read_secrets(uint32_t i) const {
  std::vector<std::string> out;
  const char* at = envs_ + uint64_t(i) * caps_.session_env_bytes + slots_[i].env_bytes;
  const char* end = at + slots_[i].secret_bytes;
  while (end - at >= 4) {
    uint32_t len = 0;
    std::memcpy(&len, at, 4);
    if (len > uint64_t(end - at - 4)) break;
    out.emplace_back(at + 4, len);
    at += 4 + len;
  }
  return out;
}

bool SessionTable::destroy(std::string_view id) {
  auto i = find(id);
  if (!i) return false;
  slots_[*i].state.store(uint32_t(SessionState::kFree), std::memory_order_release);
  return true;
}

std::optional<SessionEnv> SessionTable::env_of(std::string_view id) const {
  auto i = find(id);
  if (!i) return std::nullopt;
  return SessionEnv{read_env(*i), read_secrets(*i)};
}

std::vector<std::string> SessionTable::secrets_of(std::string_view id) const {
  auto i = find(id);
  return i ? read_secrets(*i) : std::vector<std::string>{};
}

std::vector<SessionInfo> SessionTable::list() const {
  std::vector<SessionInfo> out;
  for (uint32_t i = 0; i < caps_.session_slots; ++i) {
    const SessionSlot& s = slots_[i];
    if (s.state.load(std::memory_order_acquire) != uint32_t(SessionState::kLive)) continue;
    SessionInfo info{s.id, s.name, read_env(i), s.created_unix_ms, 0};
    const std::vector<std::string> secrets = read_secrets(i);
    info.secrets = secrets.size();
    if (!secrets.empty()) {  // "secret_env" values are in the env too: never shown
      const Redactor redactor(secrets);
      for (auto& [k, v] : info.env) v = redactor.redact(v);
    }
    out.push_back(std::move(info));
  }
  return out;
}

size_t SessionTable::count() const {
  size_t n = 0;
  for (uint32_t i = 0; i < caps_.session_slots; ++i)
    n += slots_[i].state.load(std::memory_order_acquire) == uint32_t(SessionState::kLive);
  return n;
}

}  // namespace sp::shm
