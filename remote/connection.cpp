#include "remote/connection.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "common/clock.h"
#include "common/log.h"
#include "common/sys.h"
#include "common/text.h"

namespace sp::remote {

namespace {

constexpr uint64_t kMs = 1'000'000;

bool offers(const std::string& methods, std::string_view m) {
  size_t at = 0;
  while (at <= methods.size()) {
    size_t comma = methods.find(',', at);
    if (comma == std::string::npos) comma = methods.size();
    if (std::string_view(methods).substr(at, comma - at) == m) return true;
    at = comma + 1;
  }
  return false;
}

// libssh2 1.10 signs with ssh-rsa (SHA-1) only, which OpenSSH 8.8 and later
// refuse by default: the one hint worth giving when an RSA key fails.
bool looks_rsa(const std::string& key_file) {
  auto fd = new_fd("open", [&] { return ::open(key_file.c_str(), O_RDONLY | O_CLOEXEC); });
  if (!fd) return false;
  char head[8192];
  ssize_t n = sys_raw([&] { return ::read(fd->get(), head, sizeof head); });
  if (n <= 0) return false;
  std::string_view text(head, size_t(n));
  if (text.find("BEGIN RSA PRIVATE KEY") != std::string_view::npos) return true;
  // The OpenSSH format holds the public key, and its type, in its base64 body.
  std::string body;
  for (size_t at = 0; at < text.size();) {
    size_t nl = std::min(text.find('\n', at), text.size());
    std::string_view line = text.substr(at, nl - at);
    if (line.rfind("-----", 0) != 0) body.append(line);
    at = nl + 1;
  }
  auto raw = decode_base64(body);
  return raw && raw->find("ssh-rsa") != std::string::npos;
}

constexpr const char* kRsaHint =
    " (libssh2 1.10 signs RSA keys with ssh-rsa, SHA-1, which OpenSSH 8.8 and later refuse: use "
    "an ed25519 or ECDSA key, or allow PubkeyAcceptedAlgorithms +ssh-rsa on the server)";

}  // namespace

Connection::Connection(const shm::HostConfig& host, const HostKeys& keys, worker::Poller& poller,
                       worker::Tag tag, uint64_t now)
    : host_(host), keys_(keys), poller_(poller), tag_(tag) {
  start_connect(now);
}

Connection::~Connection() {
  ending_ = true;  // every free below completes at once
  for (LIBSSH2_CHANNEL* ch : closing_) libssh2_channel_free(ch);
  if (agent_ && agent_watched_) poller_.unwatch(agent_->fd());
  if (session_) libssh2_session_free(session_);  // non-blocking: sends what it can, never waits
  if (fd_ && watched_) poller_.unwatch(fd_.get());
}

void Connection::start_connect(uint64_t now) {
  started_ns_ = now;
  login_deadline_ns_ = now + uint64_t(host_.connect_timeout_ms) * kMs;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | AI_NUMERICHOST;  // never a lookup here: the Resolver's
  addrinfo* res = nullptr;
  const std::string port = std::to_string(host_.port);
  int rc = ::getaddrinfo(host_.address.c_str(), port.c_str(), &hints, &res);
  if (rc == 0 && res) {
    connect_to(res->ai_addr, res->ai_addrlen, now);
    ::freeaddrinfo(res);
    return;
  }
  if (res) ::freeaddrinfo(res);
  phase_ = Phase::kResolving;  // a name: the pool asks the Resolver, resolved() goes on
}

void Connection::resolved(const sockaddr* addr, socklen_t len, const std::string& error,
                          uint64_t now) {
  if (phase_ != Phase::kResolving) return;
  if (!len) return kill({RemoteError::kDnsFailed, RemotePhase::kDns, error});
  phase_ = Phase::kConnecting;
  connect_to(addr, len, now);
}

void Connection::connect_to(const sockaddr* addr, socklen_t len, uint64_t now) {
  const std::string port = std::to_string(host_.port);
  auto sock = new_fd("socket", [&] {
    return ::socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  });
  if (!sock)
    return kill({RemoteError::kConnectRefused, RemotePhase::kConnect, sock.error().message()});
  fd_ = std::move(*sock);
  int one = 1;
  ::setsockopt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  auto r = sys_raw([&] { return ::connect(fd_.get(), addr, len); });
  const int err = r < 0 ? int(-r) : 0;  // sys_raw gives -errno
  if (r < 0 && err != EINPROGRESS)
    return kill({RemoteError::kConnectRefused, RemotePhase::kConnect,
                 "cannot connect to " + host_.address + " port " + port + ": " + strerror(err)});
  sync_events();
  if (r == 0) finish_connect(now);
}

void Connection::finish_connect(uint64_t now) {
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  if (err)
    return kill({RemoteError::kConnectRefused, RemotePhase::kConnect,
                 "cannot connect to " + host_.address + " port " + std::to_string(host_.port) +
                     ": " + strerror(err)});
  session_ = libssh2_session_init_ex(nullptr, nullptr, nullptr, this);
  if (!session_)
    return kill({RemoteError::kProtocolError, RemotePhase::kHandshake,
                 "cannot make an SSH session (out of memory)"});
  libssh2_session_callback_set(session_, LIBSSH2_CALLBACK_SEND, reinterpret_cast<void*>(&send_cb));
  libssh2_session_callback_set(session_, LIBSSH2_CALLBACK_RECV, reinterpret_cast<void*>(&recv_cb));
  libssh2_session_set_blocking(session_, 0);
  // Like OpenSSH's client: ed25519 first (libssh2 would take ECDSA first,
  // and a host known by its ed25519 key would then look changed).
  libssh2_session_method_pref(session_, LIBSSH2_METHOD_HOSTKEY,
                              "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,"
                              "ecdsa-sha2-nistp521,ssh-rsa");
  last_inbound_ns_ = now;
  phase_ = Phase::kHandshake;
  handshake(now);
}

// The session's only socket: the SSH agent is ours (agent.h), not libssh2's.
ssize_t Connection::send_cb(libssh2_socket_t, const void* buf, size_t len, int, void** abstract) {
  auto* c = static_cast<Connection*>(*abstract);
  if (c->ending_) return -EPIPE;
  return c->on_send(buf, len);
}

ssize_t Connection::recv_cb(libssh2_socket_t, void* buf, size_t len, int, void** abstract) {
  auto* c = static_cast<Connection*>(*abstract);
  if (c->ending_) return 0;
  return c->on_recv(buf, len);
}

ssize_t Connection::on_send(const void* buf, size_t len) {
  if (out_at_ == out_.size()) {
    out_.clear();
    out_at_ = 0;
    ssize_t n = sys_raw([&] { return ::send(fd_.get(), buf, len, MSG_NOSIGNAL); });
    if (n < 0 && n != -EAGAIN) return n;  // -errno, as libssh2 wants it
    size_t sent = n > 0 ? size_t(n) : 0;
    if (sent == len) return ssize_t(len);
    out_.append(static_cast<const char*>(buf) + sent, len - sent);
    return ssize_t(len);
  }
  if (out_at_ >= kBacklogBytes) {  // what was sent goes, so a steady stream stays bounded
    out_.erase(0, out_at_);
    out_at_ = 0;
  }
  out_.append(static_cast<const char*>(buf), len);
  return ssize_t(len);
}

ssize_t Connection::on_recv(void* buf, size_t len) {
  ssize_t n = sys_raw([&] { return ::recv(fd_.get(), buf, len, 0); });
  if (n > 0) {
    last_inbound_ns_ = monotonic_ns();
    return n;
  }
  if (n == 0) {
    peer_closed_ = true;
    return 0;
  }
  if (n != -EAGAIN) recv_errno_ = int(-n);
  return n;
}

void Connection::flush() {
  while (out_at_ < out_.size()) {
    ssize_t n = sys_raw([&] {
      return ::send(fd_.get(), out_.data() + out_at_, out_.size() - out_at_, MSG_NOSIGNAL);
    });
    if (n <= 0) {
      if (n < 0 && n != -EAGAIN)
        kill({RemoteError::kConnectionLost, current_phase(),
              std::string("the connection broke: ") + strerror(int(-n))});
      return;
    }
    out_at_ += size_t(n);
  }
  out_.clear();
  out_at_ = 0;
}

void Connection::sync_events() {
  if (!fd_) return;
  uint32_t want = !ready() || busy() ? EPOLLIN : EPOLLRDHUP;
  if (phase_ == Phase::kConnecting || out_at_ < out_.size()) want |= EPOLLOUT;
  if (phase_ == Phase::kDead) want = 0;
  if (want == watched_) return;
  if (!watched_)
    (void)poller_.watch(fd_.get(), tag_, want);
  else if (!want)
    poller_.unwatch(fd_.get());
  else
    (void)poller_.modify(fd_.get(), tag_, want);
  watched_ = want;
}

RemotePhase Connection::current_phase() const {
  switch (phase_) {
    case Phase::kResolving:
      return RemotePhase::kDns;
    case Phase::kConnecting:
      return RemotePhase::kConnect;
    case Phase::kHandshake:
      return key_.blob.empty() ? RemotePhase::kHandshake : RemotePhase::kHostkey;
    case Phase::kAuth:
      return RemotePhase::kAuth;
    case Phase::kReady:
    case Phase::kDead:
      break;
  }
  return RemotePhase::kRun;
}

void Connection::kill(Failure why) {
  if (phase_ == Phase::kDead) return;
  failure_ = std::move(why);
  phase_ = Phase::kDead;
  sync_events();
  watch_agent();
}

Failure Connection::lib_failure(RemoteError code, const std::string& what) const {
  char* msg = nullptr;
  int len = 0;
  int err = session_ ? libssh2_session_last_error(session_, &msg, &len, 0) : 0;
  std::string text = what;
  if (peer_closed_)
    return {RemoteError::kConnectionLost, current_phase(),
            what + ": the server closed the connection"};
  if (recv_errno_)
    return {RemoteError::kConnectionLost, current_phase(), what + ": " + strerror(recv_errno_)};
  if (msg && len > 0) text += ": " + std::string(msg, size_t(len));
  if (err == LIBSSH2_ERROR_KEX_FAILURE)
    text +=
        " (no key exchange or host key algorithm in common; libssh2 1.10 has no rsa-sha2, so "
        "a server with only an RSA host key cannot be used)";
  return {code, current_phase(), text};
}

void Connection::free_channel(LIBSSH2_CHANNEL* channel) {
  if (libssh2_channel_free(channel) == LIBSSH2_ERROR_EAGAIN) closing_.push_back(channel);
}

void Connection::retry_frees() {
  std::erase_if(closing_, [](LIBSSH2_CHANNEL* ch) {
    return libssh2_channel_free(ch) != LIBSSH2_ERROR_EAGAIN;
  });
}

void Connection::fail(const std::string& what) {
  kill(lib_failure(RemoteError::kConnectionLost, what));
}

void Connection::on_event(uint32_t events, uint64_t now) {
  if (dead()) return;
  if (events & EPOLLOUT) flush();
  if (dead()) return;
  if (ready() && !busy() && (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
    return kill(
        {RemoteError::kConnectionLost, RemotePhase::kRun, "the server closed the idle connection"});
  if (phase_ == Phase::kConnecting) {
    if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) finish_connect(now);
  } else if (phase_ == Phase::kHandshake) {
    handshake(now);
  } else if (phase_ == Phase::kAuth) {
    authenticate(now);
  }
  sync_events();
}

void Connection::on_agent_event(uint64_t now) {
  if (phase_ == Phase::kAuth) authenticate(now);
  sync_events();
}

void Connection::handshake(uint64_t now) {
  if (key_.blob.empty()) {
    int rc = libssh2_session_handshake(session_, libssh2_socket_t(fd_.get()));
    if (rc == LIBSSH2_ERROR_EAGAIN) return;
    if (rc) return kill(lib_failure(RemoteError::kProtocolError, "SSH handshake failed"));
    if (const char* b = libssh2_session_banner_get(session_)) banner_ = b;
    key_ = host_key_of(session_);
    if (Failure f = keys_.check(session_, host_, key_)) return kill(std::move(f));
  }
  phase_ = Phase::kAuth;
  authenticate(now);
}

Failure Connection::auth_failure(const std::string& tried) const {
  std::string text = "authentication as " + host_.user + " failed: tried " + tried +
                     "; the server offers " + (methods_.empty() ? "nothing" : methods_);
  if (host_.auth == shm::HostAuth::kKey && looks_rsa(host_.key_file)) text += kRsaHint;
  return {RemoteError::kAuthFailed, RemotePhase::kAuth, text};
}

void Connection::authenticate(uint64_t now) {
  if (!listed_) {
    char* list = libssh2_userauth_list(session_, host_.user.data(), unsigned(host_.user.size()));
    if (!list) {
      if (libssh2_userauth_authenticated(session_)) {  // "none" was enough
        listed_ = true;
      } else if (libssh2_session_last_errno(session_) == LIBSSH2_ERROR_EAGAIN) {
        return;
      } else {
        return kill(lib_failure(RemoteError::kProtocolError, "cannot list the login methods"));
      }
    } else {
      methods_ = list;
      listed_ = true;
    }
  }
  if (!libssh2_userauth_authenticated(session_)) {
    bool done = host_.auth == shm::HostAuth::kKey     ? auth_key()
                : host_.auth == shm::HostAuth::kAgent ? auth_agent()
                                                      : auth_password();
    if (!done || dead()) return;
  }
  phase_ = Phase::kReady;
  watch_agent();  // done with it
  login_ns_ = now - started_ns_;
  idle_since_ns = now;
  // want a reply: our sign of life
  libssh2_keepalive_config(session_, 1, unsigned(keepalive_every_ns() / (1000 * kMs)));
  next_keepalive_ns_ = now + keepalive_every_ns();
  spdlog::debug("host {}: connected in {} ms", host_.name, login_ns_ / kMs);
}

// Each returns true once logged in; false while it waits (EAGAIN) or after
// it killed the connection with the failure.
bool Connection::auth_key() {
  if (!offers(methods_, "publickey")) {
    kill(auth_failure("publickey"));
    return false;
  }
  if (::access(host_.key_file.c_str(), R_OK) != 0) {
    kill({RemoteError::kKeyLoadFailed, RemotePhase::kAuth,
          "cannot read the key file " + host_.key_file + ": " + strerror(errno)});
    return false;
  }
  int rc = libssh2_userauth_publickey_fromfile_ex(
      session_, host_.user.data(), unsigned(host_.user.size()), nullptr, host_.key_file.c_str(),
      host_.secret.empty() ? nullptr : host_.secret.c_str());
  if (rc == 0) return true;
  if (rc == LIBSSH2_ERROR_EAGAIN) return false;
  if (rc == LIBSSH2_ERROR_FILE)
    kill({RemoteError::kKeyLoadFailed, RemotePhase::kAuth,
          "cannot load the key " + host_.key_file +
              " (a wrong passphrase, or a key format libssh2 1.10 cannot read)"});
  else if (rc == LIBSSH2_ERROR_SOCKET_RECV || rc == LIBSSH2_ERROR_SOCKET_SEND ||
           rc == LIBSSH2_ERROR_SOCKET_DISCONNECT)
    kill(lib_failure(RemoteError::kConnectionLost, "the connection broke while logging in"));
  else
    kill(auth_failure("publickey with " + host_.key_file));
  return false;
}

std::string Connection::agent_path() const {
  if (!host_.agent_socket.empty()) return host_.agent_socket;
  const char* env = ::getenv("SSH_AUTH_SOCK");
  return env ? env : "";
}

// The agent's socket is watched while a request is under way; closed when
// the login is done or failed.
void Connection::watch_agent() {
  if (!agent_) return;
  const bool busy = phase_ == Phase::kAuth && agent_->state() == Agent::State::kBusy;
  const uint32_t want = !busy ? 0u : agent_->wants_write() ? uint32_t(EPOLLOUT) : uint32_t(EPOLLIN);
  const worker::Tag tag{tag_.kind, tag_.entry, tag_.generation | kAgentEvent};
  if (want != agent_watched_) {
    if (!agent_watched_)
      (void)poller_.watch(agent_->fd(), tag, want);
    else if (!want)
      poller_.unwatch(agent_->fd());
    else
      (void)poller_.modify(agent_->fd(), tag, want);
    agent_watched_ = want;
  }
  if (phase_ != Phase::kAuth) {
    if (agent_watched_) poller_.unwatch(agent_->fd());
    agent_.reset();
    agent_watched_ = 0;
  }
}

// Asks the agent for its keys, once: true when they are there.
bool Connection::list_agent_keys() {
  const std::string path = agent_path();
  if (!agent_) {
    if (path.empty()) {
      kill({RemoteError::kAgentUnavailable, RemotePhase::kAuth,
            "no agent socket: give auth.agent_socket, or start the daemon with SSH_AUTH_SOCK"});
      return false;
    }
    agent_ = std::make_unique<Agent>();
    if (std::string err = agent_->connect(path); !err.empty()) {
      kill({RemoteError::kAgentUnavailable, RemotePhase::kAuth,
            "cannot reach the SSH agent at " + path + ": " + err});
      return false;
    }
    agent_->ask_keys();
  }
  Agent::State st = agent_->pump();
  watch_agent();
  if (st == Agent::State::kBusy) return false;
  auto keys = agent_->keys();
  if (!keys) {
    kill({RemoteError::kAgentUnavailable, RemotePhase::kAuth,
          "cannot list the keys of the SSH agent at " + path + ": " + agent_->error()});
    return false;
  }
  if (keys->empty()) {
    kill(auth_failure("publickey (the agent at " + path + " holds no key)"));
    return false;
  }
  agent_keys_ = std::move(*keys);
  agent_listed_ = true;
  agent_->reset();
  return true;
}

bool Connection::auth_agent() {
  if (!offers(methods_, "publickey")) {
    kill(auth_failure("publickey (agent)"));
    return false;
  }
  if (!agent_listed_ && !list_agent_keys()) return false;
  for (;;) {
    const std::string& blob = agent_keys_[agent_key_].blob;
    int rc = libssh2_userauth_publickey(session_, host_.user.c_str(),
                                        reinterpret_cast<const unsigned char*>(blob.data()),
                                        blob.size(), &sign_cb, &self_);
    watch_agent();
    if (rc == 0) return true;
    if (rc == LIBSSH2_ERROR_EAGAIN) return false;
    if (agent_->state() == Agent::State::kFailed) {
      kill({RemoteError::kAgentUnavailable, RemotePhase::kAuth,
            "the SSH agent at " + agent_path() + " did not sign: " + agent_->error()});
      return false;
    }
    if (rc != LIBSSH2_ERROR_AUTHENTICATION_FAILED && rc != LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED) {
      kill(lib_failure(RemoteError::kConnectionLost, "the connection broke while logging in"));
      return false;
    }
    agent_->reset();
    if (++agent_key_ == agent_keys_.size()) {
      kill(auth_failure("publickey with every key of the agent"));
      return false;
    }
  }
}

int Connection::sign_cb(LIBSSH2_SESSION*, unsigned char** sig, size_t* sig_len,
                        const unsigned char* data, size_t data_len, void** abstract) {
  auto* c = static_cast<Connection*>(*abstract);
  return c->agent_sign(sig, sig_len,
                       std::string_view(reinterpret_cast<const char*>(data), data_len));
}

// libssh2 calls it again with the same data after each EAGAIN.
int Connection::agent_sign(unsigned char** sig, size_t* sig_len, std::string_view data) {
  if (agent_->state() == Agent::State::kIdle)
    agent_->ask_signature(agent_keys_[agent_key_].blob, data);
  Agent::State st = agent_->pump();
  watch_agent();
  if (st == Agent::State::kBusy) return LIBSSH2_ERROR_EAGAIN;
  auto bytes = agent_->signature();
  if (!bytes) {
    // A refusal is this key's failure; the next key may do.
    if (st == Agent::State::kDone) agent_->reset();
    return -1;
  }
  // libssh2 frees it with its allocator: the default one, malloc's.
  *sig = static_cast<unsigned char*>(::malloc(bytes->size()));
  if (!*sig) return -1;
  std::memcpy(*sig, bytes->data(), bytes->size());
  *sig_len = bytes->size();
  agent_->reset();
  return 0;
}

bool Connection::auth_password() {
  if (!offers(methods_, "password")) {
    kill(auth_failure("password"));
    return false;
  }
  int rc =
      libssh2_userauth_password_ex(session_, host_.user.data(), unsigned(host_.user.size()),
                                   host_.secret.data(), unsigned(host_.secret.size()), nullptr);
  if (rc == 0) return true;
  if (rc == LIBSSH2_ERROR_EAGAIN) return false;
  kill(auth_failure("password"));
  return false;
}

void Connection::on_timer(uint64_t now) {
  if (dead()) return;
  if (!ready()) {
    if (now < login_deadline_ns_) return;
    if (phase_ == Phase::kResolving)
      return kill({RemoteError::kDnsFailed, RemotePhase::kDns,
                   "no address for " + host_.address + " within " +
                       std::to_string(host_.connect_timeout_ms) + " ms"});
    if (agent_ && agent_->state() == Agent::State::kBusy)
      return kill({RemoteError::kAgentUnavailable, RemotePhase::kAuth,
                   "the SSH agent at " + agent_path() + " did not answer within " +
                       std::to_string(host_.connect_timeout_ms) + " ms"});
    if (phase_ == Phase::kConnecting)
      return kill({RemoteError::kConnectTimeout, RemotePhase::kConnect,
                   "no TCP connection to " + host_.address + " port " + std::to_string(host_.port) +
                       " within " + std::to_string(host_.connect_timeout_ms) + " ms"});
    return kill({RemoteError::kLoginTimeout, current_phase(),
                 "not logged in to " + host_.address + " within " +
                     std::to_string(host_.connect_timeout_ms) + " ms (" +
                     (banner_.empty() && key_.blob.empty() ? "the server sent no SSH banner"
                                                           : "the server stopped answering") +
                     ")"});
  }
  const uint64_t every = keepalive_every_ns();
  if (!busy()) {  // nothing reads it: the clock starts when it is used again
    last_inbound_ns_ = now;
    next_keepalive_ns_ = now + every;
    return;
  }
  // Three keepalives without any answer: the peer hangs (its TCP may still ACK).
  if (now >= silent_limit_ns())
    return kill({RemoteError::kKeepaliveTimeout, RemotePhase::kRun,
                 "no answer from " + host_.address + " for " +
                     std::to_string((now - last_inbound_ns_) / kMs) + " ms (3 keepalives)"});
  if (now >= next_keepalive_ns_) {
    int next_s = 0;
    libssh2_keepalive_send(session_, &next_s);
    next_keepalive_ns_ = now + every;
    sync_events();
  }
}

uint64_t Connection::next_deadline() const {
  if (dead()) return 0;
  if (!ready()) return login_deadline_ns_;
  if (!busy()) return 0;
  return std::min(next_keepalive_ns_, silent_limit_ns());
}

// libssh2 counts keepalive intervals in whole seconds of the wall clock, and
// makes 1 second 2: keepalive_ms rounded up to that.
uint64_t Connection::keepalive_every_ns() const {
  const uint64_t s = std::max<uint64_t>(2, (uint64_t(host_.keepalive_ms) + 999) / 1000);
  return s * 1000 * kMs;
}

// Three intervals without a byte from the host, and a second more for
// libssh2's whole-second clock.
uint64_t Connection::silent_limit_ns() const {
  return last_inbound_ns_ + 3 * keepalive_every_ns() + 1000 * kMs;
}

}  // namespace sp::remote
