#include "frontend/codec/json_codec.h"

#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <exception>

#include <boost/json/basic_parser_impl.hpp>

#include "common/text.h"

namespace sp::rpc {

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

// Builds a Value straight from Boost.JSON's parser events: no intermediate
// boost::json::value, and duplicate keys are kept (see value.h).
class ValueBuilder {
 public:
  using error_code = boost::json::error_code;
  using string_view = boost::json::string_view;
  static constexpr size_t max_object_size = size_t(-1);
  static constexpr size_t max_array_size = size_t(-1);
  static constexpr size_t max_key_size = size_t(-1);
  static constexpr size_t max_string_size = size_t(-1);

  bool on_document_begin(error_code&) { return true; }
  bool on_document_end(error_code&) { return true; }
  bool on_array_begin(error_code&) { return open(Array{}); }
  bool on_array_end(size_t, error_code&) { return close(); }
  bool on_object_begin(error_code&) { return open(Object{}); }
  bool on_object_end(size_t, error_code&) { return close(); }
  bool on_string_part(string_view s, size_t, error_code&) {
    text_.append(s.data(), s.size());
    return true;
  }
  bool on_string(string_view s, size_t, error_code&) {
    text_.append(s.data(), s.size());
    add(Value(std::move(text_)));
    text_.clear();
    return true;
  }
  bool on_key_part(string_view s, size_t, error_code&) {
    key_.append(s.data(), s.size());
    return true;
  }
  bool on_key(string_view s, size_t, error_code&) {
    key_.append(s.data(), s.size());
    stack_.back().key = std::move(key_);
    key_.clear();
    return true;
  }
  bool on_number_part(string_view, error_code&) { return true; }
  bool on_int64(int64_t i, string_view, error_code&) { return add(i); }
  bool on_uint64(uint64_t u, string_view, error_code&) { return add(u); }
  bool on_double(double d, string_view, error_code&) { return add(d); }
  bool on_bool(bool b, error_code&) { return add(b); }
  bool on_null(error_code&) { return add(nullptr); }
  bool on_comment_part(string_view, error_code&) { return true; }
  bool on_comment(string_view, error_code&) { return true; }

  Value take() { return std::move(root_); }

 private:
  struct Open {
    Value container;
    std::string key;  // an object's member whose value comes next
  };
  bool open(Value container) {
    stack_.push_back({std::move(container), {}});
    return true;
  }
  bool close() {
    Value done = std::move(stack_.back().container);
    stack_.pop_back();
    return add(std::move(done));
  }
  bool add(Value v) {
    if (stack_.empty()) {
      root_ = std::move(v);
    } else if (Open& top = stack_.back(); top.container.is_array()) {
      top.container.get_array().push_back(std::move(v));
    } else {
      top.container.get_object().emplace_back(std::move(top.key), std::move(v));
      top.key.clear();
    }
    return true;
  }
  std::vector<Open> stack_;
  std::string key_, text_;
  Value root_;
};

RpcError invalid_request(std::string why) {
  return {Code::InvalidRequest, "invalid request: " + std::move(why)};
}

bool usable_id(const Value& id) {
  switch (id.kind()) {
    case Value::Kind::kNull:
    case Value::Kind::kString:
    case Value::Kind::kInt64:
    case Value::Kind::kUint64:
      return true;
    case Value::Kind::kDouble:
      return std::isfinite(id.get_double());
    default:
      return false;
  }
}

Call make_call(Value v) {
  Call c;
  if (!v.is_object()) {
    c.error = invalid_request("a request must be a JSON object");
    return c;
  }
  Object& obj = v.get_object();
  Value* id = obj.if_contains("id");
  if (id != nullptr) {
    if (!usable_id(*id)) {
      c.error = invalid_request("\"id\" must be a string, a number or null");
      return c;
    }
    c.id = std::move(*id);
  }
  const Value* jsonrpc = obj.if_contains("jsonrpc");
  if (jsonrpc == nullptr || !jsonrpc->is_string() || jsonrpc->get_string() != "2.0") {
    c.error = invalid_request("\"jsonrpc\" must be \"2.0\"");
    return c;
  }
  const Value* method = obj.if_contains("method");
  if (method == nullptr) {
    c.error = invalid_request("\"method\" is required");
    return c;
  }
  if (!method->is_string()) {
    c.error = invalid_request("\"method\" must be a string");
    return c;
  }
  Value* params = obj.if_contains("params");
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

std::optional<Value> parse_value(std::string_view text, std::string* why) {
  boost::json::parse_options opt;
  opt.max_depth = kMaxDepth;
  boost::json::basic_parser<ValueBuilder> p(opt);
  boost::json::error_code ec;
  size_t n = p.write_some(false, text.data(), text.size(), ec);
  if (!ec && n < text.size()) ec = boost::json::error::extra_data;
  if (ec) {
    if (why) *why = ec.message();
    return std::nullopt;
  }
  return p.handler().take();
}

Line parse_line(std::string_view text) {
  Line line;
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) return line;
  try {
    std::string why;
    std::optional<Value> root = parse_value(text, &why);
    if (!root) {
      line.error = RpcError{Code::ParseError, "parse error: " + why};
      return line;
    }
    if (!root->is_array()) {
      line.calls.push_back(make_call(std::move(*root)));
      return line;
    }
    Array& arr = root->get_array();
    if (arr.empty()) {
      line.error = invalid_request("empty batch");
      return line;
    }
    line.batch = true;
    line.calls.reserve(arr.size());
    for (Value& element : arr) line.calls.push_back(make_call(std::move(element)));
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

void append_value(std::string& out, const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kNull:
      out += "null";
      return;
    case Value::Kind::kBool:
      out += v.get_bool() ? "true" : "false";
      return;
    case Value::Kind::kInt64:
      append_number(out, v.get_int64());
      return;
    case Value::Kind::kUint64:
      append_number(out, v.get_uint64());
      return;
    case Value::Kind::kDouble:
      append_double(out, v.get_double());
      return;
    case Value::Kind::kString:
      append_string(out, v.get_string());
      return;
    case Value::Kind::kBytes:  // JSON has no bytes: base64 text
      out.push_back('"');
      append_base64(out, v.get_bytes());
      out.push_back('"');
      return;
    case Value::Kind::kArray: {
      out.push_back('[');
      bool first = true;
      for (const Value& e : v.get_array()) {
        if (!first) out.push_back(',');
        first = false;
        append_value(out, e);
      }
      out.push_back(']');
      return;
    }
    case Value::Kind::kObject: {
      out.push_back('{');
      bool first = true;
      for (const auto& [key, value] : v.get_object()) {
        if (!first) out.push_back(',');
        first = false;
        append_string(out, key);
        out.push_back(':');
        append_value(out, value);
      }
      out.push_back('}');
      return;
    }
  }
}

void append_result(std::string& out, const Value& id, const Value& result) {
  out += R"({"jsonrpc":"2.0","id":)";
  append_value(out, id);
  out += R"(,"result":)";
  append_value(out, result);
  out.push_back('}');
}

std::string result_text(const Value& id, const Value& result) {
  std::string out;
  append_result(out, id, result);
  return out;
}

std::string error_text(const Value& id, const RpcError& err) {
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

}  // namespace sp::rpc
