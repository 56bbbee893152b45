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
#include "frontend/codec/msgpack_codec.h"

namespace sp::cli {

namespace {

// A JSON value as MessagePack: a string that is not UTF-8 goes as bin (the
// daemon takes either as the same bytes), other strings as str.
rpc::Value to_value(const json::value& j) {
  switch (j.kind()) {
    case json::kind::null:
      return nullptr;
    case json::kind::bool_:
      return j.get_bool();
    case json::kind::int64:
      return j.get_int64();
    case json::kind::uint64:
      return j.get_uint64();
    case json::kind::double_:
      return j.get_double();
    case json::kind::string: {
      std::string_view s = j.get_string();
      if (valid_utf8(s)) return s;
      return rpc::Bytes{std::string(s)};
    }
    case json::kind::array: {
      rpc::Array a;
      for (const json::value& e : j.get_array()) a.push_back(to_value(e));
      return a;
    }
    case json::kind::object: {
      rpc::Object o;
      for (const auto& [k, v] : j.get_object()) o.emplace_back(std::string(k), to_value(v));
      return o;
    }
  }
  return nullptr;
}

// And back: bin becomes a string holding its bytes.
json::value to_json(const rpc::Value& v) {
  switch (v.kind()) {
    case rpc::Value::Kind::kNull:
      return nullptr;
    case rpc::Value::Kind::kBool:
      return v.get_bool();
    case rpc::Value::Kind::kInt64:
      return v.get_int64();
    case rpc::Value::Kind::kUint64:  // as JSON parsers give it: int64 where it fits
      if (v.get_uint64() <= uint64_t(INT64_MAX)) return int64_t(v.get_uint64());
      return v.get_uint64();
    case rpc::Value::Kind::kDouble:
      return v.get_double();
    case rpc::Value::Kind::kString:
      return json::string(v.get_string());
    case rpc::Value::Kind::kBytes:
      return json::string(v.get_bytes());
    case rpc::Value::Kind::kArray: {
      json::array a;
      for (const rpc::Value& e : v.get_array()) a.push_back(to_json(e));
      return a;
    }
    case rpc::Value::Kind::kObject: {
      json::object o;
      for (const auto& [k, e] : v.get_object()) o[k] = to_json(e);
      return o;
    }
  }
  return nullptr;
}

}  // namespace

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

bool Client::send_request(const std::string& method, json::object params, int64_t id) {
  std::string line;
  rpc::append_msgpack(line, rpc::Array{0u, uint64_t(id), method, rpc::Array{to_value(params)}});
  for (size_t off = 0; off < line.size();) {
    ssize_t n = ::send(fd_.get(), line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += size_t(n);
  }
  return true;
}

void Client::send(const std::string& method, json::object params) {
  if (!send_request(method, std::move(params)))
    die(kNoDaemon, std::string("lost the connection: ") + std::strerror(errno));
}

int64_t Client::send_async(const std::string& method, json::object params) {
  const int64_t id = next_id_++;
  if (!send_request(method, std::move(params), id))
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
  rpc::FrameScan f = rpc::scan_frame(buf_);
  if (f.status == rpc::FrameScan::kNeedMore) return std::nullopt;
  std::string why = f.why;
  std::optional<rpc::Value> v;
  if (f.status == rpc::FrameScan::kComplete)
    v = rpc::parse_msgpack(std::string_view(buf_).substr(0, f.size), &why);
  buf_.erase(0, f.size);
  if (!v || !v->is_array()) die(kProtocol, "unreadable answer from the daemon: " + why);
  const rpc::Array& a = v->get_array();
  // [1, id, error, result], or a stream's chunk [2, "stream", [id, chunk]].
  if (a.size() == 4 && a[0] == rpc::Value(1)) {
    json::object m{{"id", to_json(a[1])}};
    if (!a[2].is_null())
      m["error"] = to_json(a[2]);
    else
      m["result"] = to_json(a[3]);
    return m;
  }
  if (a.size() == 3 && a[0] == rpc::Value(2) && a[1] == rpc::Value("stream") && a[2].is_array() &&
      a[2].get_array().size() == 2)
    return json::object{{"id", to_json(a[2].get_array()[0])},
                        {"result", to_json(a[2].get_array()[1])}};
  die(kProtocol, "an answer from the daemon that is not MessagePack-RPC");
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
    if (send_request(method, params))
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

std::string bytes_of(const json::value& data) {
  if (!data.is_string()) die(kProtocol, "the daemon sent output that is not bytes");
  return std::string(data.get_string());
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
