#include "frontend/codec/value.h"

#include <algorithm>

namespace sp::rpc {

Object::Object(std::initializer_list<Init> members) {
  members_.reserve(members.size());
  for (const Init& m : members) members_.push_back(std::move(m.member));
}

const Value* Object::if_contains(std::string_view key) const {
  for (auto it = members_.rbegin(); it != members_.rend(); ++it)
    if (it->first == key) return &it->second;
  return nullptr;
}

Value* Object::if_contains(std::string_view key) {
  for (auto it = members_.rbegin(); it != members_.rend(); ++it)
    if (it->first == key) return &it->second;
  return nullptr;
}

Value& Object::operator[](std::string_view key) {
  for (auto it = members_.rbegin(); it != members_.rend(); ++it)
    if (it->first == key) return it->second;
  members_.emplace_back(std::string(key), nullptr);
  return members_.back().second;
}

void Object::erase(std::string_view key) {
  std::erase_if(members_, [&](const Member& m) { return m.first == key; });
}

void Object::emplace_back(std::string key, Value v) {
  members_.emplace_back(std::move(key), std::move(v));
}

bool Object::operator==(const Object& other) const {
  return members_ == other.members_;
}

bool Value::operator==(const Value& other) const {
  return v_ == other.v_;
}

}  // namespace sp::rpc
