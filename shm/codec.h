// Codec: the Cap'n Proto job spec and result, built and read in place in a job
// slot's memory. The only code that includes Cap'n Proto headers besides the
// generated schema. Pure functions; thread-compatible. Never throws: Cap'n
// Proto exceptions are caught here and returned as errors.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "shm/layout.h"

namespace sp::shm {

// Sets one limit from "NAME=VALUE" (VALUE a positive integer). EINVAL, with
// the names known, if NAME is unknown or VALUE is not such an integer.
Status parse_limit(std::string_view name_value, Rlimits& out);

struct SpecInput {
  std::string_view path;
  std::span<const std::string_view> argv;
  std::span<const std::string_view> env;
  std::string_view cwd;
  uint64_t timeout_ms = 0;
  uint32_t kill_grace_ms = 0;
  Rlimits limits;
  uint16_t pty_rows = 0, pty_cols = 0;        // a PTY of this size; 0 rows: pipes
  std::span<const std::string_view> secrets;  // redacted from its output
  uint32_t host_slot = 0;                     // a remote job: the host's slot + 1; 0: local
  uint32_t host_generation = 0;
  bool host_check = false;  // host_check: log in only
};

// Upper bound of the encoded size, in bytes.
uint64_t spec_size_bound(const SpecInput& in);

// Builds the spec into `arena` (whose first `prev_words` words may hold an
// earlier message: they are zeroed first). Returns the words used; an error if
// the spec does not fit.
Result<uint32_t> encode_spec(std::span<unsigned char> arena, uint32_t prev_words,
                             const SpecInput& in);

// A decoded spec: the strings point into the arena (NUL-terminated, zero copy)
// and stay valid while the arena is not reused.
struct DecodedSpec {
  const char* path = nullptr;
  std::vector<const char*> argv;  // NULL-terminated, for execve
  std::vector<const char*> env;   // NULL-terminated, for execve
  const char* cwd = nullptr;      // nullptr: none
  uint64_t timeout_ms = 0;
  uint32_t kill_grace_ms = 0;
  Rlimits limits;
  uint16_t pty_rows = 0, pty_cols = 0;    // a PTY of this size; 0 rows: pipes
  std::vector<std::string_view> secrets;  // into the arena
  uint32_t host_slot = 0;                 // as in SpecInput
  uint32_t host_generation = 0;
  bool host_check = false;
};
// Reuses `out`'s vectors. An error if the message is malformed.
Status decode_spec(const unsigned char* arena, uint32_t words, DecodedSpec& out);

struct JobOutcome {
  int32_t exit_code = -1;
  int32_t signal = 0;
  std::string failure;
  uint8_t error_code = 0;  // a remote job's RemoteError (common/remote_error.h); 0: none
  uint8_t error_phase = 0;
};
// Builds the result into `buf` (zeroed first); a failure text too long for the
// buffer is shortened. Returns the words used.
uint32_t encode_result(std::span<unsigned char> buf, int32_t exit_code, int32_t signal,
                       std::string_view failure, uint8_t error_code = 0, uint8_t error_phase = 0);
JobOutcome decode_result(std::span<const unsigned char> buf, uint32_t words);

}  // namespace sp::shm
