#include "supervisor/systemd.h"

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "common/clock.h"
#include "common/log.h"

extern char** environ;

namespace sp::supervisor {

namespace {

// The variables of systemd's service protocol: for the supervisor only.
constexpr const char* kProtocolVariables[] = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                                              "LISTEN_FDS",    "LISTEN_PID",    "LISTEN_FDNAMES"};

// "/run/x.sock", "@abstract", or "" for an unnamed socket.
std::string socket_path(int fd) {
  sockaddr_un addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return {};
  const size_t base = offsetof(sockaddr_un, sun_path);
  if (len <= base) return {};
  const size_t n = len - base;
  if (addr.sun_path[0] == '\0') return "@" + std::string(addr.sun_path + 1, n - 1);
  return std::string(addr.sun_path, ::strnlen(addr.sun_path, n));
}

}  // namespace

Result<std::optional<ActivatedSocket>> take_activated_socket() {
  char** names = nullptr;
  const int n = sd_listen_fds_with_names(1, &names);
  if (n < 0) return Error{-n, "LISTEN_FDS"};
  int chosen = -1;
  for (int i = 0; i < n; ++i)
    if (names && names[i] && std::strcmp(names[i], "rpc") == 0) chosen = SD_LISTEN_FDS_START + i;
  if (chosen < 0 && n == 1) chosen = SD_LISTEN_FDS_START;
  for (int i = 0; names && names[i]; ++i) std::free(names[i]);
  std::free(names);
  for (int i = 0; i < n; ++i)
    if (SD_LISTEN_FDS_START + i != chosen) ::close(SD_LISTEN_FDS_START + i);
  if (n == 0) return std::optional<ActivatedSocket>();
  if (chosen < 0)
    return Error{EINVAL, std::to_string(n) +
                             " sockets were passed (LISTEN_FDS) and none is named \"rpc\" "
                             "(LISTEN_FDNAMES): name the daemon's socket FileDescriptorName=rpc"};
  UniqueFd fd(chosen);
  const std::string which = "the socket passed on fd " + std::to_string(chosen);
  const int r = sd_is_socket_unix(chosen, SOCK_STREAM, 1, nullptr, 0);
  if (r < 0) return Error{-r, which};
  if (r == 0)
    return Error{EINVAL, which +
                             " is not a listening AF_UNIX stream socket (ListenStream= of a "
                             "path in the .socket unit)"};
  std::string path = socket_path(chosen);
  if (path.empty()) return Error{EINVAL, which + " has no address"};
  return std::optional<ActivatedSocket>(ActivatedSocket{std::move(fd), std::move(path)});
}

ServiceManager ServiceManager::from_environment() {
  ServiceManager m;
  const char* notify = std::getenv("NOTIFY_SOCKET");
  m.notifying_ = notify && *notify;
  uint64_t usec = 0;
  const int r = sd_watchdog_enabled(1, &usec);  // > 0: meant for us (WATCHDOG_PID)
  if (r < 0) spdlog::warn("ignoring WATCHDOG_USEC/WATCHDOG_PID: {}", std::strerror(-r));
  if (r > 0 && usec > 0) {
    if (!m.notifying_)
      spdlog::warn("WATCHDOG_USEC is set but NOTIFY_SOCKET is not: no watchdog pings");
    m.ping_every_ns_ = usec * 1000 / 2;
    m.next_ping_ns_ = monotonic_ns();  // the first at once
    spdlog::info("systemd watchdog: a ping every {} ms", m.ping_every_ns_ / 1'000'000);
  }
  return m;
}

std::vector<std::string> ServiceManager::child_environment() {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string_view entry(*e);
    std::string_view name = entry.substr(0, entry.find('='));
    bool protocol = false;
    for (const char* v : kProtocolVariables) protocol |= name == v;
    if (!protocol) env.emplace_back(entry);
  }
  return env;
}

void ServiceManager::send(const std::string& state) {
  if (!notifying_) return;
  const int r = sd_notify(0, state.c_str());
  if (r > 0 || warned_) return;
  warned_ = true;
  spdlog::warn("cannot notify the service manager on NOTIFY_SOCKET: {}; serving on without it",
               r < 0 ? std::strerror(-r) : "not set");
}

void ServiceManager::ready(std::string_view status) {
  last_status_ = status;
  last_status_ns_ = monotonic_ns();
  send("READY=1\nSTATUS=" + std::string(status));
}

void ServiceManager::status(std::string_view status, uint64_t now_ns) {
  if (!status_due(now_ns) || status == last_status_) return;
  last_status_ = status;
  last_status_ns_ = now_ns;
  send("STATUS=" + std::string(status));
}

void ServiceManager::stopping(std::string_view status, uint64_t extend_ns) {
  last_status_ = status;
  last_status_ns_ = monotonic_ns();
  send("STOPPING=1\nSTATUS=" + std::string(status) +
       "\nEXTEND_TIMEOUT_USEC=" + std::to_string(extend_ns / 1000));
}

void ServiceManager::reloading() {
  last_status_ = "reloading";
  last_status_ns_ = monotonic_ns();
  send("RELOADING=1\nSTATUS=reloading the configuration\nMONOTONIC_USEC=" +
       std::to_string(monotonic_ns() / 1000));
}

void ServiceManager::failed(std::string_view status, int err) {
  send("STATUS=" + std::string(status) + "\nERRNO=" + std::to_string(err));
}

void ServiceManager::ping_if_due(uint64_t now_ns) {
  if (!next_ping_ns_ || now_ns < next_ping_ns_) return;
  send("WATCHDOG=1");
  next_ping_ns_ = now_ns + ping_every_ns_;
}

}  // namespace sp::supervisor
