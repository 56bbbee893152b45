// Result<T>: a value or an Error, for errors that cross a module boundary.
// Error carries an errno-style code (or a module code) and a context string
// that says what was being done. Plain value types; thread-compatible.
#pragma once

#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace sp {

struct Error {
  int code = 0;         // errno value; 0 when the context says it all (a module that needs
                        // callers to tell its errors apart returns an enum instead)
  std::string context;  // what failed, e.g. "bind /run/user/0/shell-pool.sock"

  std::string message() const {
    if (code > 0 && code < 4096) return context + ": " + std::strerror(code);
    return context;
  }
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& value() const& { return std::get<0>(v_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

  const Error& error() const { return std::get<1>(v_); }
  // The outcome without the value.
  Result<void> status() const;

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_;
  bool ok_ = true;
};

using Status = Result<void>;

template <typename T>
Result<void> Result<T>::status() const {
  if (ok()) return {};
  return error();
}

}  // namespace sp
