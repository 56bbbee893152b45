// Readers for the fields of a method's params object, shared by the parsers
// of the built-in methods (protocol.cpp, job_params.cpp). Each returns an
// InvalidParams error naming the field, or nullopt; a JSON null counts as
// absent. Internal to frontend/.
#pragma once

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>

#include "frontend/protocol.h"

namespace sp::rpc::detail {

RpcError bad_params(std::string why);
RpcError internal_error(const std::exception& e);
std::string quoted(std::string_view name);
// A client's string quoted for a message: at most 64 bytes, cut at a code
// point boundary (the message must stay valid UTF-8), "..." if cut.
std::string quoted_key(std::string_view key);
bool has_nul(std::string_view s);

// The params object, or nullptr when params are absent; an error for arrays.
using Obj = const boost::json::object*;
std::optional<RpcError> params_object(const boost::json::value& params, Obj& obj);
// The field's value, or nullptr when it is absent or JSON null.
const boost::json::value* field(Obj obj, std::string_view key);

enum StringRule : unsigned { kOptional = 0, kRequired = 1, kNonEmpty = 2 };
std::optional<RpcError> read_string(Obj obj, std::string_view key, unsigned rules,
                                    std::string& out);
std::optional<RpcError> read_string_array(Obj obj, std::string_view key,
                                          std::vector<std::string>& out);
std::optional<RpcError> read_env(Obj obj, std::string_view key, EnvPairs& out);
std::optional<RpcError> read_bool(Obj obj, std::string_view key, bool& out);
// "timeout": a positive finite number of seconds.
std::optional<RpcError> read_timeout(Obj obj, std::optional<double>& out);
// `within`: where the field is, for the message (e.g. " in \"limits\"").
std::optional<RpcError> read_byte_count(Obj obj, std::string_view key, std::optional<uint64_t>& out,
                                        std::string_view within = "");
std::optional<RpcError> read_encoding(Obj obj, bool& base64);
std::optional<RpcError> read_limits(Obj obj, shm::Rlimits& out);
std::optional<RpcError> read_output_policy(Obj obj, bool& kill);
std::optional<RpcError> check_stdin(Obj obj);

// Every byte is a letter, digit or one of . _ : - (the alphabet of job ids
// and plan step names; job_params.cpp).
bool id_chars(std::string_view s);

}  // namespace sp::rpc::detail
