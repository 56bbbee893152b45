#include "supervisor/listener.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "common/sys.h"

namespace sp::supervisor {

namespace {

Result<sockaddr_un> address_of(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path)
    return Error{ENAMETOOLONG, "socket path must be 1.." +
                                   std::to_string(sizeof addr.sun_path - 1) + " bytes: " + path};
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

// mkdir -p for the socket's directory; directories we create are 0700.
Status make_parent_dirs(const std::string& path) {
  for (size_t pos = path.find('/', 1); pos != std::string::npos; pos = path.find('/', pos + 1)) {
    std::string dir = path.substr(0, pos);
    if (::mkdir(dir.c_str(), 0700) < 0 && errno != EEXIST) return Error{errno, "mkdir " + dir};
  }
  return {};
}

}  // namespace

SocketState probe_socket(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) < 0) return SocketState::kAbsent;
  auto addr = address_of(path);
  if (!addr) return SocketState::kAbsent;
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return SocketState::kStale;
  int r = sys_raw(
      [&] { return ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr); });
  return r == 0 ? SocketState::kLive : SocketState::kStale;
}

Result<UniqueFd> listen_on(const std::string& path) {
  auto addr = address_of(path);
  if (!addr) return addr.error();
  if (Status s = make_parent_dirs(path); !s) return s.error();
  auto fd = sys("socket", [] { return ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0); });
  if (!fd) return fd.error();
  UniqueFd sock(*fd);
  ::unlink(path.c_str());  // a stale socket file; the caller checked it is not live
  mode_t old = ::umask(0177);
  auto b = sys("bind", [&] {
    return ::bind(sock.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr);
  });
  ::umask(old);
  if (!b) return Error{b.error().code, "bind " + path};
  if (auto c = sys("chmod", [&] { return ::chmod(path.c_str(), 0600); }); !c)
    return Error{c.error().code, "chmod 0600 " + path};
  if (auto l = sys("listen", [&] { return ::listen(sock.get(), 1024); }); !l)
    return Error{l.error().code, "listen " + path};
  return sock;
}

}  // namespace sp::supervisor
