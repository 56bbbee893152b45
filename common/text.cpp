#include "common/text.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>

namespace sp {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
constexpr uint64_t kHighBits = 0x8080808080808080ULL;

// Looks at the sequence starting at p[0] (n >= 1 bytes available).
// Returns len > 0 when p[0..len) is one complete valid code point; 0 when the
// n bytes are a valid but incomplete prefix; -k when p[0..k) is the maximal
// subpart of an invalid sequence (to be replaced by one U+FFFD; p[k] is then
// decoded afresh). Ranges follow the WHATWG UTF-8 decoder, which excludes
// overlong forms, surrogates and code points above U+10FFFF.
int classify(const unsigned char* p, size_t n) {
  const unsigned char b = p[0];
  if (b < 0x80) return 1;
  int need;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 2;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    return -1;
  }
  for (int i = 1; i <= need; ++i) {
    if (static_cast<size_t>(i) >= n) return 0;
    const unsigned char c = p[i];
    if (c < lo || c > hi) return -i;
    lo = 0x80;
    hi = 0xBF;
  }
  return need + 1;
}

}  // namespace

void append_utf8_sanitized(std::string& out, std::string_view in, std::string& carry, bool final) {
  const auto* p = reinterpret_cast<const unsigned char*>(in.data());
  size_t n = in.size();
  size_t i = 0;

  // Finish the sequence the previous chunk left open. carry is a valid
  // prefix, so the first byte that can fail is the first one taken from `in`.
  if (!carry.empty()) {
    unsigned char tmp[4];
    const size_t have = carry.size();
    std::memcpy(tmp, carry.data(), have);
    const size_t take = std::min<size_t>(4 - have, n);
    std::memcpy(tmp + have, p, take);
    const int r = classify(tmp, have + take);
    if (r > 0) {
      out.append(reinterpret_cast<const char*>(tmp), static_cast<size_t>(r));
      i = static_cast<size_t>(r) - have;
      carry.clear();
    } else if (r < 0) {
      out.append(kReplacement);
      const auto k = static_cast<size_t>(-r);
      i = k > have ? k - have : 0;  // k < have only if a caller forged carry
      carry.clear();
    } else {
      carry.append(in);
      if (final) {
        out.append(kReplacement);
        carry.clear();
      }
      return;
    }
  }

  size_t run = i;  // start of the bytes known valid but not yet copied
  out.reserve(out.size() + (n - i));
  while (i < n) {
    // Fast path: skip 8 ASCII bytes at a time.
    while (n - i >= 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      const uint64_t high = w & kHighBits;
      if (high == 0) {
        i += 8;
        continue;
      }
      if constexpr (std::endian::native == std::endian::little) {
        i += static_cast<size_t>(std::countr_zero(high)) / 8;  // first non-ASCII byte
      }
      break;
    }
    if (i >= n) break;
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const int r = classify(p + i, n - i);
    if (r > 0) {
      i += static_cast<size_t>(r);
      continue;
    }
    out.append(in.data() + run, i - run);
    if (r == 0) {  // incomplete at the end of the chunk
      if (final) {
        out.append(kReplacement);
      } else {
        carry.assign(in.data() + i, n - i);
      }
      return;
    }
    out.append(kReplacement);
    i += static_cast<size_t>(-r);
    run = i;
  }
  out.append(in.data() + run, n - run);
}

void append_base64(std::string& out, std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* p = reinterpret_cast<const unsigned char*>(in.data());
  const size_t n = in.size();
  const size_t start = out.size();
  out.resize(start + (n + 2) / 3 * 4);
  char* o = out.data() + start;
  size_t i = 0;
  for (; n - i >= 3; i += 3) {
    const uint32_t v = (uint32_t{p[i]} << 16) | (uint32_t{p[i + 1]} << 8) | p[i + 2];
    *o++ = kAlphabet[(v >> 18) & 63];
    *o++ = kAlphabet[(v >> 12) & 63];
    *o++ = kAlphabet[(v >> 6) & 63];
    *o++ = kAlphabet[v & 63];
  }
  if (n - i == 1) {
    const uint32_t v = uint32_t{p[i]} << 16;
    *o++ = kAlphabet[(v >> 18) & 63];
    *o++ = kAlphabet[(v >> 12) & 63];
    *o++ = '=';
    *o++ = '=';
  } else if (n - i == 2) {
    const uint32_t v = (uint32_t{p[i]} << 16) | (uint32_t{p[i + 1]} << 8);
    *o++ = kAlphabet[(v >> 18) & 63];
    *o++ = kAlphabet[(v >> 12) & 63];
    *o++ = kAlphabet[(v >> 6) & 63];
    *o++ = '=';
  }
}

std::optional<std::string> decode_base64(std::string_view in) {
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  std::string out;
  out.reserve(in.size() / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v = c >= 'A' && c <= 'Z'   ? c - 'A'
            : c >= 'a' && c <= 'z' ? c - 'a' + 26
            : c >= '0' && c <= '9' ? c - '0' + 52
            : c == '+'             ? 62
            : c == '/'             ? 63
                                   : -1;
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(char((acc >> bits) & 0xff));
    }
  }
  return out;
}

bool valid_utf8(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) {  // only then is the sanitizer's copy needed
      std::string out, carry;
      append_utf8_sanitized(out, s, carry, true);
      return out == s;
    }
  return true;
}

void append_output_text(std::string& out, std::string_view bytes, OutputEncoding e,
                        std::string& carry, bool final) {
  if (e == OutputEncoding::kBase64)
    append_base64(out, bytes);
  else if (e == OutputEncoding::kBytes)
    out.append(bytes);
  else
    append_utf8_sanitized(out, bytes, carry, final);
}

}  // namespace sp
