// Redactor (common/redactor.h): every occurrence replaced however the
// stream is cut, overlaps merged, and only what could still become a
// secret held back.
#include "common/redactor.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

namespace {

// The definition: every occurrence's byte range, ranges that overlap or
// touch merged, each merged range replaced by "***".
std::string reference(const std::string& text, const std::vector<std::string>& secrets) {
  std::vector<bool> covered(text.size() + 1, false);
  std::vector<std::pair<size_t, size_t>> ranges;
  for (const auto& s : secrets)
    for (size_t at = text.find(s); at != std::string::npos; at = text.find(s, at + 1))
      ranges.emplace_back(at, at + s.size());
  std::sort(ranges.begin(), ranges.end());
  std::vector<std::pair<size_t, size_t>> merged;
  for (auto r : ranges) {
    if (!merged.empty() && r.first <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, r.second);
    } else {
      merged.push_back(r);
    }
  }
  std::string out;
  size_t at = 0;
  for (auto [b, e] : merged) {
    out += text.substr(at, b - at);
    out += "***";
    at = e;
  }
  return out + text.substr(at);
}

std::string stream(sp::Redactor& r, const std::string& text, const std::vector<size_t>& cuts) {
  std::string out;
  size_t at = 0;
  for (size_t cut : cuts) {
    std::string buf(r.held() + (cut - at), '\0');
    out.append(buf.data(), r.feed(std::string_view(text).substr(at, cut - at), buf.data()));
    at = cut;
  }
  std::string buf(r.held() + (text.size() - at), '\0');
  out.append(buf.data(), r.feed(std::string_view(text).substr(at), buf.data()));
  std::string tail(r.held(), '\0');
  out.append(tail.data(), r.finish(tail.data()));
  return out;
}

}  // namespace

TEST_CASE("redactor: occurrences, split ones, overlaps and neighbours") {
  std::vector<std::string> secrets{"hunter22", "s3cr3t", "abcab"};
  sp::Redactor r(secrets);
  CHECK(r.redact("pw=hunter22.") == "pw=***.");
  CHECK(r.redact("hunter22hunter22") == "***");       // adjacent: one
  CHECK(r.redact("hunter22 hunter22") == "*** ***");  // apart: two
  CHECK(r.redact("abcabcab") == "***");               // overlapping: one
  CHECK(r.redact("hunter2") == "hunter2");            // a prefix is not a secret
  CHECK(r.redact("") == "");
  // Split across pieces, one byte at a time.
  std::string text = "x hunter22 y s3cr3ts3cr3t z";
  std::vector<size_t> cuts;
  for (size_t i = 1; i < text.size(); ++i) cuts.push_back(i);
  sp::Redactor r2(secrets);
  CHECK(stream(r2, text, cuts) == "x *** y *** z");
}

TEST_CASE("redactor: holds back only what could still become a secret") {
  sp::Redactor r({"password!"});
  std::string out(64, '\0');
  // A prompt that cannot be a secret leaves at once.
  CHECK(r.feed("$ ", out.data()) == 2);
  CHECK(r.held() == 0);
  size_t n = r.feed("echo pass", out.data());
  CHECK(std::string(out.data(), n) == "echo ");
  CHECK(r.held() == 4);            // "pass"
  n = r.feed("port", out.data());  // "passport": not a secret after all
  CHECK(std::string(out.data(), n) == "passport");
  CHECK(r.held() == 0);
  n = r.feed("passw", out.data());
  CHECK(n == 0);
  n = r.feed("ord!", out.data());
  CHECK(std::string(out.data(), n) == "***");
  n = r.feed("pass", out.data());
  CHECK(n == 0);
  n = r.finish(out.data());  // the end: the held bytes go
  CHECK(std::string(out.data(), n) == "pass");
}

TEST_CASE("redactor: terminal forms of a multi-line secret") {
  auto forms = sp::with_terminal_forms({"line1\nline2", "one-line"});
  REQUIRE(forms.size() == 3);
  CHECK(forms[2] == "line1\r\nline2");
  sp::Redactor r(forms);
  CHECK(r.redact("a line1\r\nline2 b line1\nline2") == "a *** b ***");
}

TEST_CASE("redactor: matches the definition on random streams cut anywhere") {
  std::mt19937 rng(12345);
  for (int round = 0; round < 3000; ++round) {
    // A small alphabet so that secrets overlap and recur often.
    auto word = [&](size_t len) {
      std::string s;
      for (size_t i = 0; i < len; ++i) s += char('a' + rng() % 3);
      return s;
    };
    std::vector<std::string> secrets;
    for (size_t i = 0, n = 1 + rng() % 4; i < n; ++i) secrets.push_back(word(4 + rng() % 4));
    std::string text = word(rng() % 200);
    std::vector<size_t> cuts;
    for (size_t i = 1; i < text.size(); ++i)
      if (rng() % 5 == 0) cuts.push_back(i);
    sp::Redactor r(secrets);
    INFO("secrets " << secrets[0] << " text " << text);
    REQUIRE(stream(r, text, cuts) == reference(text, secrets));
    REQUIRE(r.redact(text) == reference(text, secrets));
  }
}
