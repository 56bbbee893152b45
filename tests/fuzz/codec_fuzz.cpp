// libFuzzer target: the Cap'n Proto job spec and result codec. Arbitrary bytes
// read as a spec or a result must be an error or a value, never a crash; a
// spec built from arbitrary strings must read back the same.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "shm/codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sp::shm;
  // 1. Bytes as an arena, read in place.
  std::vector<uint64_t> words((size + 7) / 8 + 1, 0);
  std::memcpy(words.data(), data, size);
  auto* arena = reinterpret_cast<const unsigned char*>(words.data());
  DecodedSpec spec;
  (void)decode_spec(arena, uint32_t(words.size()), spec);
  (void)decode_result({arena, words.size() * 8}, uint32_t(words.size()));

  // 2. Bytes as strings (split at NULs: they become C strings), encoded and read back.
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> parts;
  for (size_t start = 0; start <= in.size();) {
    size_t nul = in.find('\0', start);
    if (nul == std::string_view::npos) nul = in.size();
    parts.push_back(in.substr(start, nul - start));
    start = nul + 1;
  }
  if (parts.empty() || parts[0].empty()) return 0;
  std::vector<std::string_view> argv(parts.begin(), parts.end());
  std::vector<std::string_view> env(parts.begin() + 1, parts.end());
  alignas(8) static unsigned char out[16384];
  // The env strings serve as the secrets too (any bytes).
  SpecInput si{parts[0], argv, env, parts.back(), size, uint32_t(size), Rlimits{size, 1, 2, 3, 4},
               24,       80,   env};
  auto n = encode_spec({out, sizeof out}, sizeof out / 8, si);
  if (!n) return 0;  // too large for the arena: refused, fine
  if (!decode_spec(out, *n, spec)) std::abort();
  if (parts[0] != spec.path || spec.argv.size() != argv.size() + 1) std::abort();
  for (size_t i = 0; i < argv.size(); ++i)
    if (argv[i] != spec.argv[i]) std::abort();
  if (spec.timeout_ms != size || spec.limits.cpu_seconds != size) std::abort();
  if (spec.secrets != env || spec.pty_rows != 24 || spec.pty_cols != 80) std::abort();
  return 0;
}
