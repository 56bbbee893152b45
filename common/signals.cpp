#include "common/signals.h"

#include <string.h>

#include <cctype>

namespace sp {

std::string signal_name(int sig) {
  const char* abbrev = sig > 0 ? sigabbrev_np(sig) : nullptr;
  return abbrev ? std::string("SIG") + abbrev : std::string();
}

std::optional<int> signal_number(std::string_view name) {
  std::string upper(name);
  for (char& ch : upper) ch = char(std::toupper(static_cast<unsigned char>(ch)));
  std::string_view bare(upper);
  if (bare.substr(0, 3) == "SIG") bare.remove_prefix(3);
  for (int sig = 1; sig <= 64; ++sig)
    if (const char* abbrev = sigabbrev_np(sig); abbrev && bare == abbrev) return sig;
  return std::nullopt;
}

}  // namespace sp
