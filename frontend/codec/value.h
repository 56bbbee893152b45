// rpc::Value: the codec-neutral document that crosses the codec boundary.
// A codec (JSON-RPC today) decodes a request's id and params into Values and
// encodes results from them; method handlers and param readers see only
// Values, never a wire format's types, so a second codec needs no handler
// change.
//
// Kinds follow what both JSON and MessagePack can carry: null, bool, signed
// and unsigned 64-bit integers, doubles, UTF-8 strings, arrays and objects;
// and bytes (MessagePack's bin: command output, stdin and file data, exact),
// which JSON writes as base64 text.
// An Object keeps its members in order and keeps duplicate keys (a DAG's
// node names are keys, and a name given twice must be refused, not dropped);
// lookups find the last member of a name, as JSON parsers commonly do.
//
// A plain value type: copyable, movable, thread-compatible. Nesting is
// bounded by the codec that builds it (kMaxDepth).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace sp::rpc {

class Value;

// Largest nesting of arrays/objects a codec accepts in a request; deeper
// input is a parse error (bounded recursion, no stack overflow).
inline constexpr size_t kMaxDepth = 64;

using Array = std::vector<Value>;

// Bytes that are not text: a Value of their own, so a codec that can carry
// them (MessagePack's bin) does, exactly. Owned, or borrowed (borrow()) by a
// frame that is encoded at once while the memory it names lives: a stream
// chunk framed straight from its output ring, with no copy on the way. A
// copy of a borrowed Bytes borrows too: never keep one past that encode.
class Bytes {
 public:
  Bytes(std::string data) : data_(std::move(data)) {}  // NOLINT: implicit, like Value's
  Bytes(const char* data) : data_(data) {}             // NOLINT
  static Bytes borrow(std::string_view bytes) {
    Bytes b;
    b.borrowed_ = bytes.data();
    b.borrowed_size_ = bytes.size();
    return b;
  }
  std::string_view view() const {
    return borrowed_ ? std::string_view(borrowed_, borrowed_size_) : std::string_view(data_);
  }
  bool operator==(const Bytes& other) const { return view() == other.view(); }

 private:
  Bytes() = default;
  std::string data_;
  const char* borrowed_ = nullptr;
  size_t borrowed_size_ = 0;
};

class Object {
 public:
  using Member = std::pair<std::string, Value>;
  struct Init;
  Object() = default;
  // The members are moved in: `{{"stdout", std::move(text)}}` costs no copy
  // of the text, and a nested object is not copied at each level.
  Object(std::initializer_list<Init> members);

  // The value of the last member named `key`, or nullptr.
  const Value* if_contains(std::string_view key) const;
  Value* if_contains(std::string_view key);
  // The last member named `key`, appended (as null) if there is none.
  Value& operator[](std::string_view key);
  void erase(std::string_view key);  // every member of that name
  void emplace_back(std::string key, Value v);

  size_t size() const;
  bool empty() const;
  std::vector<Member>::const_iterator begin() const;
  std::vector<Member>::const_iterator end() const;
  bool operator==(const Object&) const;

 private:
  std::vector<Member> members_;
};

class Value {
 public:
  enum class Kind : uint8_t {
    kNull,
    kBool,
    kInt64,
    kUint64,
    kDouble,
    kString,
    kArray,
    kObject,
    kBytes
  };

  Value() = default;
  Value(std::nullptr_t) {}  // NOLINT: implicit by design, as JSON's null
  Value(bool b) : v_(b) {}  // NOLINT
  template <typename I, std::enable_if_t<std::is_integral_v<I> && !std::is_same_v<I, bool> &&
                                             !std::is_same_v<I, char>,
                                         int> = 0>
  Value(I i) {  // NOLINT
    if constexpr (std::is_signed_v<I>)
      v_ = int64_t(i);
    else
      v_ = uint64_t(i);
  }
  Value(double d) : v_(d) {}                         // NOLINT
  Value(const char* s) : v_(std::string(s)) {}       // NOLINT
  Value(std::string s) : v_(std::move(s)) {}         // NOLINT
  Value(std::string_view s) : v_(std::string(s)) {}  // NOLINT
  Value(Array a) : v_(std::move(a)) {}               // NOLINT
  Value(Object o) : v_(std::move(o)) {}              // NOLINT
  Value(Bytes b) : v_(std::move(b)) {}               // NOLINT

  Kind kind() const { return Kind(v_.index()); }
  bool is_null() const { return kind() == Kind::kNull; }
  bool is_bool() const { return kind() == Kind::kBool; }
  bool is_int64() const { return kind() == Kind::kInt64; }
  bool is_uint64() const { return kind() == Kind::kUint64; }
  bool is_double() const { return kind() == Kind::kDouble; }
  bool is_number() const { return is_int64() || is_uint64() || is_double(); }
  bool is_string() const { return kind() == Kind::kString; }
  bool is_array() const { return kind() == Kind::kArray; }
  bool is_object() const { return kind() == Kind::kObject; }
  bool is_bytes() const { return kind() == Kind::kBytes; }

  // Unchecked: the kind must match.
  bool get_bool() const { return std::get<bool>(v_); }
  int64_t get_int64() const { return std::get<int64_t>(v_); }
  uint64_t get_uint64() const { return std::get<uint64_t>(v_); }
  double get_double() const { return std::get<double>(v_); }
  const std::string& get_string() const { return std::get<std::string>(v_); }
  std::string& get_string() { return std::get<std::string>(v_); }
  const Array& get_array() const { return std::get<Array>(v_); }
  Array& get_array() { return std::get<Array>(v_); }
  const Object& get_object() const { return std::get<Object>(v_); }
  Object& get_object() { return std::get<Object>(v_); }
  std::string_view get_bytes() const { return std::get<Bytes>(v_).view(); }

  bool operator==(const Value&) const;

 private:
  std::variant<std::monostate, bool, int64_t, uint64_t, double, std::string, Array, Object, Bytes>
      v_;
};

// One member of a braced list. An initializer_list's elements are const, so
// the member is held mutable to be moved out of it.
struct Object::Init {
  Init(std::string key, Value value) : member(std::move(key), std::move(value)) {}  // NOLINT
  mutable Member member;
};

inline size_t Object::size() const {
  return members_.size();
}
inline bool Object::empty() const {
  return members_.empty();
}
inline std::vector<Object::Member>::const_iterator Object::begin() const {
  return members_.begin();
}
inline std::vector<Object::Member>::const_iterator Object::end() const {
  return members_.end();
}

}  // namespace sp::rpc
