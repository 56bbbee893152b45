// Params of the host methods (host_add, host_remove, host_check).
#include <algorithm>
#include <charconv>

#include "frontend/params/readers.h"

namespace sp::rpc {

using namespace detail;

namespace {

constexpr uint64_t kMaxHostMs = 3'600'000;

bool host_name_ok(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  auto alnum = [](unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  return alnum(static_cast<unsigned char>(s[0])) &&
         std::all_of(s.begin(), s.end(),
                     [&](unsigned char c) { return alnum(c) || c == '.' || c == '_' || c == '-'; });
}

// A string field that must fit `cap` bytes with its NUL and hold no NUL.
std::optional<RpcError> read_text(Obj obj, std::string_view key, unsigned rules, size_t cap,
                                  std::string& out, std::string_view where = "") {
  if (auto e = read_string(obj, key, rules, out))
    return where.empty() ? e : within(*e, std::string(where));
  if (out.size() >= cap)
    return bad_params(quoted(key) + std::string(where.empty() ? "" : " in ") + std::string(where) +
                      " is longer than " + std::to_string(cap - 1) + " bytes");
  if (out.find('\0') != std::string::npos) return bad_params(quoted(key) + " holds a NUL");
  return std::nullopt;
}

std::optional<RpcError> read_ms(Obj obj, std::string_view key, uint64_t min, uint32_t& out) {
  std::optional<uint64_t> n;
  if (auto e = read_byte_count(obj, key, n)) return e;
  if (!n) return std::nullopt;
  if (*n < min || *n > kMaxHostMs)
    return bad_params(quoted(key) + " must be " + std::to_string(min) + ".." +
                      std::to_string(kMaxHostMs));
  out = uint32_t(*n);
  return std::nullopt;
}

// "auth": {key_file, passphrase?} | {agent_socket?} | {password}. A secret
// is never quoted back.
std::optional<RpcError> read_auth(Obj obj, shm::HostConfig& h) {
  const Value* v = field(obj, "auth");
  if (!v)
    return bad_params(
        "\"auth\" is required: {key_file, passphrase?}, {agent_socket?} or "
        "{password}");
  if (!v->is_object()) return bad_params("\"auth\" must be an object");
  Obj a = &v->get_object();
  const bool key = field(a, "key_file"), password = field(a, "password"),
             agent = a->if_contains("agent_socket") || a->empty() || field(a, "agent");
  if (int(key) + int(password) + int(agent && !key && !password) != 1 || (key && password))
    return bad_params(
        "\"auth\" takes one of {key_file, passphrase?}, {agent_socket?} or "
        "{password}");
  if (key) {
    h.auth = shm::HostAuth::kKey;
    if (auto e = read_text(a, "key_file", kRequired | kNonEmpty, shm::kHostPathBytes, h.key_file,
                           "\"auth\""))
      return e;
    if (h.key_file[0] != '/')
      return bad_params("\"key_file\" in \"auth\" must be an absolute path");
    if (auto e = read_text(a, "passphrase", kOptional, shm::kHostSecretBytes, h.secret, "\"auth\""))
      return e;
  } else if (password) {
    h.auth = shm::HostAuth::kPassword;
    if (auto e = read_text(a, "password", kRequired, shm::kHostSecretBytes, h.secret, "\"auth\""))
      return e;
  } else {
    h.auth = shm::HostAuth::kAgent;
    if (auto e = read_text(a, "agent_socket", kOptional, shm::kHostPathBytes, h.agent_socket,
                           "\"auth\""))
      return e;
  }
  return std::nullopt;
}

// "host_key": {policy: strict | accept-new | pinned | insecure, fingerprint?}.
std::optional<RpcError> read_host_key(Obj obj, shm::HostConfig& h) {
  const Value* v = field(obj, "host_key");
  if (!v) return std::nullopt;
  if (!v->is_object()) return bad_params("\"host_key\" must be an object");
  Obj k = &v->get_object();
  std::string policy;
  if (auto e = read_string(k, "policy", kOptional, policy)) return within(*e, "\"host_key\"");
  if (policy.empty() || policy == "strict")
    h.policy = shm::HostKeyPolicy::kStrict;
  else if (policy == "accept-new")
    h.policy = shm::HostKeyPolicy::kAcceptNew;
  else if (policy == "pinned")
    h.policy = shm::HostKeyPolicy::kPinned;
  else if (policy == "insecure")
    h.policy = shm::HostKeyPolicy::kInsecure;
  else
    return bad_params(
        "\"policy\" in \"host_key\" must be \"strict\", \"accept-new\", \"pinned\" "
        "or \"insecure\"");
  if (auto e = read_text(k, "fingerprint", kOptional, shm::kFingerprintBytes, h.fingerprint,
                         "\"host_key\""))
    return e;
  if (h.policy == shm::HostKeyPolicy::kPinned &&
      (h.fingerprint.rfind("SHA256:", 0) != 0 || h.fingerprint.size() < 40))
    return bad_params(
        "\"pinned\" needs \"fingerprint\": \"SHA256:...\" (as ssh-keygen -l shows it)");
  if (h.policy != shm::HostKeyPolicy::kPinned && !h.fingerprint.empty())
    return bad_params("\"fingerprint\" in \"host_key\" goes with the policy \"pinned\"");
  return std::nullopt;
}

}  // namespace

Parsed<HostAddParams> parse_host_add_params(const Value& params) {
  HostAddParams p;
  shm::HostConfig& h = p.host;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_string(obj, "name", kRequired | kNonEmpty, h.name)) return *e;
  if (!host_name_ok(h.name))
    return bad_params(
        "\"name\" must be 1..64 characters of A-Z, a-z, 0-9, '.', '_' and '-', "
        "starting with a letter or digit");
  if (auto e = read_text(obj, "address", kRequired | kNonEmpty, shm::kHostAddressBytes, h.address))
    return *e;
  uint64_t port = 22;
  if (auto e = read_bounded(obj, "port", 65535, port)) return *e;
  h.port = uint32_t(port);
  if (auto e = read_text(obj, "user", kRequired | kNonEmpty, shm::kHostUserBytes, h.user))
    return *e;
  if (auto e = read_auth(obj, h)) return *e;
  if (auto e = read_host_key(obj, h)) return *e;
  if (auto e = read_ms(obj, "connect_timeout_ms", 100, h.connect_timeout_ms)) return *e;
  if (auto e = read_ms(obj, "keepalive_ms", 1000, h.keepalive_ms)) return *e;
  if (auto e = read_ms(obj, "idle_timeout_ms", 1000, h.idle_timeout_ms)) return *e;
  uint64_t max_connections = h.max_connections;
  if (auto e = read_bounded(obj, "max_connections", 64, max_connections)) return *e;
  h.max_connections = uint32_t(max_connections);
  return p;
}

namespace {

// "[USER@]ADDRESS[:PORT]", ADDRESS possibly "[v6]", into `p`.
std::optional<RpcError> read_target(std::string_view t, Object& p) {
  if (size_t at = t.find('@'); at != std::string_view::npos) {
    p["user"] = std::string(t.substr(0, at));
    t.remove_prefix(at + 1);
  }
  std::string_view port;
  if (!t.empty() && t.front() == '[') {
    size_t close = t.find(']');
    if (close == std::string_view::npos) return bad_params("an unclosed '[' in the address");
    if (close + 1 < t.size() && t[close + 1] == ':') port = t.substr(close + 2);
    t = t.substr(1, close - 1);
  } else if (size_t colon = t.rfind(':'); colon != std::string_view::npos && t.find(':') == colon) {
    port = t.substr(colon + 1);
    t = t.substr(0, colon);
  }
  p["address"] = std::string(t);
  if (!port.empty()) {
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
    if (ec != std::errc() || end != port.data() + port.size())
      return bad_params("the port must be a number");
    p["port"] = n;
  }
  return std::nullopt;
}

}  // namespace

Parsed<HostSpec> parse_host_spec(std::string_view spec) {
  std::vector<std::string_view> words;
  for (size_t at = 0; at < spec.size();) {
    size_t sp = std::min(spec.find(' ', at), spec.size());
    if (sp > at) words.push_back(spec.substr(at, sp - at));
    at = sp + 1;
  }
  if (words.size() < 2)
    return bad_params("a host is \"NAME [USER@]ADDRESS[:PORT] [KEY=VALUE]...\"");
  HostSpec out;
  Object p{{"name", std::string(words[0])}};
  if (auto e = read_target(words[1], p)) return *e;
  Object auth, key;
  auto number = [](std::string_view v) -> Value {
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || end != v.data() + v.size()) return Value(std::string(v));
    return Value(n);
  };
  for (size_t i = 2; i < words.size(); ++i) {
    std::string_view w = words[i];
    size_t eq = w.find('=');
    std::string k(w.substr(0, eq)), v(eq == std::string_view::npos ? "" : w.substr(eq + 1));
    if (k == "agent" && eq == std::string_view::npos) {
      auth["agent"] = true;
    } else if (k == "key_file" || k == "agent_socket") {
      auth[k] = v;
    } else if (k == "passphrase_file" || k == "password_file") {
      out.secret_file = v;
      if (k == "password_file") auth["password"] = "";
    } else if (k == "host_key") {
      key["policy"] = v;
    } else if (k == "fingerprint") {
      key["fingerprint"] = v;
    } else if (k == "user") {
      p["user"] = v;
    } else if (k == "port" || k == "connect_timeout_ms" || k == "keepalive_ms" ||
               k == "idle_timeout_ms" || k == "max_connections") {
      p[k] = number(v);
    } else {
      return bad_params("unknown " + quoted_key(k) + " in the host " + quoted_key(words[0]));
    }
  }
  p["auth"] = std::move(auth);
  if (!key.empty()) p["host_key"] = std::move(key);
  auto parsed = parse_host_add_params(Value(std::move(p)));
  if (auto* e = std::get_if<RpcError>(&parsed)) return within(*e, "host " + quoted_key(words[0]));
  out.add = std::move(std::get<HostAddParams>(parsed));
  return out;
}

Parsed<HostNameParams> parse_host_name_params(const Value& params) {
  HostNameParams p;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_string(obj, "name", kRequired | kNonEmpty, p.name)) return *e;
  if (auto e = read_bool(obj, "force", p.force)) return *e;
  return p;
}

}  // namespace sp::rpc
