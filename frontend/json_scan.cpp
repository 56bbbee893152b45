#include "frontend/json_scan.h"

#include <boost/json.hpp>
#include <unordered_set>

namespace sp::rpc::detail {

namespace {

class Scan {
 public:
  explicit Scan(std::string_view text) : t_(text) {}

  void ws() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\t' || t_[i_] == '\n' || t_[i_] == '\r'))
      ++i_;
  }
  bool at(char c) const { return i_ < t_.size() && t_[i_] == c; }
  bool more() const { return i_ < t_.size(); }
  void skip() { ++i_; }
  size_t pos() const { return i_; }

  std::string_view string() {  // at the opening quote
    size_t start = ++i_;
    while (i_ < t_.size() && t_[i_] != '"') i_ += t_[i_] == '\\' ? 2 : 1;
    return t_.substr(start, (i_++) - start);
  }

  // Where a value is: the request, its params, params.nodes, or elsewhere.
  enum class Level { kRequest, kParams, kNodes, kOther };

  // Skips one value.
  void value(Level level) {
    ws();
    if (at('"')) {
      string();
    } else if (at('{')) {
      object(level);
    } else if (at('[')) {
      ++i_;
      ws();
      if (at(']')) {
        ++i_;
        return;
      }
      for (;;) {
        value(Level::kOther);
        ws();
        if (at(',')) {
          ++i_;
          continue;
        }
        ++i_;  // ']'
        return;
      }
    } else {  // number, true, false, null
      while (i_ < t_.size() && !at(',') && !at('}') && !at(']') && !at(' ') && !at('\n') &&
             !at('\t') && !at('\r'))
        ++i_;
    }
  }

  std::optional<std::string> duplicate;

 private:
  void object(Level level) {
    const bool nodes = level == Level::kNodes;
    ++i_;
    std::unordered_set<std::string> keys;  // params.nodes' keys, decoded
    ws();
    if (at('}')) {
      ++i_;
      return;
    }
    for (;;) {
      ws();
      std::string_view key = string();
      if (nodes && !duplicate)
        if (std::string name = decoded(key); !keys.insert(name).second) duplicate = name;
      ws();
      ++i_;  // ':'
      value(level == Level::kRequest && key == "params" ? Level::kParams
            : level == Level::kParams && key == "nodes" ? Level::kNodes
                                                        : Level::kOther);
      ws();
      if (at(',')) {
        ++i_;
        continue;
      }
      ++i_;  // '}'
      return;
    }
  }

  // A key's text as written, with its escapes decoded (the text parsed
  // already, so the key is a valid JSON string).
  static std::string decoded(std::string_view key) {
    if (key.find('\\') == std::string_view::npos) return std::string(key);
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse("\"" + std::string(key) + "\"", ec);
    return !ec && v.is_string() ? std::string(v.get_string()) : std::string(key);
  }

  std::string_view t_;
  size_t i_ = 0;
};

}  // namespace

std::optional<std::string> duplicate_nodes_key(std::string_view text) {
  Scan s(text);
  s.value(Scan::Level::kRequest);
  return s.duplicate;
}

std::vector<std::string_view> array_elements(std::string_view text) {
  std::vector<std::string_view> out;
  Scan s(text);
  s.ws();
  if (!s.at('[')) return out;
  s.skip();
  for (;;) {
    s.ws();
    if (!s.more() || s.at(']')) return out;
    size_t from = s.pos();
    s.value(Scan::Level::kOther);
    out.push_back(text.substr(from, s.pos() - from));
    s.ws();
    if (!s.at(',')) return out;
    s.skip();
  }
}

}  // namespace sp::rpc::detail
