#include "common/redactor.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <deque>

namespace sp {

Redactor::Redactor(const std::vector<std::string>& secrets) {
  auto a = std::make_shared<Automaton>();
  std::vector<Automaton::Node>& nodes = a->nodes;
  nodes.emplace_back();
  for (const std::string& s : secrets) {
    if (s.empty()) continue;
    uint32_t at = 0;
    for (char ch : s) {
      const auto c = static_cast<unsigned char>(ch);
      uint32_t next = a->child(at, c);
      if (next == 0) {
        next = uint32_t(nodes.size());
        nodes.emplace_back();
        nodes.back().depth = nodes[at].depth + 1;
        nodes[at].next.emplace_back(c, next);
      }
      at = next;
    }
    nodes[at].match = uint32_t(s.size());
    a->first[static_cast<unsigned char>(s[0])] = true;
  }
  // Failure links, breadth first: a node's is the longest proper suffix of
  // its string that is also a path from the root.
  std::deque<uint32_t> queue;
  for (auto [c, n] : nodes[0].next) {
    a->root[c] = n;
    queue.push_back(n);
  }
  while (!queue.empty()) {
    const uint32_t at = queue.front();
    queue.pop_front();
    for (auto [c, n] : nodes[at].next) {
      const uint32_t f = a->step(nodes[at].fail, c);
      nodes[n].fail = f;
      if (nodes[n].match == 0) nodes[n].match = nodes[f].match;
      queue.push_back(n);
    }
  }
  a_ = std::move(a);
}

uint32_t Redactor::Automaton::child(uint32_t node, unsigned char c) const {
  if (node == 0 && nodes.size() > 1 && root[c] != 0) return root[c];
  for (auto [k, n] : nodes[node].next)
    if (k == c) return n;
  return 0;
}

uint32_t Redactor::Automaton::step(uint32_t node, unsigned char c) const {
  for (;;) {
    if (node == 0) return root[c];
    if (uint32_t n = child(node, c)) return n;
    node = nodes[node].fail;
  }
}

size_t Redactor::feed(std::string_view in, char* out) {
  // `text`: the held bytes, then the new ones. text[0, done) is written (as
  // itself or inside a "***"); covers_ are the ranges to be "***" that are
  // not written yet, in order, apart.
  std::string joined;
  std::string_view text = in;
  size_t k = 0;
  if (!held_.empty()) {
    joined.reserve(held_.size() + in.size());
    joined.append(held_).append(in);
    text = joined;
    k = held_.size();
  }
  char* o = out;
  size_t done = 0;
  const size_t n = text.size();
  // Writes the covers that begin at or before `safe` (no later match can
  // begin before them any more), and the bytes before them.
  auto settle = [&](size_t safe) {
    size_t i = 0;
    for (; i < covers_.size() && covers_[i].first <= safe; ++i) {
      auto [from, to] = covers_[i];
      if (from > done || !cover_) {  // else it joins the "***" written last
        std::memcpy(o, text.data() + done, from > done ? from - done : 0);
        o += from > done ? from - done : 0;
        std::memcpy(o, kRedacted.data(), kRedacted.size());
        o += kRedacted.size();
      }
      done = std::max(done, to);
      cover_ = true;
    }
    covers_.erase(covers_.begin(), covers_.begin() + std::ptrdiff_t(i));
  };
  const Automaton& a = *a_;
  while (k < n) {
    if (node_ == 0) {  // the usual case: skip what cannot start a secret
      while (k < n && !a.first[static_cast<unsigned char>(text[k])]) ++k;
      if (k == n) break;
    }
    node_ = a.step(node_, static_cast<unsigned char>(text[k++]));
    if (const uint32_t len = a.nodes[node_].match) {
      // A match may begin before `text` (len > k): in bytes a match before
      // covered, as raw bytes never leave while they could begin one.
      size_t from = len > k ? 0 : k - len;
      while (!covers_.empty() && covers_.back().second >= from) {  // overlaps or touches
        from = std::min(from, covers_.back().first);
        covers_.pop_back();
      }
      covers_.emplace_back(from, k);
      settle(k - std::min<size_t>(k, a.nodes[node_].depth));
    }
  }
  // Everything before what could still become a secret goes now. (The
  // state may reach back before `text`, into covered bytes.)
  const size_t safe = n - std::min<size_t>(n, a.nodes[node_].depth);
  settle(safe);
  const size_t raw_end = covers_.empty() ? safe : std::min(safe, covers_.front().first);
  if (raw_end > done) {
    std::memcpy(o, text.data() + done, raw_end - done);
    o += raw_end - done;
    done = raw_end;
    cover_ = false;
  }
  for (auto& [from, to] : covers_) from -= done, to -= done;
  held_.assign(text.substr(done));
  return size_t(o - out);
}

size_t Redactor::finish(char* out) {
  // No match can begin or grow now: the covers are written, then the rest.
  const std::string held = std::move(held_);
  held_.clear();
  size_t n = 0;
  size_t done = 0;
  for (auto [from, to] : covers_) {
    if (from > done || !cover_) {
      std::memcpy(out + n, held.data() + done, from > done ? from - done : 0);
      n += from > done ? from - done : 0;
      std::memcpy(out + n, kRedacted.data(), kRedacted.size());
      n += kRedacted.size();
    }
    done = std::max(done, to);
    cover_ = true;
  }
  std::memcpy(out + n, held.data() + done, held.size() - done);
  n += held.size() - done;
  covers_.clear();
  node_ = 0;
  cover_ = false;
  return n;
}

std::string Redactor::redact(std::string_view text) const {
  Redactor r(*this);  // the automaton is shared; the stream state is reset
  r.node_ = 0;
  r.cover_ = false;
  r.held_.clear();
  r.covers_.clear();
  std::string out(text.size() + kRedacted.size(), '\0');
  size_t n = r.feed(text, out.data());
  n += r.finish(out.data() + n);
  out.resize(n);
  return out;
}

std::vector<std::string> with_terminal_forms(std::vector<std::string> secrets) {
  const size_t count = secrets.size();
  for (size_t i = 0; i < count; ++i) {
    const std::string& s = secrets[i];
    if (s.find('\n') == std::string::npos) continue;
    std::string crlf;
    for (size_t k = 0; k < s.size(); ++k) {
      if (s[k] == '\n' && (k == 0 || s[k - 1] != '\r')) crlf += '\r';
      crlf += s[k];
    }
    if (crlf != s) secrets.push_back(std::move(crlf));
  }
  return secrets;
}

}  // namespace sp
