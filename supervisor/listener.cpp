#include "supervisor/listener.h"

#include <netdb.h>
#include <netinet/in.h>
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

Result<HostPort> parse_host_port(const std::string& address) {
  auto bad = [&](const char* why) {
    return Error{EINVAL, "--metrics-listen " + address + ": " + why +
                             " (the form is ADDRESS:PORT, e.g. 127.0.0.1:9100 or [::1]:9100)"};
  };
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad("no port");
  HostPort hp{address.substr(0, colon), address.substr(colon + 1)};
  if (hp.host.front() == '[') {
    if (hp.host.size() < 3 || hp.host.back() != ']') return bad("an IPv6 address needs [ ]");
    hp.host = hp.host.substr(1, hp.host.size() - 2);
  } else if (hp.host.find(':') != std::string::npos) {
    return bad("an IPv6 address needs [ ]");
  }
  if (hp.port.empty() || hp.port.size() > 5 ||
      hp.port.find_first_not_of("0123456789") != std::string::npos || std::stoul(hp.port) > 65535)
    return bad("the port must be 0..65535");
  return hp;
}

Result<UniqueFd> listen_tcp(const std::string& address) {
  auto hp = parse_host_port(address);
  if (!hp) return hp.error();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int r = ::getaddrinfo(hp->host.c_str(), hp->port.c_str(), &hints, &found); r != 0)
    return Error{EINVAL, "--metrics-listen " + address + ": " + ::gai_strerror(r)};
  Error last{EADDRNOTAVAIL, "--metrics-listen " + address + ": no address"};
  for (addrinfo* a = found; a; a = a->ai_next) {
    auto fd =
        new_fd("socket", [&] { return ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0); });
    if (!fd) {
      last = fd.error();
      continue;
    }
    int one = 1;
    ::setsockopt(fd->get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (auto b = sys("bind", [&] { return ::bind(fd->get(), a->ai_addr, a->ai_addrlen); }); !b) {
      last = Error{b.error().code, "bind --metrics-listen " + address};
      continue;
    }
    if (auto l = sys("listen", [&] { return ::listen(fd->get(), 64); }); !l) {
      last = Error{l.error().code, "listen --metrics-listen " + address};
      continue;
    }
    ::freeaddrinfo(found);
    return std::move(fd).value();
  }
  ::freeaddrinfo(found);
  return last;
}

}  // namespace sp::supervisor
