// The remote worker's SSH-agent client (remote/agent.h): a real ssh-agent
// lists a key and signs with it; a socket that answers wrongly (too long,
// cut short, refusals, a close mid-reply, silence) fails with a reason and
// never blocks.
#include "remote/agent.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <string>

#include "common/text.h"
#include "tests/sshd_fixture.h"

using namespace sp::test;
using Catch::Contains;
using sp::remote::Agent;

namespace {

// Pumps until the request is no longer under way, or `timeout_ms` passes.
Agent::State settle(Agent& a, int timeout_ms = 5000) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  Agent::State st = a.pump();
  while (st == Agent::State::kBusy && std::chrono::steady_clock::now() < end) {
    pollfd p{a.fd(), short(a.wants_write() ? POLLOUT : POLLIN), 0};
    ::poll(&p, 1, 50);
    st = a.pump();
  }
  return st;
}

std::string u32(uint32_t v) {
  return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
}
std::string wire(const std::string& s) {
  return u32(uint32_t(s.size())) + s;
}

// A Unix socket that takes one connection and answers it with `reply` (or
// nothing), then closes it unless told to stay.
class FakeSocket {
 public:
  explicit FakeSocket(const std::string& path) : path_(path) {
    fd_ = sp::UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    REQUIRE(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd_.get(), 4) == 0);
  }
  void answer(const std::string& reply, bool close_after = true) {
    if (!peer_) peer_ = sp::UniqueFd(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    REQUIRE(peer_);
    char request[4096];  // read, as an agent would: a close with unread data is a reset
    while (::recv(peer_.get(), request, sizeof request, MSG_DONTWAIT) > 0) {
    }
    if (!reply.empty())
      REQUIRE(::send(peer_.get(), reply.data(), reply.size(), 0) == ssize_t(reply.size()));
    if (close_after) peer_ = sp::UniqueFd();
  }

 private:
  std::string path_;
  sp::UniqueFd fd_, peer_;
};

}  // namespace

TEST_CASE("a real ssh-agent lists its key and signs with it", "[agent]") {
  TempDir dir;
  SshKeyPair key = make_key(dir.path(), "k");
  SshAgent agent;
  agent.add(key);
  Agent a;
  REQUIRE(a.connect(agent.socket_path()).empty());
  a.ask_keys();
  REQUIRE(settle(a) == Agent::State::kDone);
  auto keys = a.keys();
  REQUIRE(keys);
  REQUIRE(keys->size() == 1);
  CHECK((*keys)[0].comment == "k");
  // The blob is the .pub line's base64 body.
  const std::string b64 = key.public_line.substr(key.public_line.find(' ') + 1);
  CHECK((*keys)[0].blob == *sp::decode_base64(b64.substr(0, b64.find(' '))));
  a.reset();
  a.ask_signature((*keys)[0].blob, "data to sign");
  REQUIRE(settle(a) == Agent::State::kDone);
  auto sig = a.signature();
  REQUIRE(sig);
  CHECK(sig->size() == 64);  // an ed25519 signature

  // A key it does not hold: a refusal, told as such.
  a.reset();
  a.ask_signature("not a key", "data");
  REQUIRE(settle(a) == Agent::State::kDone);
  CHECK_FALSE(a.signature());
  CHECK_THAT(a.error(), Contains("refused to sign"));
}

TEST_CASE("wrong answers fail with a reason, and silence only waits", "[agent]") {
  TempDir dir;
  const std::string path = dir.path() + "/fake.sock";
  Agent missing;
  CHECK_THAT(missing.connect(dir.path() + "/none.sock"), Contains("No such file"));

  FakeSocket fake(path);
  auto ask = [&](const std::string& reply, bool close_after = true) {
    auto a = std::make_unique<Agent>();
    REQUIRE(a->connect(path).empty());
    a->ask_keys();
    a->pump();  // the request goes out first
    fake.answer(reply, close_after);
    return a;
  };

  auto big = ask(u32(Agent::kMaxReply + 1));
  CHECK(settle(*big) == Agent::State::kFailed);
  CHECK_THAT(big->error(), Contains("reply of"));

  auto closed = ask(u32(10) + "\x0c");
  CHECK(settle(*closed) == Agent::State::kFailed);
  CHECK_THAT(closed->error(), Contains("closed"));

  std::string cut = "\x0c" + u32(2) + wire("blob") + wire("comment") + u32(99);
  auto short_list = ask(u32(uint32_t(cut.size())) + cut);
  REQUIRE(settle(*short_list) == Agent::State::kDone);
  CHECK_FALSE(short_list->keys());
  CHECK_THAT(short_list->error(), Contains("cut short"));

  auto refused = ask(u32(1) + "\x05");
  REQUIRE(settle(*refused) == Agent::State::kDone);
  CHECK_FALSE(refused->keys());
  CHECK_THAT(refused->error(), Contains("refused"));

  std::string two = "\x0c" + u32(2) + wire("b1") + wire("c1") + wire("b2") + wire("c2");
  auto fine = ask(u32(uint32_t(two.size())) + two);
  REQUIRE(settle(*fine) == Agent::State::kDone);
  auto keys = fine->keys();
  REQUIRE(keys);
  REQUIRE(keys->size() == 2);
  CHECK((*keys)[1].blob == "b2");

  // Nothing comes: still under way after the wait, the caller's deadline decides.
  auto silent = ask("", false);
  CHECK(settle(*silent, 200) == Agent::State::kBusy);
}
