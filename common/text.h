// Byte-to-text helpers for command output on its way into JSON: a streaming
// UTF-8 sanitizer (invalid bytes become U+FFFD, so output that is not UTF-8
// never breaks a JSON text) and base64 for clients that asked for exact bytes.
// Pure functions; thread-compatible (each stream owns its `carry`).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sp {

// Appends `in` to `out`, replacing every invalid UTF-8 sequence with U+FFFD
// using the WHATWG "maximal subpart" rule (the same output a browser's
// TextDecoder gives). Valid input is copied unchanged.
//
// `carry` holds an incomplete but so far valid trailing sequence (at most 3
// bytes) between calls: pass the same carry for consecutive chunks of one
// stream, starting empty. With final=true a leftover incomplete sequence is
// flushed as one U+FFFD and carry is left empty. Splitting a stream into
// chunks anywhere never changes the concatenated output.
void append_utf8_sanitized(std::string& out, std::string_view in, std::string& carry, bool final);

// Whether `s` is valid UTF-8 throughout.
bool valid_utf8(std::string_view s);

// Appends the standard base64 encoding (RFC 4648 section 4, with '=' padding)
// of `in` to `out`.
void append_base64(std::string& out, std::string_view in);

// How command output goes into an answer: UTF-8 text (invalid sequences
// replaced), base64 text, or the bytes as they are, for a dialect that
// carries bytes (MessagePack's bin). kUnset: the call did not say; its
// dialect decides (frontend/method_table.h), and UTF-8 it is here.
enum class OutputEncoding : uint8_t { kUnset, kUtf8, kBase64, kBytes };

// Command output as answer text: base64 (exact bytes), the bytes
// themselves, or sanitized UTF-8, with `carry` holding an incomplete
// sequence between chunks of one stream until `final` (see
// append_utf8_sanitized).
void append_output_text(std::string& out, std::string_view bytes, OutputEncoding e,
                        std::string& carry, bool final);

// Decodes standard base64 (RFC 4648 section 4; '=' padding optional).
// nullopt if `in` has a character outside the alphabet or a stray '='.
std::optional<std::string> decode_base64(std::string_view in);

}  // namespace sp
