#include "remote/agent.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>

#include "common/sys.h"

namespace sp::remote {

namespace {

// The agent protocol's message types (draft-miller-ssh-agent).
constexpr uint8_t kFailure = 5;
constexpr uint8_t kRequestIdentities = 11;
constexpr uint8_t kIdentitiesAnswer = 12;
constexpr uint8_t kSignRequest = 13;
constexpr uint8_t kSignResponse = 14;

void put_u32(std::string& out, uint32_t v) {
  const char b[4] = {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
  out.append(b, 4);
}

void put_string(std::string& out, std::string_view s) {
  put_u32(out, uint32_t(s.size()));
  out.append(s);
}

// Reads the wire format's uint32 and string, never past the end.
struct Cursor {
  std::string_view rest;
  bool ok = true;

  uint32_t u32() {
    if (rest.size() < 4) return ok = false, 0;
    auto b = reinterpret_cast<const unsigned char*>(rest.data());
    rest.remove_prefix(4);
    return uint32_t(b[0]) << 24 | uint32_t(b[1]) << 16 | uint32_t(b[2]) << 8 | b[3];
  }
  std::string_view string() {
    const uint32_t n = u32();
    if (!ok || rest.size() < n) return ok = false, std::string_view();
    std::string_view s = rest.substr(0, n);
    rest.remove_prefix(n);
    return s;
  }
};

}  // namespace

std::string Agent::connect(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return "the path is too long for a Unix socket";
  std::memcpy(addr.sun_path, path.data(), path.size());
  auto sock = new_fd(
      "socket", [] { return ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0); });
  if (!sock) return sock.error().message();
  // A local socket connects at once, or not (EAGAIN: its backlog is full).
  auto r = sys_raw(
      [&] { return ::connect(sock->get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr); });
  if (r < 0) return strerror(int(-r));
  fd_ = std::move(*sock);
  return "";
}

void Agent::request(std::string body) {
  out_.clear();
  put_u32(out_, uint32_t(body.size()));
  out_ += body;
  out_at_ = 0;
  in_.clear();
  error_.clear();
  state_ = State::kBusy;
}

void Agent::ask_keys() {
  request(std::string(1, char(kRequestIdentities)));
}

void Agent::ask_signature(std::string_view key_blob, std::string_view data) {
  std::string body(1, char(kSignRequest));
  put_string(body, key_blob);
  put_string(body, data);
  put_u32(body, 0);  // flags: the key's own signature type
  request(std::move(body));
}

Agent::State Agent::fail(std::string why) {
  error_ = std::move(why);
  state_ = State::kFailed;
  return state_;
}

Agent::State Agent::pump() {
  if (state_ != State::kBusy) return state_;
  while (out_at_ < out_.size()) {
    ssize_t n = sys_raw([&] {
      return ::send(fd_.get(), out_.data() + out_at_, out_.size() - out_at_, MSG_NOSIGNAL);
    });
    if (n == -EAGAIN) return state_;
    if (n < 0) return fail(std::string("cannot write to it: ") + strerror(int(-n)));
    out_at_ += size_t(n);
  }
  for (;;) {
    size_t want = 4;
    if (in_.size() >= 4) {
      const uint32_t len = Cursor{in_}.u32();
      if (len == 0 || len > kMaxReply)
        return fail("it sent a reply of " + std::to_string(len) + " bytes");
      want = 4 + size_t(len);
    }
    if (in_.size() == want) break;
    char buf[16 * 1024];
    ssize_t n =
        sys_raw([&] { return ::recv(fd_.get(), buf, std::min(sizeof buf, want - in_.size()), 0); });
    if (n == -EAGAIN) return state_;
    if (n == 0) return fail("it closed the connection");
    if (n < 0) return fail(std::string("cannot read from it: ") + strerror(int(-n)));
    in_.append(buf, size_t(n));
  }
  state_ = State::kDone;
  return state_;
}

void Agent::reset() {
  state_ = State::kIdle;
  out_.clear();
  out_at_ = 0;
  in_.clear();
}

std::optional<std::vector<Agent::Key>> Agent::keys() {
  if (state_ != State::kDone || in_.size() < 5) return std::nullopt;
  if (uint8_t(in_[4]) != kIdentitiesAnswer) {
    error_ =
        uint8_t(in_[4]) == kFailure ? "it refused to list its keys" : "it answered something else";
    return std::nullopt;
  }
  Cursor c{std::string_view(in_).substr(5)};
  const uint32_t n = c.u32();
  std::vector<Key> keys;
  for (uint32_t i = 0; c.ok && i < n && keys.size() < kMaxKeys; ++i) {
    std::string_view blob = c.string();
    std::string_view comment = c.string();
    if (c.ok) keys.push_back({std::string(blob), std::string(comment)});
  }
  if (!c.ok) {
    error_ = "its list of keys is cut short";
    return std::nullopt;
  }
  return keys;
}

std::optional<std::string> Agent::signature() {
  if (state_ != State::kDone || in_.size() < 5) return std::nullopt;
  if (uint8_t(in_[4]) != kSignResponse) {
    error_ = uint8_t(in_[4]) == kFailure ? "it refused to sign" : "it answered something else";
    return std::nullopt;
  }
  // string signature { string type, string bytes }
  Cursor outer{std::string_view(in_).substr(5)};
  Cursor inner{outer.string()};
  inner.string();
  std::string_view bytes = inner.string();
  if (!outer.ok || !inner.ok) {
    error_ = "its signature is malformed";
    return std::nullopt;
  }
  return std::string(bytes);
}

}  // namespace sp::remote
