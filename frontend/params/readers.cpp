#include "frontend/params/readers.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "common/redactor.h"
#include "common/signals.h"
#include "common/text.h"

namespace sp::rpc::detail {

constexpr std::string_view kInvalidParams = "invalid params: ";

RpcError bad_params(std::string why) {
  return {Code::InvalidParams, std::string(kInvalidParams) + std::move(why)};
}

RpcError within(RpcError err, const std::string& where) {
  if (err.code == Code::InvalidParams && err.message.rfind(kInvalidParams, 0) == 0)
    err.message.insert(kInvalidParams.size(), where + ": ");
  return err;
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

namespace {

bool has_nul(std::string_view s) {
  return s.find('\0') != std::string_view::npos;
}

}  // namespace

std::optional<RpcError> params_object(const Value& params, Obj& obj) {
  obj = nullptr;
  if (params.is_null()) return std::nullopt;
  if (!params.is_object()) return bad_params("params must be an object");
  obj = &params.get_object();
  return std::nullopt;
}

// The field's value, or nullptr when it is absent or JSON null.
const Value* field(Obj obj, std::string_view key) {
  if (obj == nullptr) return nullptr;
  const Value* v = obj->if_contains(key);
  return v == nullptr || v->is_null() ? nullptr : v;
}

std::optional<RpcError> read_string(Obj obj, std::string_view key, unsigned rules,
                                    std::string& out) {
  const Value* v = field(obj, key);
  if (v == nullptr) {
    if (rules & kRequired) return bad_params(quoted(key) + " is required");
    return std::nullopt;
  }
  if (!v->is_string()) return bad_params(quoted(key) + " must be a string");
  const std::string& s = v->get_string();
  if ((rules & kNonEmpty) && s.empty()) return bad_params(quoted(key) + " must not be empty");
  if (has_nul(s)) return bad_params(quoted(key) + " must not contain NUL bytes");
  out.assign(s.data(), s.size());
  return std::nullopt;
}

std::optional<RpcError> read_string_array(Obj obj, std::string_view key,
                                          std::vector<std::string>& out) {
  const Value* v = field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_array()) return bad_params(quoted(key) + " must be an array of strings");
  const Array& arr = v->get_array();
  out.reserve(arr.size());
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string at = " (element " + std::to_string(i) + ")";
    if (!arr[i].is_string()) return bad_params(quoted(key) + " must be an array of strings" + at);
    const std::string& s = arr[i].get_string();
    if (has_nul(s)) return bad_params(quoted(key) + " elements must not contain NUL bytes" + at);
    out.push_back(s);
  }
  return std::nullopt;
}

std::optional<RpcError> read_env(Obj obj, std::string_view key, EnvPairs& out) {
  const Value* v = field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_object()) return bad_params(quoted(key) + " must be an object of strings");
  const Object& env = v->get_object();
  out.reserve(env.size());
  for (const auto& [name, value] : env) {
    if (name.empty()) return bad_params(quoted(key) + " names must not be empty");
    if (has_nul(name)) return bad_params(quoted(key) + " names must not contain NUL bytes");
    if (name.find('=') != std::string_view::npos) {
      return bad_params(quoted(key) + " names must not contain '=' (key " + quoted_key(name) + ")");
    }
    if (!value.is_string()) {
      return bad_params(quoted(key) + " values must be strings (key " + quoted_key(name) + ")");
    }
    if (has_nul(value.get_string())) {
      return bad_params(quoted(key) + " values must not contain NUL bytes (key " +
                        quoted_key(name) + ")");
    }
    out.emplace_back(name, value.get_string());
  }
  return std::nullopt;
}

std::optional<RpcError> read_secrets(Obj obj, std::vector<std::string>& secrets, EnvPairs& env) {
  auto check = [&](std::string_view value, const std::string& which) -> std::optional<RpcError> {
    if (value.size() < kMinSecretBytes || value.size() > kMaxSecretBytes)
      return bad_params(which + " is " + std::to_string(value.size()) + " bytes; a secret is " +
                        std::to_string(kMinSecretBytes) + ".." + std::to_string(kMaxSecretBytes) +
                        " bytes (a shorter one would redact ordinary output)");
    if (secrets.size() == kMaxSecrets)
      return bad_params("at most " + std::to_string(kMaxSecrets) +
                        " secrets (\"secrets\" and \"secret_env\" together)");
    secrets.emplace_back(value);
    return std::nullopt;
  };
  if (const Value* v = field(obj, "secrets")) {
    if (!v->is_array()) return bad_params("\"secrets\" must be an array of strings");
    const Array& list = v->get_array();
    for (size_t i = 0; i < list.size(); ++i) {
      if (!list[i].is_string()) return bad_params("\"secrets\" must be an array of strings");
      if (auto e = check(list[i].get_string(), "\"secrets\"[" + std::to_string(i) + "]")) return e;
    }
  }
  EnvPairs secret_env;
  if (auto e = read_env(obj, "secret_env", secret_env)) return e;
  for (auto& [name, value] : secret_env) {
    if (auto e = check(value, "\"secret_env\" " + quoted_key(name))) return e;
    env.emplace_back(std::move(name), std::move(value));
  }
  return std::nullopt;
}

std::optional<RpcError> read_bool(Obj obj, std::string_view key, bool& out) {
  const Value* v = field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_bool()) return bad_params(quoted(key) + " must be true or false");
  out = v->get_bool();
  return std::nullopt;
}

std::optional<RpcError> read_seconds(Obj obj, std::string_view key, bool positive,
                                     std::optional<double>& out) {
  const Value* v = field(obj, key);
  if (v == nullptr) return std::nullopt;
  double d = std::nan("");
  if (v->is_int64()) {
    d = static_cast<double>(v->get_int64());
  } else if (v->is_uint64()) {
    d = static_cast<double>(v->get_uint64());
  } else if (v->is_double()) {
    d = v->get_double();
  }
  // The comparisons also reject NaN; 1e400 arrives from the parser as infinity.
  if (!(positive ? d > 0 : d >= 0) || !std::isfinite(d))
    return bad_params(quoted(key) + (positive ? " must be a positive number of seconds"
                                              : " must be seconds >= 0"));
  out = d;
  return std::nullopt;
}

// `within`: where the field is, for the message (e.g. " in \"limits\"").
std::optional<RpcError> read_byte_count(Obj obj, std::string_view key, std::optional<uint64_t>& out,
                                        std::string_view where) {
  const Value* v = field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (v->is_int64() && v->get_int64() >= 0) {
    out = static_cast<uint64_t>(v->get_int64());
  } else if (v->is_uint64()) {
    out = v->get_uint64();
  } else if (v->is_double() && v->get_double() >= 0 && v->get_double() < 0x1p64 &&
             std::floor(v->get_double()) == v->get_double()) {
    out = static_cast<uint64_t>(v->get_double());  // 1e6 written by a client
  } else {
    return bad_params(quoted(key) + std::string(where) + " must be an integer >= 0");
  }
  return std::nullopt;
}

std::optional<RpcError> read_encoding(Obj obj, std::string_view key, OutputEncoding& e) {
  const Value* v = field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (v->is_string()) {
    const std::string& s = v->get_string();
    if (s == "utf8" || s == "utf-8") {
      e = OutputEncoding::kUtf8;
      return std::nullopt;
    }
    if (s == "base64") {
      e = OutputEncoding::kBase64;
      return std::nullopt;
    }
  }
  return bad_params(quoted(key) + " must be \"utf8\" or \"base64\"");
}

std::optional<RpcError> read_limits(Obj obj, shm::Rlimits& out) {
  const Value* v = field(obj, "limits");
  if (v == nullptr) return std::nullopt;
  if (!v->is_object()) return bad_params("\"limits\" must be an object");
  Obj limits = &v->get_object();
  for (const auto& member : *limits) {
    std::string_view key = member.first;  // a variable clang 14's lambdas can capture
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
  const Value* v = field(obj, "output_policy");
  if (v == nullptr) return std::nullopt;
  if (v->is_string() && (v->get_string() == "truncate" || v->get_string() == "kill")) {
    kill = v->get_string() == "kill";
    return std::nullopt;
  }
  return bad_params("\"output_policy\" must be \"truncate\" or \"kill\"");
}

std::optional<RpcError> read_term_size(Obj obj, std::string_view key, uint16_t& out,
                                       std::string_view where) {
  std::optional<uint64_t> n;
  if (auto e = read_byte_count(obj, key, n, where)) return e;
  if (!n) return std::nullopt;
  if (*n < 1 || *n > 65535)
    return bad_params(quoted(key) + std::string(where) + " must be 1..65535");
  out = uint16_t(*n);
  return std::nullopt;
}

std::optional<RpcError> read_pty(Obj obj, std::optional<PtyParams>& out) {
  const Value* v = field(obj, "pty");
  if (v == nullptr || (v->is_bool() && !v->get_bool())) return std::nullopt;
  out.emplace();
  if (v->is_bool()) return std::nullopt;
  if (!v->is_object())
    return bad_params("\"pty\" must be true or an object {\"rows\", \"cols\", \"term\"}");
  Obj pty = &v->get_object();
  if (auto e = read_term_size(pty, "rows", out->rows, " in \"pty\"")) return e;
  if (auto e = read_term_size(pty, "cols", out->cols, " in \"pty\"")) return e;
  if (auto e = read_string(pty, "term", kOptional | kNonEmpty, out->term)) return e;
  if (out->term.size() > 64 || !std::all_of(out->term.begin(), out->term.end(), [](char ch) {
        return std::isalnum((unsigned char)ch) || ch == '-' || ch == '_' || ch == '.' || ch == '+';
      }))
    return bad_params("\"term\" in \"pty\" must be 1..64 letters, digits or - _ . +");
  return std::nullopt;
}

std::optional<RpcError> read_bytes(Obj obj, std::string_view key, std::string_view encoding_key,
                                   std::optional<std::string>& out, OutputEncoding& enc) {
  if (auto e = read_encoding(obj, encoding_key, enc)) return e;
  const Value* v = field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (v->is_bytes()) {
    out = std::string(v->get_bytes());
    return std::nullopt;
  }
  if (!v->is_string()) return bad_params(quoted(key) + " must be a string, or bytes");
  if (enc != OutputEncoding::kBase64) {
    out = v->get_string();
    return std::nullopt;
  }
  out = decode_base64(v->get_string());
  if (!out)
    return bad_params(quoted(key) + " is not valid base64 (" + quoted(encoding_key) +
                      ": \"base64\")");
  return std::nullopt;
}

std::optional<RpcError> read_stdin(Obj obj, std::optional<std::string>& data, bool& open) {
  if (auto e = read_bool(obj, "stdin_open", open)) return e;
  OutputEncoding enc = OutputEncoding::kUnset;
  return read_bytes(obj, "stdin", "stdin_encoding", data, enc);
}

bool id_chars(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           ch == '.' || ch == '_' || ch == ':' || ch == '-';
  });
}

std::optional<RpcError> read_signal(Obj obj, std::string_view key, bool required, int& out) {
  const Value* v = field(obj, key);
  if (v == nullptr) {
    if (required) return bad_params(quoted(key) + " is required");
    return std::nullopt;
  }
  if (v->is_int64() && v->get_int64() >= 1 && v->get_int64() <= 64) {
    out = int(v->get_int64());
    return std::nullopt;
  }
  if (v->is_string())
    if (auto sig = signal_number(v->get_string())) {
      out = *sig;
      return std::nullopt;
    }
  return bad_params(quoted(key) +
                    " must be a signal name (\"TERM\", \"INT\", \"KILL\", \"HUP\", "
                    "\"USR1\", ...) or a number 1..64");
}

std::optional<RpcError> read_stream_view(Obj obj, shm::SpoolView& out) {
  std::string stream = "both";
  if (auto e = read_string(obj, "stream", kOptional, stream)) return e;
  if (stream == "stdout") {
    out = shm::SpoolView::kStdout;
  } else if (stream == "stderr") {
    out = shm::SpoolView::kStderr;
  } else if (stream == "both") {
    out = shm::SpoolView::kBoth;
  } else {
    return bad_params("\"stream\" must be \"stdout\", \"stderr\" or \"both\"");
  }
  return std::nullopt;
}

std::optional<RpcError> read_bounded(Obj obj, std::string_view key, uint64_t max, uint64_t& out) {
  std::optional<uint64_t> n;
  if (auto e = read_byte_count(obj, key, n)) return e;
  if (!n) return std::nullopt;
  if (*n < 1 || *n > max) return bad_params(quoted(key) + " must be 1.." + std::to_string(max));
  out = *n;
  return std::nullopt;
}

}  // namespace sp::rpc::detail
