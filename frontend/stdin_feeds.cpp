#include "frontend/stdin_feeds.h"

#include "common/clock.h"
#include "common/log.h"
#include "frontend/names.h"

namespace sp::frontend {

using shm::JobState;
using shm::JobWord;

namespace {

bool ended(JobWord w, uint32_t generation) {
  return w.generation != generation || w.state == JobState::kFree || shm::is_terminal(w.state);
}

}  // namespace

bool StdinFeeds::can_hold(uint64_t bytes) const {
  return held_ + bytes <= kMaxHeld;
}

uint64_t StdinFeeds::accepted(uint32_t slot, const Feed* f) const {
  uint64_t n = seg_.input_writer(slot).written();
  if (f)
    for (const Part& p : f->parts) n += p.data.size() - p.at;
  return n;
}

void StdinFeeds::start(uint32_t slot, uint32_t generation, std::string data, bool keep_open,
                       bool terminal) {
  jobs_.slot(slot).in_state.store(
      shm::kInputOpen | (keep_open ? 0 : shm::kInputOneShot) | (terminal ? shm::kInputTerminal : 0),
      std::memory_order_relaxed);
  Feed f{generation, {}};
  held_ += data.size();
  f.parts.push_back(Part{std::move(data), 0, !keep_open, nullptr, {}, 0});
  if (!pump(slot, f)) feeds_[slot] = std::move(f);
}

bool StdinFeeds::pump(uint32_t slot, Feed& f) {
  shm::InputWriter in = seg_.input_writer(slot);
  while (!f.parts.empty()) {
    Part& p = f.parts.front();
    const size_t n = in.write(std::string_view(p.data).substr(p.at));
    p.at += n;
    held_ -= n;
    if (p.at == p.data.size()) {
      if (p.eof) in.finish();
      if (p.done) p.done(nullptr, in.written());
      f.parts.pop_front();
      continue;
    }
    if (in.closed()) {  // the command takes no more: the rest is refused
      fail_from(slot, f, 0, StdinError::kReaderGone);
      return true;
    }
    if (!in.wait_for_room()) return false;  // its worker rings us when it frees some
  }
  return true;
}

void StdinFeeds::fail_from(uint32_t slot, Feed& f, size_t from, StdinError::Kind kind) {
  const JobWord w = jobs_.load(slot);
  const std::string state = ended(w, f.generation) ? state_name(w.state) : "running";
  const uint64_t written = seg_.input_writer(slot).written();
  while (f.parts.size() > from) {
    Part& p = f.parts.back();
    held_ -= p.data.size() - p.at;
    if (p.done) {
      const StdinError e{kind, p.job_id, written, state};
      p.done(&e, written);
    }
    f.parts.pop_back();
  }
}

void StdinFeeds::write(uint32_t slot, uint32_t generation, Write w, Done done) {
  auto it = feeds_.find(slot);
  Feed* f = it != feeds_.end() && it->second.generation == generation ? &it->second : nullptr;
  const uint64_t acc = accepted(slot, f);
  const JobWord word = jobs_.load(slot);
  const uint32_t state = jobs_.slot(slot).in_state.load(std::memory_order_acquire);
  auto fail = [&](StdinError::Kind kind) {
    const StdinError e{kind, w.job_id, acc,
                       ended(word, generation) ? state_name(word.state) : "running"};
    done(&e, acc);
  };
  if (ended(word, generation)) return fail(StdinError::kReaderGone);  // the slot may be reused
  if (!(state & shm::kInputOpen) || (state & shm::kInputOneShot)) return fail(StdinError::kNotOpen);
  if ((state & shm::kInputTerminal) && w.eof) return fail(StdinError::kTerminal);
  // A retried write whose bytes are all in already is answered as before.
  if (w.offset && *w.offset > acc) return fail(StdinError::kGap);
  const uint64_t skip = w.offset ? acc - *w.offset : 0;
  const bool eof_sent = state & shm::kInputEof || (f && !f->parts.empty() && f->parts.back().eof);
  if (skip >= w.data.size() && (!w.eof || eof_sent) && w.offset) return done(nullptr, acc);
  if (eof_sent) {
    if (w.data.empty() && w.eof) return done(nullptr, acc);  // job_stdin_close again: idempotent
    return fail(StdinError::kClosed);
  }
  if (state & shm::kInputClosed) return fail(StdinError::kReaderGone);
  w.data.erase(0, size_t(std::min<uint64_t>(skip, w.data.size())));
  if (!can_hold(w.data.size())) return fail(StdinError::kFull);
  Feed& feed = f ? *f : (feeds_[slot] = Feed{generation, {}});
  held_ += w.data.size();
  feed.parts.push_back(
      Part{std::move(w.data), 0, w.eof, std::move(done), w.job_id, monotonic_ns() + kWriteWaitNs});
  const bool all_written = pump(slot, feed);
  wake_(word);
  if (all_written) feeds_.erase(slot);
}

void StdinFeeds::service() {
  const uint64_t now = monotonic_ns();
  for (auto it = feeds_.begin(); it != feeds_.end();) {
    const uint32_t slot = it->first;
    Feed& f = it->second;
    const JobWord w = jobs_.load(slot);
    if (ended(w, f.generation)) {
      fail_from(slot, f, 0, StdinError::kReaderGone);
      it = feeds_.erase(it);
      continue;
    }
    const uint64_t before = held_;
    const bool done = pump(slot, f);
    if (held_ != before || done) wake_(w);
    // A write that waited too long fails, and the ones queued behind it.
    if (!done && f.parts.front().deadline_ns && now >= f.parts.front().deadline_ns)
      fail_from(slot, f, 0, StdinError::kFull);
    if (done || f.parts.empty()) {
      it = feeds_.erase(it);
    } else {
      ++it;
    }
  }
}

void StdinFeeds::recover() {
  for (uint32_t i = 0; i < jobs_.size(); ++i) {
    const JobWord w = jobs_.load(i);
    if (w.state == JobState::kFree || shm::is_terminal(w.state)) continue;
    const uint32_t state = jobs_.slot(i).in_state.load(std::memory_order_acquire);
    if (!(state & shm::kInputOneShot) || (state & (shm::kInputEof | shm::kInputClosed))) continue;
    shm::InputWriter in = seg_.input_writer(i);
    in.finish();
    wake_(w);
    spdlog::warn("job {}: its stdin ends at byte {}: the rest was held by a frontend that died",
                 jobs_.slot(i).job_id, in.written());
  }
}

}  // namespace sp::frontend
