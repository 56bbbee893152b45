// The supervisor's side of systemd's service protocol, through libsystemd
// (sd_notify(3), sd_watchdog_enabled(3), sd_listen_fds(3)): readiness and
// status, the watchdog, and socket activation. Only the supervisor (the main
// PID) speaks it; the variables that carry it never reach a role or a job
// (child_environment()).
//
// Without systemd (no NOTIFY_SOCKET, no WATCHDOG_USEC, no LISTEN_FDS) every
// call here does nothing. A failure to notify is logged once and never
// fatal: the daemon serves on.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace sp::supervisor {

// A listening socket systemd passed (LISTEN_FDS), and where it lives.
struct ActivatedSocket {
  UniqueFd fd;
  std::string path;  // its filesystem path, or "@name" for an abstract one
};

// Takes the socket systemd passed when LISTEN_PID is ours: the one named
// "rpc" (LISTEN_FDNAMES), or the only one. nullopt when none was passed
// (or it was meant for another process). An error when what was passed is
// not one listening AF_UNIX stream socket: a configuration error (exit 78).
// Unsets LISTEN_*; closes the passed fds it does not use.
Result<std::optional<ActivatedSocket>> take_activated_socket();

class ServiceManager {
 public:
  // Reads NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID (the watchdog only
  // when it is meant for us), and unsets WATCHDOG_*. Call once, first thing.
  static ServiceManager from_environment();

  // The environment for the roles (and so for every job): ours without
  // NOTIFY_SOCKET, WATCHDOG_* and LISTEN_*.
  static std::vector<std::string> child_environment();

  bool notifying() const { return notifying_; }

  // READY=1 with STATUS=.
  void ready(std::string_view status);
  // STATUS=, sent only when it differs from the last one and at most once a
  // second (call it as often as you like).
  void status(std::string_view status, uint64_t now_ns);
  // Whether status() would send now: notifying, and a second since the last.
  bool status_due(uint64_t now_ns) const {
    return notifying_ && now_ns - last_status_ns_ >= 1'000'000'000;
  }
  // STOPPING=1 with STATUS= and EXTEND_TIMEOUT_USEC= (how long stopping may
  // still take); again while draining, to extend the stop timeout.
  void stopping(std::string_view status, uint64_t extend_ns);
  // A reload begins: RELOADING=1 and MONOTONIC_USEC= in one datagram
  // (ready() ends it, success or not).
  void reloading();
  // A fatal start error: STATUS= and ERRNO=.
  void failed(std::string_view status, int err);

  // The watchdog: WATCHDOG=1 at half of WATCHDOG_USEC. next_ping_ns() is 0
  // when there is no watchdog; ping_if_due() sends when it is due.
  uint64_t next_ping_ns() const { return next_ping_ns_; }
  void ping_if_due(uint64_t now_ns);

 private:
  void send(const std::string& state);

  bool notifying_ = false;
  bool warned_ = false;
  uint64_t ping_every_ns_ = 0;
  uint64_t next_ping_ns_ = 0;
  std::string last_status_;
  uint64_t last_status_ns_ = 0;
};

}  // namespace sp::supervisor
