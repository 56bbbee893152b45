// Redactor: replaces every occurrence of a set of secret byte strings in a
// stream with "***", as the stream passes in pieces of any size.
//
// An Aho-Corasick automaton over the secrets finds every occurrence, also
// one split across pieces. What could still become a secret (the longest
// suffix of the stream that is a prefix of one, and a secret found inside
// it) is held back, nothing more: output that cannot be part of a secret
// leaves at once. Overlapping or
// adjacent occurrences become one "***". finish() lets the held bytes go
// (at the end of the stream no secret can complete any more).
//
// A secret is at least kMinSecretBytes long, so the redacted output of a
// piece is never longer than the piece plus the bytes held before it.
//
// Not thread-safe; one per stream (a copy shares the automaton and starts
// its own stream). Memory: a node per secret byte, shared by the copies.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sp {

inline constexpr size_t kMinSecretBytes = 4;
inline constexpr size_t kMaxSecretBytes = 4096;
inline constexpr size_t kMaxSecrets = 64;  // per job, its session's included
inline constexpr std::string_view kRedacted = "***";

class Redactor {
 public:
  // `secrets`: each kMinSecretBytes..kMaxSecretBytes long (callers check).
  explicit Redactor(const std::vector<std::string>& secrets);

  // Bytes held back from the pieces fed so far.
  size_t held() const { return held_.size(); }
  // Redacts `in`, the stream's next piece, into `out`, which has room for
  // held() + in.size() bytes; returns the bytes written.
  size_t feed(std::string_view in, char* out);
  // The end of the stream: writes the held bytes (room: held()).
  size_t finish(char* out);

  // Every secret in `text` replaced at once (for text that is whole, like
  // a command line kept for job_status).
  std::string redact(std::string_view text) const;

 private:
  // The automaton: built once, shared by the copies (a job's two streams,
  // redact()'s scratch state).
  struct Automaton {
    struct Node {
      uint32_t fail = 0;
      uint32_t depth = 0;
      uint32_t match = 0;  // length of the longest secret ending here; 0: none
      std::vector<std::pair<unsigned char, uint32_t>> next;
    };
    uint32_t child(uint32_t node, unsigned char c) const;
    uint32_t step(uint32_t node, unsigned char c) const;

    std::vector<Node> nodes;
    std::array<uint32_t, 256> root{};  // the root's transitions, dense
    std::array<bool, 256> first{};     // bytes that start a secret
  };

  std::shared_ptr<const Automaton> a_;
  uint32_t node_ = 0;
  bool cover_ = false;  // what was written last is a "***" (an adjacent match joins it)
  std::string held_;
  // Ranges of held_ that are secrets (or joined to one), not written yet:
  // a match that begins before them may still join them.
  std::vector<std::pair<size_t, size_t>> covers_;
};

// The secrets of a job on a terminal: also each multi-line secret with its
// line ends as a terminal writes them ("\r\n").
std::vector<std::string> with_terminal_forms(std::vector<std::string> secrets);

}  // namespace sp
