// Connection: one SSH connection of the remote worker's pool to a host: a
// non-blocking TCP socket and a libssh2 session, from connect through the
// key exchange, the host-key check and the login to ready, then kept alive.
// Every timeout is ours (connect_timeout_ms bounds everything up to ready;
// keepalives with a reply detect a hung peer, since a stopped sshd still
// ACKs TCP).
//
// libssh2 writes through our send callback, which never returns EAGAIN: what
// the socket does not take is kept in a buffer sent when the socket is
// writable. So a packet is never left half-sent inside libssh2, where a
// write on another channel would get LIBSSH2_ERROR_BAD_USE. Callers that
// write bulk data (stdin) check backlogged() first: the buffer stays bounded.
//
// Used from the remote worker's single thread; owned by its host's pool.
// Borrows the host's settings, the HostKeys and the Poller: they outlive it.
#pragma once

#include <libssh2.h>
#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "remote/agent.h"
#include "remote/failure.h"
#include "remote/host_keys.h"
#include "shm/host_table.h"
#include "worker/poller.h"

namespace sp::remote {

// A libssh2 error of one channel (the server refused or closed it): the
// connection goes on. Any other error of a channel call is the session's.
inline bool channel_error(int rc) {
  return (rc <= LIBSSH2_ERROR_CHANNEL_OUTOFORDER && rc >= LIBSSH2_ERROR_CHANNEL_EOF_SENT) ||
         rc == LIBSSH2_ERROR_CHANNEL_WINDOW_FULL;
}

class Connection {
 public:
  enum class Phase { kResolving, kConnecting, kHandshake, kAuth, kReady, kDead };

  // Starts connecting to `host`, watched in `poller` with `tag`; a host
  // given by name waits in kResolving for resolved(). A failure to even
  // start leaves it dead.
  Connection(const shm::HostConfig& host, const HostKeys& keys, worker::Poller& poller,
             worker::Tag tag, uint64_t now);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // After a socket event or a deadline: flushes, then moves the login on as
  // far as it goes. Ready connections are driven by their channels' users.
  void on_event(uint32_t events, uint64_t now);
  // The SSH agent's socket (watched with the tag's generation | kAgentEvent)
  // is ready: the login goes on.
  void on_agent_event(uint64_t now);
  static constexpr uint32_t kAgentEvent = 1u << 31;
  // Keepalives and the login deadline; dead if one passed.
  void on_timer(uint64_t now);
  uint64_t next_deadline() const;
  uint64_t keepalive_every_ns() const;

  // The Resolver's answer for its name: `len` 0 is a failure (`error`).
  void resolved(const sockaddr* addr, socklen_t len, const std::string& error, uint64_t now);
  bool resolving() const { return phase_ == Phase::kResolving; }
  // Ends it (a host removed, an idle connection, a failure of its own).
  void kill(Failure why);
  // A libssh2 call of a channel user failed for the session: ends it with
  // what libssh2 says (connection_lost when the socket broke).
  void fail(const std::string& what);

  Phase phase() const { return phase_; }
  bool ready() const { return phase_ == Phase::kReady; }
  bool dead() const { return phase_ == Phase::kDead; }
  const Failure& failure() const { return failure_; }
  LIBSSH2_SESSION* session() const { return session_; }
  // Frees `channel` (a close handshake libssh2 may not finish at once:
  // then it is retried by retry_frees()).
  void free_channel(LIBSSH2_CHANNEL* channel);
  void retry_frees();
  // Too much output waits for the socket: hold bulk writes.
  bool backlogged() const { return out_.size() - out_at_ >= kBacklogBytes; }
  // Re-arms the socket's events after libssh2 calls (it may have buffered output).
  void sync_events();

  const std::string& host_name() const { return host_.name; }
  // The bound of every step up to a logged-in connection, and of each
  // channel step after it (open, the command's start, the close).
  uint64_t step_timeout_ns() const { return uint64_t(host_.connect_timeout_ms) * 1'000'000; }
  const HostKey& host_key() const { return key_; }
  const std::string& banner() const { return banner_; }
  const std::string& auth_methods() const { return methods_; }
  uint64_t login_ns() const { return login_ns_; }  // connect to ready; 0: not yet

  // Its channels, as the pool counts them.
  uint32_t channels = 0;
  bool opening = false;  // a channel open is under way (libssh2 does one at a time)
  uint64_t idle_since_ns = 0;
  // Something of it is under way: it is read, and kept alive. An idle
  // connection is only watched for the peer closing it: nothing of ours
  // would read what arrives (libssh2 reads only inside a channel's calls).
  bool busy() const { return channels > 0 || opening; }

  static constexpr size_t kBacklogBytes = 1 << 20;

 private:
  static ssize_t send_cb(libssh2_socket_t fd, const void* buf, size_t len, int flags,
                         void** abstract);
  static ssize_t recv_cb(libssh2_socket_t fd, void* buf, size_t len, int flags, void** abstract);
  ssize_t on_send(const void* buf, size_t len);
  ssize_t on_recv(void* buf, size_t len);
  void flush();

  void start_connect(uint64_t now);
  void connect_to(const sockaddr* addr, socklen_t len, uint64_t now);
  void finish_connect(uint64_t now);
  void handshake(uint64_t now);
  void authenticate(uint64_t now);
  bool auth_key();
  bool auth_agent();
  bool list_agent_keys();
  // libssh2's signing callback: the agent signs, while libssh2 gets EAGAIN.
  static int sign_cb(LIBSSH2_SESSION* session, unsigned char** sig, size_t* sig_len,
                     const unsigned char* data, size_t data_len, void** abstract);
  int agent_sign(unsigned char** sig, size_t* sig_len, std::string_view data);
  void watch_agent();
  std::string agent_path() const;
  bool auth_password();
  // The libssh2 error of a failed call, as a failure of `code` in the current phase.
  Failure lib_failure(RemoteError code, const std::string& what) const;
  Failure auth_failure(const std::string& tried) const;
  RemotePhase current_phase() const;

  const shm::HostConfig& host_;
  const HostKeys& keys_;
  worker::Poller& poller_;
  worker::Tag tag_;
  UniqueFd fd_;
  LIBSSH2_SESSION* session_ = nullptr;
  std::unique_ptr<Agent> agent_;  // while logging in with the agent
  std::vector<Agent::Key> agent_keys_;
  size_t agent_key_ = 0;  // the one being tried
  bool agent_listed_ = false;
  uint32_t agent_watched_ = 0;
  void* self_ = this;  // libssh2's abstract for sign_cb
  Phase phase_ = Phase::kConnecting;
  Failure failure_;
  HostKey key_;
  std::string banner_, methods_;
  bool listed_ = false;  // auth methods asked for
  std::string out_;      // what the socket has not taken yet
  size_t out_at_ = 0;
  uint32_t watched_ = 0;  // the events registered with the poller
  bool peer_closed_ = false;
  bool ending_ = false;  // being destroyed: the socket reads as closed, so libssh2 gives up
  std::vector<LIBSSH2_CHANNEL*> closing_;  // freed, waiting for the host's close
  int recv_errno_ = 0;
  uint64_t started_ns_ = 0, login_deadline_ns_ = 0, login_ns_ = 0;
  uint64_t last_inbound_ns_ = 0, next_keepalive_ns_ = 0;
  uint64_t silent_limit_ns() const;  // keepalive_timeout when nothing came by then
};

}  // namespace sp::remote
