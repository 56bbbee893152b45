#include "frontend/codec/msgpack_codec.h"

#include <msgpuck.h>

#include <algorithm>
#include <cstring>

#include "common/text.h"

namespace sp::rpc {

namespace {

constexpr int64_t kRequest = 0, kResponse = 1, kNotification = 2;

// Room for `max` bytes at the end of `out`, given to `put`, which returns
// where it stopped writing.
template <typename Put>
void encode(std::string& out, size_t max, Put put) {
  const size_t at = out.size();
  out.resize(at + max);
  char* end = put(out.data() + at);
  out.resize(size_t(end - out.data()));
}

// MessagePack's lengths are 32 bits: a longer string or bin (output over
// 4 GiB) is cut there, never given a wrong length.
std::string_view within_4g(std::string_view s) {
  return s.substr(0, std::min<size_t>(s.size(), UINT32_MAX));
}

void append_str(std::string& out, std::string_view s) {
  s = within_4g(s);
  encode(out, 5, [&](char* p) { return mp_encode_strl(p, uint32_t(s.size())); });
  out.append(s);
}

// The header of a str, bin, array or map that starts with byte `c`: how
// long it is (msgpuck's decoders want it whole).
size_t header_bytes(uint8_t c) {
  switch (c) {
    case 0xc4:  // bin8
    case 0xd9:  // str8
      return 2;
    case 0xc5:
    case 0xda:
    case 0xdc:
    case 0xde:  // bin16, str16, array16, map16
      return 3;
    case 0xc6:
    case 0xdb:
    case 0xdd:
    case 0xdf:  // bin32, str32, array32, map32
      return 5;
    default:  // fixstr, fixarray, fixmap
      return 1;
  }
}

// A non-negative integer (uint, or int written for one) at `p`.
std::optional<uint64_t> read_count(const char** p) {
  if (mp_typeof(**p) == MP_UINT) return mp_decode_uint(p);
  if (mp_typeof(**p) == MP_INT) {
    const int64_t i = mp_decode_int(p);
    if (i >= 0) return uint64_t(i);
  }
  return std::nullopt;
}

// Reads the frame scan_frame() accepted: every length is within it and the
// nesting is bounded, so this never reads past its end.
class Reader {
 public:
  explicit Reader(std::string_view frame) : p_(frame.data()) {}
  std::optional<Value> value(std::string* why);

 private:
  // A str, or a map key (str or bin): UTF-8 text.
  std::optional<std::string> text(std::string* why) {
    uint32_t n = 0;
    const char* s = mp_typeof(*p_) == MP_STR ? mp_decode_str(&p_, &n) : mp_decode_bin(&p_, &n);
    std::string out(s, n);
    if (!valid_utf8(out)) {
      if (why) *why = "a string that is not UTF-8 (send bytes as bin)";
      return std::nullopt;
    }
    return out;
  }
  const char* p_;
};

std::optional<Value> Reader::value(std::string* why) {
  switch (mp_typeof(*p_)) {
    case MP_NIL:
      mp_decode_nil(&p_);
      return Value(nullptr);
    case MP_BOOL:
      return Value(mp_decode_bool(&p_));
    case MP_UINT: {  // int64 where it fits, as the JSON parser gives numbers
      const uint64_t u = mp_decode_uint(&p_);
      if (u <= uint64_t(INT64_MAX)) return Value(int64_t(u));
      return Value(u);
    }
    case MP_INT:
      return Value(mp_decode_int(&p_));
    case MP_FLOAT:
      return Value(double(mp_decode_float(&p_)));
    case MP_DOUBLE:
      return Value(mp_decode_double(&p_));
    case MP_STR:
      if (auto s = text(why)) return Value(std::move(*s));
      return std::nullopt;
    case MP_BIN: {
      uint32_t n = 0;
      const char* s = mp_decode_bin(&p_, &n);
      return Value(Bytes{std::string(s, n)});
    }
    case MP_ARRAY: {
      const uint32_t n = mp_decode_array(&p_);
      Array a;
      a.reserve(n);  // scan_frame saw each element: n is within the frame
      for (uint32_t i = 0; i < n; ++i) {
        auto v = value(why);
        if (!v) return std::nullopt;
        a.push_back(std::move(*v));
      }
      return Value(std::move(a));
    }
    case MP_MAP: {
      const uint32_t n = mp_decode_map(&p_);
      Object o;
      for (uint32_t i = 0; i < n; ++i) {
        const mp_type kt = mp_typeof(*p_);
        if (kt != MP_STR && kt != MP_BIN) {
          if (why) *why = "a map key that is not a string";
          return std::nullopt;
        }
        auto key = text(why);
        if (!key) return std::nullopt;
        auto v = value(why);
        if (!v) return std::nullopt;
        o.emplace_back(std::move(*key), std::move(*v));
      }
      return Value(std::move(o));
    }
    case MP_EXT:
      break;
  }
  if (why) *why = "a MessagePack ext value (not used by this protocol)";
  return std::nullopt;
}

RpcError invalid_request(std::string why) {
  return {Code::InvalidRequest, "invalid request: " + std::move(why)};
}

// The spec's params (an array of arguments) as ours: the map itself, an
// array holding only the map, or no arguments at all.
Value params_of(Value p) {
  if (p.is_array()) {
    Array& a = p.get_array();
    if (a.empty()) return Value(nullptr);
    if (a.size() == 1 && (a[0].is_object() || a[0].is_null())) return std::move(a[0]);
  }
  return p;
}

Call make_call(Value v) {
  Call c;
  if (!v.is_array() || v.get_array().empty() || !v.get_array()[0].is_int64()) {
    c.error = invalid_request("a message is [0, msgid, method, params] or [2, method, params]");
    return c;
  }
  Array& a = v.get_array();
  const int64_t type = a[0].get_int64();
  const size_t method_at = type == kRequest ? 2 : 1;
  if (!(type == kRequest && a.size() == 4) && !(type == kNotification && a.size() == 3)) {
    c.error = invalid_request(type == kResponse ? "a response sent to the server"
                                                : "a message is [0, msgid, method, params] or "
                                                  "[2, method, params]");
    return c;
  }
  if (type == kRequest) {
    if (!a[1].is_int64() || a[1].get_int64() < 0 || a[1].get_int64() > int64_t(UINT32_MAX)) {
      c.error = invalid_request("msgid must be a uint32");
      return c;
    }
    c.id = a[1];
  } else {
    c.notification = true;
  }
  if (!a[method_at].is_string() || a[method_at].get_string().empty()) {
    c.error = invalid_request("method must be a non-empty string");  // a notification's: unanswered
    return c;
  }
  c.method = std::move(a[method_at].get_string());
  c.params = params_of(std::move(a[method_at + 1]));
  return c;
}

void append_response_head(std::string& out, const Value& id) {
  encode(out, 2, [](char* p) { return mp_encode_uint(mp_encode_array(p, 4), kResponse); });
  append_msgpack(out, id);
}

}  // namespace

FrameScan scan_frame(std::string_view in) {
  return FrameScanner().scan(in);
}

FrameScan FrameScanner::scan(std::string_view in) {
  const char* p = in.data() + at_;
  const char* const end = in.data() + in.size();
  auto restart = [&](FrameScan f) {
    *this = FrameScanner();
    return f;
  };
  for (;;) {
    // Here p is at a value's start: what is before it is never scanned again.
    at_ = size_t(p - in.data());
    if (p >= end) return {};
    if (uint8_t(*p) == 0xc1)
      return restart({FrameScan::kInvalid, 0, "byte 0xc1, which MessagePack never uses"});
    uint64_t children = 0;
    const char* q = p;
    switch (mp_typeof(*p)) {
      case MP_ARRAY:
        if (size_t(end - p) < header_bytes(uint8_t(*p))) return {};
        children = mp_decode_array(&q);
        break;
      case MP_MAP:
        if (size_t(end - p) < header_bytes(uint8_t(*p))) return {};
        children = 2ull * mp_decode_map(&q);
        break;
      case MP_STR:
      case MP_BIN: {
        if (size_t(end - p) < header_bytes(uint8_t(*p))) return {};
        const uint32_t n = mp_typeof(*p) == MP_STR ? mp_decode_strl(&q) : mp_decode_binl(&q);
        if (size_t(end - q) < n) return {};
        q += n;
        break;
      }
      case MP_EXT:
        return restart(
            {FrameScan::kInvalid, 0, "a MessagePack ext value (not used by this protocol)"});
      default:  // a scalar: mp_check fails only when it is cut short
        if (mp_check(&q, end)) return {};
    }
    p = q;
    --left_[depth_];
    if (children) {
      if (depth_ + 1 > kMaxDepth)
        return restart({FrameScan::kInvalid, 0,
                        "nested deeper than " + std::to_string(kMaxDepth) + " arrays and maps"});
      left_[++depth_] = children;
    }
    while (left_[depth_] == 0) {
      if (depth_ == 0) return restart({FrameScan::kComplete, size_t(p - in.data()), {}});
      --depth_;
    }
  }
}

std::optional<Value> parse_msgpack(std::string_view frame, std::string* why) {
  FrameScan s = scan_frame(frame);
  if (s.status != FrameScan::kComplete || s.size != frame.size()) {
    if (why)
      *why = s.status == FrameScan::kInvalid    ? s.why
             : s.status == FrameScan::kNeedMore ? "cut short"
                                                : "bytes after the value";
    return std::nullopt;
  }
  return Reader(frame).value(why);
}

void append_msgpack(std::string& out, const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kNull:
      return encode(out, 1, [](char* p) { return mp_encode_nil(p); });
    case Value::Kind::kBool:
      return encode(out, 1, [&](char* p) { return mp_encode_bool(p, v.get_bool()); });
    case Value::Kind::kInt64: {
      const int64_t i = v.get_int64();
      return encode(out, 9, [&](char* p) {
        return i >= 0 ? mp_encode_uint(p, uint64_t(i)) : mp_encode_int(p, i);
      });
    }
    case Value::Kind::kUint64:
      return encode(out, 9, [&](char* p) { return mp_encode_uint(p, v.get_uint64()); });
    case Value::Kind::kDouble:
      return encode(out, 9, [&](char* p) { return mp_encode_double(p, v.get_double()); });
    case Value::Kind::kString:
      return append_str(out, v.get_string());
    case Value::Kind::kBytes: {
      const std::string_view b = within_4g(v.get_bytes());
      encode(out, 5, [&](char* p) { return mp_encode_binl(p, uint32_t(b.size())); });
      out.append(b);
      return;
    }
    case Value::Kind::kArray:
      encode(out, 5, [&](char* p) { return mp_encode_array(p, uint32_t(v.get_array().size())); });
      for (const Value& e : v.get_array()) append_msgpack(out, e);
      return;
    case Value::Kind::kObject:
      encode(out, 5, [&](char* p) { return mp_encode_map(p, uint32_t(v.get_object().size())); });
      for (const auto& [key, value] : v.get_object()) {
        append_str(out, key);
        append_msgpack(out, value);
      }
      return;
  }
}

namespace {

// The msgid of a request, or that it is a notification, read from the
// head of a frame whose body could not be read: its error is answered
// under that msgid, or (a notification's) not at all.
std::optional<Call> head_of(std::string_view frame) {
  FrameScan s = scan_frame(frame);
  if (s.status != FrameScan::kComplete || mp_typeof(frame[0]) != MP_ARRAY) return std::nullopt;
  const char* p = frame.data();
  const uint32_t n = mp_decode_array(&p);
  if (n == 0) return std::nullopt;
  const std::optional<uint64_t> type = read_count(&p);
  Call c;
  if (type == uint64_t(kNotification) && n == 3) {
    c.notification = true;
    return c;
  }
  if (type != uint64_t(kRequest) || n != 4) return std::nullopt;
  const std::optional<uint64_t> id = read_count(&p);
  if (!id || *id > UINT32_MAX) return std::nullopt;
  c.id = int64_t(*id);
  return c;
}

}  // namespace

Line MsgpackCodec::decode(std::string_view frame) const {
  Line line;
  std::string why;
  std::optional<Value> v = parse_msgpack(frame, &why);
  if (!v) {
    RpcError err{Code::ParseError, "parse error: " + why};
    if (std::optional<Call> c = head_of(frame)) {
      c->error = std::move(err);
      line.calls.push_back(std::move(*c));
    } else {
      line.error = std::move(err);
    }
    return line;
  }
  line.calls.push_back(make_call(std::move(*v)));
  return line;
}

std::string MsgpackCodec::result(const Value& id, const Value& r) const {
  std::string out;
  append_response_head(out, id);
  encode(out, 1, [](char* p) { return mp_encode_nil(p); });
  append_msgpack(out, r);
  return out;
}

std::string MsgpackCodec::error(const Value& id, const RpcError& e) const {
  Object err{{"code", static_cast<int>(e.code)}, {"message", e.message}};
  if (!e.data.is_null()) err.emplace_back("data", e.data);
  std::string out;
  append_response_head(out, id);
  append_msgpack(out, Value(std::move(err)));
  encode(out, 1, [](char* p) { return mp_encode_nil(p); });
  return out;
}

std::string MsgpackCodec::batch(const std::vector<std::string>& members) const {
  std::string out;  // never called: MessagePack-RPC has no batches
  for (const std::string& m : members) out += m;
  return out;
}

void MsgpackCodec::chunk(std::string& out, const Value& id, const Value& v) const {
  encode(out, 2, [](char* p) { return mp_encode_uint(mp_encode_array(p, 3), kNotification); });
  append_str(out, "stream");
  encode(out, 1, [](char* p) { return mp_encode_array(p, 2); });
  append_msgpack(out, id);
  append_msgpack(out, v);
}

}  // namespace sp::rpc
