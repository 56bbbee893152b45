#include "client/client.h"

#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "common/signals.h"
#include "common/text.h"

namespace sp::cli {

void die(int code, const std::string& message) {
  std::fprintf(stderr, "shell-pool: %s\n", message.c_str());
  std::exit(code);
}

Client::Client(const std::string& path) : path_(path) {
  if (path.size() >= sizeof(sockaddr_un::sun_path)) die(kUsage, "socket path too long: " + path);
  if (!connect())
    die(kNoDaemon, "cannot connect to shell-poold at " + path + ": " + std::strerror(errno) +
                       "\n  is the daemon running? start it with: shell-poold --socket " + path);
}

bool Client::connect() {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path_.data(), path_.size());
  buf_.clear();
  fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd_ && ::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0)
    return true;
  fd_.reset();
  return false;
}

bool Client::send_line(const std::string& method, json::object params, int64_t id) {
  json::object req{
      {"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", std::move(params)}};
  std::string line = json::serialize(req) + "\n";
  for (size_t off = 0; off < line.size();) {
    ssize_t n = ::send(fd_.get(), line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += size_t(n);
  }
  return true;
}

void Client::send(const std::string& method, json::object params) {
  if (!send_line(method, std::move(params)))
    die(kNoDaemon, std::string("lost the connection: ") + std::strerror(errno));
}

int64_t Client::send_async(const std::string& method, json::object params) {
  const int64_t id = next_id_++;
  if (!send_line(method, std::move(params), id))
    die(kNoDaemon, std::string("lost the connection: ") + std::strerror(errno));
  return id;
}

bool Client::receive() {
  char chunk[65536];
  for (;;) {
    ssize_t n = ::recv(fd_.get(), chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    buf_.append(chunk, size_t(n));
    return true;
  }
}

std::optional<json::object> Client::take_message() {
  size_t nl = buf_.find('\n');
  if (nl == std::string::npos) return std::nullopt;
  std::string line = buf_.substr(0, nl);
  buf_.erase(0, nl + 1);
  boost::system::error_code ec;
  json::value v = json::parse(line, ec);
  if (ec || !v.is_object()) die(kProtocol, "unreadable answer from the daemon: " + line);
  return std::move(v.as_object());
}

std::optional<json::object> Client::read_message() {
  for (;;) {
    if (auto message = take_message()) {
      if (const json::value* id = message->if_contains("id"); id && *id != 1)
        continue;  // the late answer of a send_async()
      return message;
    }
    if (!receive()) return std::nullopt;
  }
}

std::optional<json::object> Client::read_answer() {
  auto message = read_message();
  if (!message) return std::nullopt;
  json::object& o = *message;
  if (auto* e = o.if_contains("error")) {
    const json::object& err = e->as_object();
    std::string msg = err.contains("message") ? json::value_to<std::string>(err.at("message"))
                                              : json::serialize(err);
    const json::value code = err.contains("code") ? err.at("code") : json::value();
    const bool usage = code == -32602;
    const bool refused = code == -32006 || code == -32007;  // forbidden, reload failed
    die(usage     ? kUsage
        : refused ? kRefused
                  : kCannotRun,
        msg + " (code " + json::serialize(code) + ")");
  }
  return std::move(o.at("result").as_object());
}

std::optional<json::object> Client::try_call(const std::string& method, json::object params,
                                             std::string* error) {
  send(method, std::move(params));
  auto message = read_message();
  if (!message) die(kNoDaemon, "the daemon closed the connection before it answered");
  if (const json::value* e = message->if_contains("error")) {
    if (error) *error = json::serialize(*e);
    return std::nullopt;
  }
  return std::move(message->at("result").as_object());
}

json::object Client::next() {
  auto r = read_answer();
  if (!r) die(kNoDaemon, "the daemon closed the connection before it answered");
  return std::move(*r);
}

json::object Client::call_resending(const std::string& method, const json::object& params) {
  for (int lost = 0;; ++lost) {
    if (send_line(method, params))
      if (auto r = read_answer()) return std::move(*r);
    // The supervisor keeps the listening socket while it restarts the
    // frontend, so connecting again works at once unless the daemon is gone.
    if (lost == kMaxResends || !connect())
      die(kNoDaemon, "lost the connection to shell-poold at " + path_ +
                         (lost == kMaxResends ? std::string(" again and again")
                                              : ": " + std::string(std::strerror(errno))));
  }
}

json::object env_params(const std::vector<std::string>& env) {
  json::object o;
  for (const auto& kv : env) {
    size_t eq = kv.find('=');
    if (eq == 0 || eq == std::string::npos) die(kUsage, "--env takes NAME=value, got: " + kv);
    o[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return o;
}

void add_program(json::object& p, const std::vector<std::string>& command) {
  p["command"] = command.front();
  json::array args;
  for (size_t i = 1; i < command.size(); ++i) args.emplace_back(command[i]);
  p["args"] = std::move(args);
  p["shell"] = false;
}

void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) std::exit(kProtocol);  // our own stdout is gone
    data.remove_prefix(size_t(n));
  }
}

std::string from_base64(const json::value& data) {
  auto bytes = sp::decode_base64(data.as_string());
  if (!bytes) die(kProtocol, "the daemon sent output that is not base64");
  return *bytes;
}

int exit_code_of(const json::object& r) {
  auto text = [&](const char* key) {
    const json::value* v = r.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
  };
  std::string status = text("status").empty() ? text("state") : text("status");
  if (std::string error = text("error"); !error.empty())
    std::fprintf(stderr, "shell-pool: %s\n", error.c_str());
  if (status == "timed_out") return kTimedOut;
  if (status == "failed") return kCannotRun;
  if (status == "lost" || status == "cancelled") return kLostOrCancelled;
  if (std::string sig = text("signal"); !sig.empty()) return 128 + signal_number(sig).value_or(0);
  const json::value* code = r.if_contains("exit_code");
  return code && code->is_number() ? int(code->to_number<int64_t>()) : kProtocol;
}

}  // namespace sp::cli
