// Readers for the fields of a method's params object, shared by the param
// parsers (exec_params.cpp, job_params.cpp, plan_params.cpp). Each returns a
// -32602 error naming the field, or nullopt; a null counts as absent.
// Internal to frontend/params/.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "frontend/params/params.h"

namespace sp::rpc::detail {

// The one -32602 of the param readers: "invalid params: <why>".
RpcError bad_params(std::string why);
// `err` (from bad_params) with `where` ("node \"a\"") put before its reason.
RpcError within(RpcError err, const std::string& where);
std::string quoted(std::string_view name);
// A client's string quoted for a message: at most 64 bytes, cut at a code
// point boundary (the message must stay valid UTF-8), "..." if cut.
std::string quoted_key(std::string_view key);

// The params object, or nullptr when params are absent; an error for arrays.
using Obj = const Object*;
std::optional<RpcError> params_object(const Value& params, Obj& obj);
// The field's value, or nullptr when it is absent or null.
const Value* field(Obj obj, std::string_view key);

enum StringRule : unsigned { kOptional = 0, kRequired = 1, kNonEmpty = 2 };
std::optional<RpcError> read_string(Obj obj, std::string_view key, unsigned rules,
                                    std::string& out);
std::optional<RpcError> read_string_array(Obj obj, std::string_view key,
                                          std::vector<std::string>& out);
std::optional<RpcError> read_env(Obj obj, std::string_view key, EnvPairs& out);
std::optional<RpcError> read_bool(Obj obj, std::string_view key, bool& out);
// Seconds, a finite number; `positive`: > 0 (a timeout), else >= 0 (a wait).
std::optional<RpcError> read_seconds(Obj obj, std::string_view key, bool positive,
                                     std::optional<double>& out);
// `within`: where the field is, for the message (e.g. " in \"limits\"").
std::optional<RpcError> read_byte_count(Obj obj, std::string_view key, std::optional<uint64_t>& out,
                                        std::string_view where = "");
// "utf8" or "base64"; absent: `e` stays as it is.
std::optional<RpcError> read_encoding(Obj obj, std::string_view key, OutputEncoding& e);
std::optional<RpcError> read_limits(Obj obj, shm::Rlimits& out);
std::optional<RpcError> read_output_policy(Obj obj, bool& kill);
// A terminal size: "rows" / "cols", integers 1..65535 (in `where`).
std::optional<RpcError> read_term_size(Obj obj, std::string_view key, uint16_t& out,
                                       std::string_view where = "");
// "pty": true, or {"rows", "cols", "term"}.
std::optional<RpcError> read_pty(Obj obj, std::optional<PtyParams>& out);
// Bytes (NUL included) at `key`: bytes as they are (MessagePack's bin), or
// a string in the encoding `encoding_key` names ("utf8", the default, or
// "base64": decoded), which `e` gets. Absent: `out` stays as it is.
std::optional<RpcError> read_bytes(Obj obj, std::string_view key, std::string_view encoding_key,
                                   std::optional<std::string>& out, OutputEncoding& e);
// "stdin" (a string; with "stdin_encoding": "base64", decoded) and "stdin_open".
std::optional<RpcError> read_stdin(Obj obj, std::optional<std::string>& data, bool& open);

// "secrets" (an array of strings) and "secret_env" (an object: each value is
// a secret, and goes into `env` too): each kMinSecretBytes..kMaxSecretBytes,
// at most kMaxSecrets. Errors never quote a value.
std::optional<RpcError> read_secrets(Obj obj, std::vector<std::string>& secrets, EnvPairs& env);

// Every byte is a letter, digit or one of . _ : - (the alphabet of job ids
// and plan step names).
bool id_chars(std::string_view s);

// A signal at `key`: a name ("TERM", "SIGTERM") or a number 1..64.
std::optional<RpcError> read_signal(Obj obj, std::string_view key, bool required, int& out);
// "stream": "stdout" | "stderr" | "both" (a view of a job's or service's output).
std::optional<RpcError> read_stream_view(Obj obj, shm::SpoolView& out);
// An integer 1..max at `key`; absent: `out` stays as it is.
std::optional<RpcError> read_bounded(Obj obj, std::string_view key, uint64_t max, uint64_t& out);

}  // namespace sp::rpc::detail
