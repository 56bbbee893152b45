#include "remote/host_keys.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include <memory>

#include "common/log.h"
#include "common/sys.h"
#include "common/text.h"
#include "common/unique_fd.h"

namespace sp::remote {

namespace {

struct KnownType {
  int hostkey_type;  // LIBSSH2_HOSTKEY_TYPE_*
  const char* name;
  int bits;  // LIBSSH2_KNOWNHOST_KEY_*
};
constexpr KnownType kTypes[] = {
    {LIBSSH2_HOSTKEY_TYPE_ED25519, "ssh-ed25519", LIBSSH2_KNOWNHOST_KEY_ED25519},
    {LIBSSH2_HOSTKEY_TYPE_ECDSA_256, "ecdsa-sha2-nistp256", LIBSSH2_KNOWNHOST_KEY_ECDSA_256},
    {LIBSSH2_HOSTKEY_TYPE_ECDSA_384, "ecdsa-sha2-nistp384", LIBSSH2_KNOWNHOST_KEY_ECDSA_384},
    {LIBSSH2_HOSTKEY_TYPE_ECDSA_521, "ecdsa-sha2-nistp521", LIBSSH2_KNOWNHOST_KEY_ECDSA_521},
    {LIBSSH2_HOSTKEY_TYPE_RSA, "ssh-rsa", LIBSSH2_KNOWNHOST_KEY_SSHRSA},
    {LIBSSH2_HOSTKEY_TYPE_DSS, "ssh-dss", LIBSSH2_KNOWNHOST_KEY_SSHDSS},
};

// "[address]:port", or the address alone on port 22: the name known_hosts uses.
std::string known_name(const shm::HostConfig& h) {
  return h.port == 22 ? h.address : "[" + h.address + "]:" + std::to_string(h.port);
}

std::string strip_prefix(std::string fp) {
  if (fp.rfind("SHA256:", 0) == 0) fp.erase(0, 7);
  while (!fp.empty() && fp.back() == '=') fp.pop_back();
  return fp;
}

}  // namespace

HostKey host_key_of(LIBSSH2_SESSION* session) {
  HostKey k;
  size_t len = 0;
  int type = 0;
  const char* blob = libssh2_session_hostkey(session, &len, &type);
  if (!blob) return k;
  k.blob.assign(blob, len);
  k.type = "unknown";
  for (const KnownType& t : kTypes)
    if (t.hostkey_type == type) {
      k.type = t.name;
      k.known_type_bits = t.bits;
    }
  if (const char* hash = libssh2_hostkey_hash(session, LIBSSH2_HOSTKEY_HASH_SHA256)) {
    std::string b64;
    append_base64(b64, std::string_view(hash, 32));
    while (!b64.empty() && b64.back() == '=') b64.pop_back();
    k.fingerprint = "SHA256:" + b64;
  }
  return k;
}

HostKeys::Found HostKeys::look_up(LIBSSH2_SESSION* session, const std::string& file,
                                  const shm::HostConfig& h, const HostKey& key,
                                  bool any_type) const {
  if (file.empty() || (::access(file.c_str(), F_OK) != 0 && errno == ENOENT))
    return Found::kNone;  // a missing file knows no host
  std::unique_ptr<LIBSSH2_KNOWNHOSTS, decltype(&libssh2_knownhost_free)> kh(
      libssh2_knownhost_init(session), &libssh2_knownhost_free);
  // A line libssh2 cannot parse ends its reading there: what the rest holds
  // for this host is unknown.
  if (!kh || libssh2_knownhost_readfile(kh.get(), file.c_str(), LIBSSH2_KNOWNHOST_FILE_OPENSSH) < 0)
    return Found::kUnreadable;
  libssh2_knownhost* entry = nullptr;
  int r = libssh2_knownhost_checkp(kh.get(), h.address.c_str(), int(h.port), key.blob.data(),
                                   key.blob.size(),
                                   LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW |
                                       (any_type ? 0 : key.known_type_bits),
                                   &entry);
  if (r == LIBSSH2_KNOWNHOST_CHECK_MATCH) return Found::kMatch;
  if (r == LIBSSH2_KNOWNHOST_CHECK_MISMATCH) return Found::kMismatch;
  if (r == LIBSSH2_KNOWNHOST_CHECK_FAILURE) return Found::kUnreadable;
  return Found::kNone;
}

Failure HostKeys::record(const shm::HostConfig& h, const HostKey& key) const {
  std::string b64;
  append_base64(b64, key.blob);
  std::string line = known_name(h) + " " + key.type + " " + b64 + "\n";
  auto fd = new_fd("open known_hosts", [&] {
    return ::open(own_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  });
  // One write of a whole line with O_APPEND: never interleaved with another.
  if (!fd ||
      sys_raw([&] { return ::write(fd->get(), line.data(), line.size()); }) != ssize_t(line.size()))
    return {RemoteError::kHostkeyUnknown, RemotePhase::kHostkey,
            "host key " + key.fingerprint + " of " + known_name(h) + " could not be recorded in " +
                own_};
  spdlog::info("host {}: recorded its {} key {} in {} (accept-new)", h.name, key.type,
               key.fingerprint, own_);
  return {};
}

Failure HostKeys::check(LIBSSH2_SESSION* session, const shm::HostConfig& h,
                        const HostKey& key) const {
  using P = shm::HostKeyPolicy;
  const std::string where = known_name(h);
  if (key.blob.empty())
    return {RemoteError::kProtocolError, RemotePhase::kHostkey, "the server showed no host key"};
  switch (h.policy) {
    case P::kInsecure:
      spdlog::warn("host {}: its key {} is not checked (host key policy insecure)", h.name,
                   key.fingerprint);
      return {};
    case P::kPinned:
      if (strip_prefix(h.fingerprint) == strip_prefix(key.fingerprint)) return {};
      return {
          RemoteError::kHostkeyMismatch, RemotePhase::kHostkey,
          "host key of " + where + " is " + key.fingerprint + ", not the pinned " + h.fingerprint};
    case P::kStrict:
    case P::kAcceptNew:
      break;
  }
  Found own = look_up(session, own_, h, key);
  Found user = own == Found::kNone ? look_up(session, user_, h, key) : own;
  if (own == Found::kMatch || user == Found::kMatch) return {};
  for (const auto& [found, file] : {std::pair{own, own_}, {user, user_}})
    if (found == Found::kUnreadable)
      return {RemoteError::kHostkeyUnknown, RemotePhase::kHostkey,
              "host key of " + where + " cannot be checked: libssh2 cannot read all of " + file +
                  " (a line it does not understand)"};
  // Before trusting a new key: the host known by a key of another type is a
  // changed key, not a new one.
  if (own == Found::kNone && user == Found::kNone && h.policy == P::kAcceptNew) {
    own = look_up(session, own_, h, key, true);
    user = look_up(session, user_, h, key, true);
  }
  if (own == Found::kMismatch || user == Found::kMismatch)
    return {RemoteError::kHostkeyMismatch, RemotePhase::kHostkey,
            "host key of " + where + " changed: it is now " + key.type + " " + key.fingerprint +
                ", which does not match the known_hosts entry; if the change is expected, "
                "remove the old entry"};
  if (h.policy == P::kAcceptNew) return record(h, key);
  return {RemoteError::kHostkeyUnknown, RemotePhase::kHostkey,
          "host key of " + where + " is not known: " + key.type + " " + key.fingerprint +
              "; add it to " + own_ + ", or pin it (host_key: {policy: pinned, fingerprint})"};
}

}  // namespace sp::remote
