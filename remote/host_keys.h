// Host-key checking for remote hosts: a host's key against its policy
// (strict, accept-new, pinned, insecure), the daemon's own known_hosts file
// (read, and appended to under accept-new) and the daemon user's, which is
// only read. libssh2 reads the files (hashed names included); the lines we
// add are plain "[address]:port type base64" (the bare address on port
// 22), as OpenSSH writes them.
//
// Used from the remote worker's single thread, once per new connection;
// holds only the two paths.
#pragma once

#include <libssh2.h>

#include <string>

#include "remote/failure.h"
#include "shm/host_table.h"

namespace sp::remote {

// A host key as a server showed it.
struct HostKey {
  std::string blob;         // the raw key (SSH wire format)
  std::string type;         // "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa", ...
  int known_type_bits = 0;  // its LIBSSH2_KNOWNHOST_KEY_* bits
  std::string fingerprint;  // "SHA256:" + base64 of its SHA-256, unpadded, as ssh-keygen -l
};
// The key the session's server showed; empty blob if none (no handshake yet).
HostKey host_key_of(LIBSSH2_SESSION* session);

class HostKeys {
 public:
  HostKeys(std::string own_file, std::string user_file)
      : own_(std::move(own_file)), user_(std::move(user_file)) {}

  // Whether `key` of host `h` may be trusted under its policy; a failure
  // (hostkey_unknown, hostkey_mismatch) names the key's fingerprint.
  Failure check(LIBSSH2_SESSION* session, const shm::HostConfig& h, const HostKey& key) const;

 private:
  // kUnreadable: the file exists but libssh2 could not read all of it, so
  // what it holds for the host is unknown (the check fails closed).
  enum class Found { kMatch, kMismatch, kNone, kUnreadable };
  // `any_type`: an entry of any key type for the host counts (its key then
  // mismatches ours unless it is ours).
  Found look_up(LIBSSH2_SESSION* session, const std::string& file, const shm::HostConfig& h,
                const HostKey& key, bool any_type = false) const;
  Failure record(const shm::HostConfig& h, const HostKey& key) const;

  std::string own_, user_;
};

}  // namespace sp::remote
