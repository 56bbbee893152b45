// Flag helpers the CLI's command families share. Header-only.
#pragma once

#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdint>
#include <optional>
#include <string>

namespace sp::cli {

// A whole number of 0 or more, in decimal, as the flag's value (CLI11 by
// itself takes "-1" and a number too big as 2^64-1, and "010" as 8).
inline CLI::Validator whole_number() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        uint64_t n = 0;
        const char* end = text.data() + text.size();
        if (auto [at, ec] = std::from_chars(text.data(), end, n); ec != std::errc() || at != end)
          return "expected a whole number of 0 or more, got: " + text;
        text = std::to_string(n);
        return "";
      },
      "COUNT");
}

inline void add_count(CLI::App* sub, const std::string& flag, std::optional<uint64_t>& value,
                      const std::string& help, const std::string& group) {
  sub->add_option(flag, value, help)->transform(whole_number())->group(group);
}

}  // namespace sp::cli
