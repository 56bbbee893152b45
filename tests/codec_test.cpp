// The Cap'n Proto job spec and result, built and read in place.
#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "shm/codec.h"

using namespace sp::shm;

TEST_CASE("a spec round-trips through its arena without copies", "[codec]") {
  alignas(8) unsigned char arena[4096];
  std::memset(arena, 0xab, sizeof arena);  // garbage: encode must zero what it needs
  std::vector<std::string_view> argv{"sh", "-c", "echo $X"};
  std::vector<std::string_view> env{"PATH=/bin", "X=1"};
  std::vector<std::string_view> secrets{"hunter22", std::string_view("a\0b\nc", 5)};
  SpecInput in{"/bin/sh", argv, env,    "/tmp", 1500, 250, Rlimits{10, 1 << 30, 64, 100, 4096},
               24,        80,   secrets};
  auto words = encode_spec({arena, sizeof arena}, sizeof arena / 8, in);
  REQUIRE(words);
  CHECK(*words * 8 <= spec_size_bound(in));
  DecodedSpec out;
  REQUIRE(decode_spec(arena, *words, out));
  CHECK(std::string(out.path) == "/bin/sh");
  REQUIRE(out.argv.size() == 4);
  CHECK(std::string(out.argv[2]) == "echo $X");
  CHECK(out.argv[3] == nullptr);
  REQUIRE(out.env.size() == 3);
  CHECK(std::string(out.env[1]) == "X=1");
  CHECK(std::string(out.cwd) == "/tmp");
  CHECK(out.timeout_ms == 1500);
  CHECK(out.kill_grace_ms == 250);
  CHECK(out.limits.cpu_seconds == 10);
  CHECK(out.limits.address_space_bytes == 1 << 30);
  CHECK(out.limits.open_files == 64);
  CHECK(out.limits.processes == 100);
  CHECK(out.limits.file_size_bytes == 4096);
  CHECK(out.pty_rows == 24);
  CHECK(out.pty_cols == 80);
  CHECK(out.secrets == secrets);  // bytes, NUL included
  // Zero copy: the strings live in the arena.
  CHECK(reinterpret_cast<const unsigned char*>(out.argv[0]) >= arena);
  CHECK(reinterpret_cast<const unsigned char*>(out.argv[0]) < arena + sizeof arena);
}

TEST_CASE("an empty cwd decodes as none", "[codec]") {
  alignas(8) unsigned char arena[1024] = {};
  std::vector<std::string_view> argv{"true"};
  SpecInput in{"true", argv, {}, "", 0, 0, {}, 0, 0, {}};
  auto words = encode_spec({arena, sizeof arena}, 0, in);
  REQUIRE(words);
  DecodedSpec out;
  REQUIRE(decode_spec(arena, *words, out));
  CHECK(out.cwd == nullptr);
  CHECK(out.env.size() == 1);
}

TEST_CASE("a spec too large for its arena is refused, saying how large it is", "[codec]") {
  alignas(8) unsigned char arena[1024] = {};
  std::string big(2000, 'x');
  std::vector<std::string_view> argv{big};
  SpecInput in{"x", argv, {}, "", 0, 0, {}, 0, 0, {}};
  auto words = encode_spec({arena, sizeof arena}, 0, in);
  REQUIRE_FALSE(words);
  CHECK_THAT(words.error().message(), Catch::Contains("the limit is 1024"));
}

TEST_CASE("a malformed spec is an error, not a crash", "[codec]") {
  alignas(8) unsigned char arena[256];
  for (size_t i = 0; i < sizeof arena; ++i) arena[i] = static_cast<unsigned char>(i * 37 + 11);
  DecodedSpec out;
  CHECK_FALSE(decode_spec(arena, sizeof arena / 8, out));
  CHECK_FALSE(decode_spec(arena, 0, out));
}

TEST_CASE("results round-trip, and a long failure text is shortened to fit", "[codec]") {
  alignas(8) unsigned char buf[256];
  uint32_t words = encode_result(buf, 3, 9, "boom");
  JobOutcome r = decode_result(buf, words);
  CHECK(r.exit_code == 3);
  CHECK(r.signal == 9);
  CHECK(r.failure == "boom");
  std::string long_text(1000, 'y');
  words = encode_result(buf, -1, 0, long_text);
  r = decode_result(buf, words);
  CHECK(r.exit_code == -1);
  CHECK_FALSE(r.failure.empty());
  CHECK(r.failure.size() < 256);
  CHECK(decode_result(buf, 0).exit_code == -1);  // no result written: defaults
}
