// A scan of raw JSON text for what the parsed value no longer shows:
// Boost.JSON keeps the last of duplicate keys, but a DAG's node names are
// keys, and a duplicate name must be refused, not silently dropped. Runs on
// text that already parsed (valid, nesting within kMaxJsonDepth). Pure.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sp::rpc::detail {

// The first key (escapes decoded: "a" and "\u0061" are one) that occurs
// twice in the object params.nodes of the request `text`.
std::optional<std::string> duplicate_nodes_key(std::string_view text);

// The texts of the elements of the JSON array `text`.
std::vector<std::string_view> array_elements(std::string_view text);

}  // namespace sp::rpc::detail
