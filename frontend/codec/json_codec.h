// The JSON-RPC 2.0 codec: one request or batch per line in, one answer per
// line out. The only place Boost.JSON is used in the daemon: requests are
// parsed straight into rpc::Values (keeping duplicate keys), and answers are
// written from Values by the writers below, never by boost::json::serialize,
// which writes "1.5E0" for doubles and the invalid token "Infinity" for 1e400.
// Pure functions; thread-compatible. Every *_text function returns one
// complete JSON text without the trailing '\n'.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "frontend/codec/rpc.h"

namespace sp::rpc {

// Parses one request line (without its '\n'; a trailing '\r' is whitespace).
// A line that is empty or only whitespace yields no calls and no error:
// nothing to answer. The caller enforces the line-length limit beforehand.
Line parse_line(std::string_view text);

// One JSON text as a Value (at most kMaxDepth deep), or nullopt with the
// parser's reason in `why`.
std::optional<Value> parse_value(std::string_view text, std::string* why = nullptr);

std::string result_text(const Value& id, const Value& result);
// result_text appended to `out`.
void append_result(std::string& out, const Value& id, const Value& result);
std::string error_text(const Value& id, const RpcError& err);
// "[a,b,c]"; "" for none.
std::string batch_text(const std::vector<std::string>& member_texts);

// Appends `v` as JSON. Integers exactly; doubles in shortest round-trip form
// (std::to_chars), with ".0" added to integral ones so a float id stays a
// float; non-finite doubles as null.
void append_value(std::string& out, const Value& v);
// Appends `s` as a quoted JSON string. `s` must be valid UTF-8 (sanitize
// command output with append_utf8_sanitized first); bytes are not checked.
void append_string(std::string& out, std::string_view s);

class JsonCodec final : public Codec {
 public:
  Line decode(std::string_view frame) const override { return parse_line(frame); }
  std::string result(const Value& id, const Value& r) const override { return result_text(id, r); }
  std::string error(const Value& id, const RpcError& e) const override { return error_text(id, e); }
  std::string batch(const std::vector<std::string>& members) const override {
    return batch_text(members);
  }
  void chunk(std::string& out, const Value& id, const Value& v) const override {
    append_result(out, id, v);
  }
  std::string_view terminator() const override { return "\n"; }
};

}  // namespace sp::rpc
