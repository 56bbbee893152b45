#include "frontend/protocol.h"
#include "frontend/json_scan.h"
#include "frontend/param_readers.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <exception>

#include <boost/json/parse.hpp>

namespace sp::rpc {
namespace json = boost::json;

namespace {

constexpr uint64_t kOnes = 0x0101010101010101ULL;
constexpr uint64_t kHighBits = 0x8080808080808080ULL;

// High bit set in every byte lane of `w` that must be escaped in a JSON
// string (< 0x20, '"', '\\'). The lowest flagged lane is always exact (a
// borrow only propagates upward from a lane that really matched).
uint64_t escape_lanes(uint64_t w) {
  const uint64_t ctrl = (w - kOnes * 0x20) & ~w;
  const uint64_t q = w ^ (kOnes * '"');
  const uint64_t bs = w ^ (kOnes * '\\');
  return (ctrl | ((q - kOnes) & ~q) | ((bs - kOnes) & ~bs)) & kHighBits;
}

void append_escape(std::string& out, unsigned char c) {
  switch (c) {
    case '"':
      out += "\\\"";
      return;
    case '\\':
      out += "\\\\";
      return;
    case '\b':
      out += "\\b";
      return;
    case '\f':
      out += "\\f";
      return;
    case '\n':
      out += "\\n";
      return;
    case '\r':
      out += "\\r";
      return;
    case '\t':
      out += "\\t";
      return;
    default: {
      static constexpr char kHex[] = "0123456789abcdef";
      const char u[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
      out.append(u, sizeof u);
    }
  }
}

template <typename N>
void append_number(std::string& out, N n) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, n);
  out.append(buf, r.ptr);
}

void append_double(std::string& out, double d) {
  if (!std::isfinite(d)) {
    out += "null";
    return;
  }
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, d);
  const std::string_view s(buf, static_cast<size_t>(r.ptr - buf));
  out += s;
  if (s.find_first_of(".e") == std::string_view::npos) out += ".0";
}

RpcError invalid_request(std::string why) {
  return {Code::InvalidRequest, "invalid request: " + std::move(why)};
}

bool usable_id(const json::value& id) {
  switch (id.kind()) {
    case json::kind::null:
    case json::kind::string:
    case json::kind::int64:
    case json::kind::uint64:
      return true;
    case json::kind::double_:
      return std::isfinite(id.get_double());
    default:
      return false;
  }
}

Call make_call(json::value v) {
  Call c;
  if (!v.is_object()) {
    c.error = invalid_request("a request must be a JSON object");
    return c;
  }
  json::object& obj = v.get_object();
  json::value* id = obj.if_contains("id");
  if (id != nullptr) {
    if (!usable_id(*id)) {
      c.error = invalid_request("\"id\" must be a string, a number or null");
      return c;
    }
    c.id = std::move(*id);
  }
  const json::value* jsonrpc = obj.if_contains("jsonrpc");
  if (jsonrpc == nullptr || !jsonrpc->is_string() || jsonrpc->get_string() != "2.0") {
    c.error = invalid_request("\"jsonrpc\" must be \"2.0\"");
    return c;
  }
  const json::value* method = obj.if_contains("method");
  if (method == nullptr) {
    c.error = invalid_request("\"method\" is required");
    return c;
  }
  if (!method->is_string()) {
    c.error = invalid_request("\"method\" must be a string");
    return c;
  }
  json::value* params = obj.if_contains("params");
  if (params != nullptr) {
    if (!params->is_object() && !params->is_array() && !params->is_null()) {
      c.error = invalid_request("\"params\" must be an object or an array");
      return c;
    }
    c.params = std::move(*params);
  }
  c.method = method->get_string();
  c.notification = id == nullptr;
  return c;
}

}  // namespace

RpcError queue_full_error(uint64_t retry_after_ms, std::string message) {
  json::object data;
  data["retry_after_ms"] = retry_after_ms;
  return {Code::QueueFull, std::move(message), std::move(data)};
}

Line parse_line(std::string_view text) {
  Line line;
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) return line;
  try {
    json::parse_options opt;
    opt.max_depth = kMaxJsonDepth;
    json::error_code ec;
    json::value root = json::parse(text, ec, {}, opt);
    if (ec) {
      line.error = RpcError{Code::ParseError, "parse error: " + ec.message()};
      return line;
    }
    // A DAG's node names are keys: look for ones the parse kept only once.
    auto check_nodes = [](Call& call, std::string_view element) {
      if (call.method == "execute_dag" || call.method == "job_submit")
        call.duplicate_node = detail::duplicate_nodes_key(element);
    };
    if (!root.is_array()) {
      line.calls.push_back(make_call(std::move(root)));
      check_nodes(line.calls.back(), text);
      return line;
    }
    json::array& arr = root.get_array();
    if (arr.empty()) {
      line.error = invalid_request("empty batch");
      return line;
    }
    line.batch = true;
    line.calls.reserve(arr.size());
    for (json::value& element : arr) line.calls.push_back(make_call(std::move(element)));
    bool dag = false;
    for (const Call& call : line.calls)
      dag |= call.method == "execute_dag" || call.method == "job_submit";
    if (dag) {
      std::vector<std::string_view> elements = detail::array_elements(text);
      for (size_t i = 0; i < line.calls.size() && i < elements.size(); ++i)
        check_nodes(line.calls[i], elements[i]);
    }
  } catch (const std::exception& e) {
    line = Line{};
    line.error = RpcError{Code::Internal, std::string("internal error: ") + e.what()};
  }
  return line;
}

void append_string(std::string& out, std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  out.reserve(out.size() + n + 2);
  out.push_back('"');
  size_t i = 0;
  size_t run = 0;  // start of the bytes not yet copied
  while (i < n) {
    if (n - i >= 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      const uint64_t lanes = escape_lanes(w);
      if (lanes == 0) {
        i += 8;
        continue;
      }
      if constexpr (std::endian::native == std::endian::little) {
        i += static_cast<size_t>(std::countr_zero(lanes)) / 8;
      }
    }
    const unsigned char c = p[i];
    if (c < 0x20 || c == '"' || c == '\\') {
      out.append(s.data() + run, i - run);
      append_escape(out, c);
      run = i + 1;
    }
    ++i;
  }
  out.append(s.data() + run, n - run);
  out.push_back('"');
}

void append_value(std::string& out, const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      out += "null";
      return;
    case json::kind::bool_:
      out += v.get_bool() ? "true" : "false";
      return;
    case json::kind::int64:
      append_number(out, v.get_int64());
      return;
    case json::kind::uint64:
      append_number(out, v.get_uint64());
      return;
    case json::kind::double_:
      append_double(out, v.get_double());
      return;
    case json::kind::string:
      append_string(out, v.get_string());
      return;
    case json::kind::array: {
      out.push_back('[');
      bool first = true;
      for (const json::value& e : v.get_array()) {
        if (!first) out.push_back(',');
        first = false;
        append_value(out, e);
      }
      out.push_back(']');
      return;
    }
    case json::kind::object: {
      out.push_back('{');
      bool first = true;
      for (const json::key_value_pair& kv : v.get_object()) {
        if (!first) out.push_back(',');
        first = false;
        append_string(out, kv.key());
        out.push_back(':');
        append_value(out, kv.value());
      }
      out.push_back('}');
      return;
    }
  }
}

std::string result_text(const json::value& id, const json::value& result) {
  std::string out = R"({"jsonrpc":"2.0","id":)";
  append_value(out, id);
  out += R"(,"result":)";
  append_value(out, result);
  out.push_back('}');
  return out;
}

std::string error_text(const json::value& id, const RpcError& err) {
  std::string out = R"({"jsonrpc":"2.0","id":)";
  append_value(out, id);
  out += R"(,"error":{"code":)";
  append_number(out, static_cast<int>(err.code));
  out += R"(,"message":)";
  append_string(out, err.message);
  if (!err.data.is_null()) {
    out += R"(,"data":)";
    append_value(out, err.data);
  }
  out += "}}";
  return out;
}

std::string batch_text(const std::vector<std::string>& member_texts) {
  if (member_texts.empty()) return {};
  size_t size = member_texts.size() + 1;
  for (const std::string& m : member_texts) size += m.size();
  std::string out;
  out.reserve(size);
  out.push_back('[');
  for (size_t i = 0; i < member_texts.size(); ++i) {
    if (i != 0) out.push_back(',');
    out += member_texts[i];
  }
  out.push_back(']');
  return out;
}

// ---- params of the built-in methods ----

namespace detail {

RpcError bad_params(std::string why) {
  return {Code::InvalidParams, "invalid params: " + std::move(why)};
}

std::string quoted(std::string_view name) {
  std::string q = "\"";
  q += name;
  q += '"';
  return q;
}

// A key quoted for an error message: at most 64 bytes, cut at a code point
// boundary so the message stays valid UTF-8 (keys come from Boost.JSON,
// which only accepts valid UTF-8).
std::string quoted_key(std::string_view key) {
  constexpr size_t kMax = 64;
  if (key.size() <= kMax) return quoted(key);
  size_t cut = kMax;
  while (cut > 0 && (static_cast<unsigned char>(key[cut]) & 0xC0) == 0x80) --cut;
  return quoted(key.substr(0, cut)) + "...";
}

bool has_nul(std::string_view s) {
  return s.find('\0') != std::string_view::npos;
}

std::optional<RpcError> params_object(const json::value& params, Obj& obj) {
  obj = nullptr;
  if (params.is_null()) return std::nullopt;
  if (!params.is_object()) return bad_params("params must be an object");
  obj = &params.get_object();
  return std::nullopt;
}

// The field's value, or nullptr when it is absent or JSON null.
const json::value* field(Obj obj, std::string_view key) {
  if (obj == nullptr) return nullptr;
  const json::value* v = obj->if_contains(key);
  return v == nullptr || v->is_null() ? nullptr : v;
}

std::optional<RpcError> read_string(Obj obj, std::string_view key, unsigned rules,
                                    std::string& out) {
  const json::value* v = field(obj, key);
  if (v == nullptr) {
    if (rules & kRequired) return bad_params(quoted(key) + " is required");
    return std::nullopt;
  }
  if (!v->is_string()) return bad_params(quoted(key) + " must be a string");
  const json::string& s = v->get_string();
  if ((rules & kNonEmpty) && s.empty()) return bad_params(quoted(key) + " must not be empty");
  if (has_nul(s)) return bad_params(quoted(key) + " must not contain NUL bytes");
  out.assign(s.data(), s.size());
  return std::nullopt;
}

std::optional<RpcError> read_string_array(Obj obj, std::string_view key,
                                          std::vector<std::string>& out) {
  const json::value* v = field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_array()) return bad_params(quoted(key) + " must be an array of strings");
  const json::array& arr = v->get_array();
  out.reserve(arr.size());
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string at = " (element " + std::to_string(i) + ")";
    if (!arr[i].is_string()) return bad_params(quoted(key) + " must be an array of strings" + at);
    const json::string& s = arr[i].get_string();
    if (has_nul(s)) return bad_params(quoted(key) + " elements must not contain NUL bytes" + at);
    out.emplace_back(s.data(), s.size());
  }
  return std::nullopt;
}

std::optional<RpcError> read_env(Obj obj, std::string_view key, EnvPairs& out) {
  const json::value* v = field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_object()) return bad_params(quoted(key) + " must be an object of strings");
  const json::object& env = v->get_object();
  out.reserve(env.size());
  for (const json::key_value_pair& kv : env) {
    const std::string_view name = kv.key();
    if (name.empty()) return bad_params(quoted(key) + " names must not be empty");
    if (has_nul(name)) return bad_params(quoted(key) + " names must not contain NUL bytes");
    if (name.find('=') != std::string_view::npos) {
      return bad_params(quoted(key) + " names must not contain '=' (key " + quoted_key(name) + ")");
    }
    if (!kv.value().is_string()) {
      return bad_params(quoted(key) + " values must be strings (key " + quoted_key(name) + ")");
    }
    const json::string& value = kv.value().get_string();
    if (has_nul(value)) {
      return bad_params(quoted(key) + " values must not contain NUL bytes (key " +
                        quoted_key(name) + ")");
    }
    out.emplace_back(std::string(name), std::string(value.data(), value.size()));
  }
  return std::nullopt;
}

std::optional<RpcError> read_bool(Obj obj, std::string_view key, bool& out) {
  const json::value* v = field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_bool()) return bad_params(quoted(key) + " must be true or false");
  out = v->get_bool();
  return std::nullopt;
}

std::optional<RpcError> read_timeout(Obj obj, std::optional<double>& out) {
  const json::value* v = field(obj, "timeout");
  if (v == nullptr) return std::nullopt;
  double d = 0;
  if (v->is_int64()) {
    d = static_cast<double>(v->get_int64());
  } else if (v->is_uint64()) {
    d = static_cast<double>(v->get_uint64());
  } else if (v->is_double()) {
    d = v->get_double();
  }
  // !(d > 0) also rejects NaN; 1e400 arrives from the parser as infinity.
  if (!(d > 0) || !std::isfinite(d)) {
    return bad_params("\"timeout\" must be a positive number of seconds");
  }
  out = d;
  return std::nullopt;
}

// `within`: where the field is, for the message (e.g. " in \"limits\"").
std::optional<RpcError> read_byte_count(Obj obj, std::string_view key, std::optional<uint64_t>& out,
                                        std::string_view within) {
  const json::value* v = field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (v->is_int64() && v->get_int64() >= 0) {
    out = static_cast<uint64_t>(v->get_int64());
  } else if (v->is_uint64()) {
    out = v->get_uint64();
  } else if (v->is_double() && v->get_double() >= 0 && v->get_double() < 0x1p64 &&
             std::floor(v->get_double()) == v->get_double()) {
    out = static_cast<uint64_t>(v->get_double());  // 1e6 written by a client
  } else {
    return bad_params(quoted(key) + std::string(within) + " must be an integer >= 0");
  }
  return std::nullopt;
}

std::optional<RpcError> read_encoding(Obj obj, bool& base64) {
  const json::value* v = field(obj, "output_encoding");
  if (v == nullptr) return std::nullopt;
  if (v->is_string()) {
    const json::string& s = v->get_string();
    if (s == "utf8" || s == "utf-8") {
      base64 = false;
      return std::nullopt;
    }
    if (s == "base64") {
      base64 = true;
      return std::nullopt;
    }
  }
  return bad_params("\"output_encoding\" must be \"utf8\" or \"base64\"");
}

std::optional<RpcError> read_limits(Obj obj, shm::Rlimits& out) {
  const json::value* v = field(obj, "limits");
  if (v == nullptr) return std::nullopt;
  if (!v->is_object()) return bad_params("\"limits\" must be an object");
  Obj limits = &v->get_object();
  for (const auto& member : *limits) {
    std::string_view key = member.key();  // a variable clang 14's lambdas can capture
    auto known = std::find_if(std::begin(shm::kLimitNames), std::end(shm::kLimitNames),
                              [&](const auto& n) { return key == n.first; });
    // A misspelt limit silently not applied would be worse than an error.
    if (known == std::end(shm::kLimitNames)) {
      std::string names;
      for (const auto& [name, field] : shm::kLimitNames)
        names += (names.empty() ? "" : ", ") + std::string(name);
      return bad_params("unknown field " + quoted_key(key) + " in \"limits\"; known: " + names);
    }
    std::optional<uint64_t> n;
    if (auto e = read_byte_count(limits, key, n, " in \"limits\"")) return e;
    if (*n == 0) return bad_params(quoted(key) + " in \"limits\" must be >= 1");
    out.*known->second = *n;
  }
  return std::nullopt;
}

std::optional<RpcError> read_output_policy(Obj obj, bool& kill) {
  const json::value* v = field(obj, "output_policy");
  if (v == nullptr) return std::nullopt;
  if (v->is_string() && (v->get_string() == "truncate" || v->get_string() == "kill")) {
    kill = v->get_string() == "kill";
    return std::nullopt;
  }
  return bad_params("\"output_policy\" must be \"truncate\" or \"kill\"");
}

std::optional<RpcError> check_stdin(Obj obj) {
  const json::value* v = field(obj, "stdin");
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) return bad_params("\"stdin\" must be a string");
  if (!v->get_string().empty()) return bad_params("\"stdin\" is not supported yet");
  return std::nullopt;
}

RpcError internal_error(const std::exception& e) {
  return {Code::Internal, std::string("internal error: ") + e.what()};
}

}  // namespace detail

using namespace detail;

Parsed<ExecParams> parse_exec_params(const json::value& params) {
  try {
    ExecParams p;
    Obj obj;
    if (auto e = params_object(params, obj)) return *e;
    if (auto e = read_string(obj, "command", kRequired | kNonEmpty, p.command)) return *e;
    if (auto e = read_string_array(obj, "args", p.args)) return *e;
    p.shell = p.args.empty();
    if (auto e = read_bool(obj, "shell", p.shell)) return *e;
    if (auto e = read_timeout(obj, p.timeout_s)) return *e;
    if (auto e = read_string(obj, "working_dir", kOptional, p.working_dir)) return *e;
    if (auto e = read_string(obj, "session_id", kOptional, p.session_id)) return *e;
    if (auto e = read_env(obj, "env", p.env)) return *e;
    if (auto e = read_encoding(obj, p.base64)) return *e;
    if (auto e = read_byte_count(obj, "max_output_bytes", p.max_output_bytes)) return *e;
    if (auto e = read_byte_count(obj, "kill_grace_ms", p.kill_grace_ms)) return *e;
    if (auto e = read_limits(obj, p.limits)) return *e;
    if (auto e = read_output_policy(obj, p.kill_on_output_cap)) return *e;
    if (auto e = check_stdin(obj)) return *e;
    return p;
  } catch (const std::exception& e) {
    return internal_error(e);
  }
}

Parsed<SessionCreateParams> parse_session_create_params(const json::value& params) {
  try {
    SessionCreateParams p;
    Obj obj;
    if (auto e = params_object(params, obj)) return *e;
    if (auto e = read_string(obj, "name", kOptional, p.name)) return *e;
    if (auto e = read_env(obj, "env_vars", p.env_vars)) return *e;
    return p;
  } catch (const std::exception& e) {
    return internal_error(e);
  }
}

Parsed<std::string> parse_session_id_param(const json::value& params) {
  try {
    std::string id;
    Obj obj;
    if (auto e = params_object(params, obj)) return *e;
    if (auto e = read_string(obj, "session_id", kRequired | kNonEmpty, id)) return *e;
    return id;
  } catch (const std::exception& e) {
    return internal_error(e);
  }
}

}  // namespace sp::rpc
