// Output rings: a single-writer (the worker running the job) /
// single-reader (the frontend) byte ring of chunks, each an 8-byte
// ChunkHeader plus data padded to 8. The writer publishes `out_head` only
// after a whole chunk is written, so a writer killed mid-chunk leaves
// nothing half-visible. When the ring is full the writer stops reading the
// child's pipe (backpressure) and sets `out_writer_waiting`; the reader rings
// the writer's doorbell after it frees space. The rings belong to the jobs
// that run at once, not to every job slot: OutputRings below.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <utility>

#include "shm/job_table.h"
#include "shm/layout.h"

namespace sp::shm {

inline constexpr uint64_t align8(uint64_t n) {
  return (n + 7) & ~uint64_t{7};
}

class OutputWriter {
 public:
  OutputWriter(JobSlot& slot, unsigned char* data, uint32_t size)
      : slot_(slot), data_(data), size_(size) {}

  // Space for the next chunk's data, contiguous in the ring (may be empty when
  // the ring is full). Inserts a pad chunk when the tail end is too short to
  // be worth a read. Fill it, then commit().
  std::span<unsigned char> reserve() {
    uint64_t head = slot_.out_head.load(std::memory_order_relaxed);
    uint64_t tail = slot_.out_tail.load(std::memory_order_acquire);
    uint64_t free = size_ - (head - tail);
    uint64_t pos = head % size_;
    uint64_t contig = size_ - pos;
    if (contig < kMinContig && free > contig) {
      put_header(pos, 0, kStreamPad);
      head += contig;
      slot_.out_head.store(head, std::memory_order_release);
      free -= contig;
      pos = 0;
      contig = size_;
    }
    uint64_t room = std::min(free, contig);
    if (room <= sizeof(ChunkHeader)) return {};
    return {data_ + pos + sizeof(ChunkHeader), room - sizeof(ChunkHeader)};
  }

  // Publishes `len` bytes written into the last reserve() as one chunk.
  void commit(uint8_t stream, uint32_t len) {
    uint64_t head = slot_.out_head.load(std::memory_order_relaxed);
    put_header(head % size_, len, stream);
    slot_.out_head.store(head + sizeof(ChunkHeader) + align8(len), std::memory_order_release);
  }

  // Marks the writer as paused; true if space appeared meanwhile (then the
  // writer must not sleep).
  bool pause() {
    slot_.out_writer_waiting.store(1, std::memory_order_seq_cst);
    // Store-then-load handshake with the reader's drain(): needs a full fence.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!reserve().empty()) {
      slot_.out_writer_waiting.store(0, std::memory_order_relaxed);
      return true;
    }
    return false;
  }

 private:
  static constexpr uint64_t kMinContig = 512;
  void put_header(uint64_t pos, uint32_t len, uint8_t stream) {
    ChunkHeader h{len, stream, {}};
    std::memcpy(data_ + pos, &h, sizeof h);
  }
  JobSlot& slot_;
  unsigned char* data_;
  uint64_t size_;
};

// The output rings and who holds them. A job takes a ring when its first
// output comes (take) and holds it until its slot is freed: the ring's owner
// word is (slot + 1) << 32 | the slot's generation, and every way a slot is
// freed (JobTable::release, the repairs) moves its generation on, which
// frees the ring with it. So nobody gives a ring back, a process killed at
// any instruction leaves every ring free or held by a live job, and a taker
// overwrites a free word with one CAS (two takers never share a ring).
// When none is free, a writer calls want() and waits: the frontend, which
// frees most slots, takes the flag after its turn (take_wanted) and rings the
// workers; their idle tick retries too.
class OutputRings {
 public:
  OutputRings(JobTable jobs, std::atomic<uint64_t>* owners, unsigned char* data, uint32_t count,
              uint32_t bytes, std::atomic<uint32_t>* wanted)
      : jobs_(jobs), owners_(owners), data_(data), count_(count), bytes_(bytes), wanted_(wanted) {}

  uint32_t bytes() const { return bytes_; }
  uint32_t count() const { return count_; }
  unsigned char* ring(uint32_t i) const { return data_ + uint64_t(i) * bytes_; }

  // The ring job `slot` holds; nullptr if it holds none (yet).
  unsigned char* held(uint32_t slot) const {
    uint32_t r = jobs_.slot(slot).out_ring.load(std::memory_order_acquire);
    return r && r <= count_ ? ring(r - 1) : nullptr;
  }

  // Writer: the ring job `slot` holds, taking a free one if it holds none;
  // nullptr if none is free.
  unsigned char* take(uint32_t slot) {
    JobSlot& s = jobs_.slot(slot);
    const uint64_t mine = uint64_t(slot + 1) << 32 | jobs_.load(slot).generation;
    uint32_t r = s.out_ring.load(std::memory_order_relaxed);
    if (r && r <= count_ && owners_[r - 1].load(std::memory_order_acquire) == mine)
      return ring(r - 1);
    for (uint32_t n = 0; n < count_; ++n) {
      const uint32_t i = (slot + n) % count_;
      uint64_t o = owners_[i].load(std::memory_order_acquire);
      if (!is_free(o) || !owners_[i].compare_exchange_strong(o, mine, std::memory_order_seq_cst))
        continue;
      s.out_ring.store(i + 1, std::memory_order_release);
      return ring(i);
    }
    return nullptr;
  }

  // Writer, after take() found none: asks to be rung when a slot is freed.
  // take() again afterwards: a ring freed meanwhile rang nobody.
  void want() { wanted_->store(1, std::memory_order_seq_cst); }
  // Frontend, after it freed slots: true if someone waits for a ring (then
  // ring the workers).
  bool take_wanted() {
    return wanted_->load(std::memory_order_seq_cst) &&
           wanted_->exchange(0, std::memory_order_seq_cst);
  }

  // Rings held by a job now (a scan: for tests and figures).
  uint32_t in_use() const {
    uint32_t n = 0;
    for (uint32_t i = 0; i < count_; ++i) n += !is_free(owners_[i].load(std::memory_order_acquire));
    return n;
  }

 private:
  bool is_free(uint64_t owner) const {
    const uint64_t slot = owner >> 32;
    return slot == 0 || slot > jobs_.size() ||
           jobs_.load(uint32_t(slot - 1)).generation != uint32_t(owner);
  }

  JobTable jobs_;
  std::atomic<uint64_t>* owners_;
  unsigned char* data_;
  uint32_t count_;
  uint32_t bytes_;
  std::atomic<uint32_t>* wanted_;
};

class OutputReader {
 public:
  // `data`: the ring the job holds (OutputRings::held), nullptr if it holds
  // none yet: then nothing is read (its first chunk comes with a doorbell).
  OutputReader(JobSlot& slot, const unsigned char* data, uint32_t size)
      : slot_(slot), data_(data), size_(size) {}

  // Calls fn(stream, bytes) for each published chunk, then frees their
  // space. Returns true if the writer was waiting for space (the caller rings
  // its doorbell).
  template <typename Fn>
  bool drain(Fn&& fn) {
    return free_to(peek(std::forward<Fn>(fn)));
  }
  // drain() in two steps, for a reader that must keep the chunks somewhere
  // before their space goes (a crash between the two reads them again):
  // peek calls fn for each published chunk and returns the position after
  // them; free_to frees up to it (true: ring the writer).
  template <typename Fn>
  uint64_t peek(Fn&& fn) const {
    const uint64_t head = slot_.out_head.load(std::memory_order_acquire);
    uint64_t tail = slot_.out_tail.load(std::memory_order_relaxed);
    if (!data_) return tail;  // its ring was taken after our caller looked
    while (tail != head) {
      uint64_t pos = tail % size_;
      ChunkHeader h;
      std::memcpy(&h, data_ + pos, sizeof h);
      if (h.stream == kStreamPad) {
        tail += size_ - pos;
        continue;
      }
      fn(h.stream, std::string_view(reinterpret_cast<const char*>(data_ + pos + sizeof h), h.len));
      tail += sizeof h + align8(h.len);
    }
    return tail;
  }
  bool free_to(uint64_t tail) {
    if (tail == slot_.out_tail.load(std::memory_order_relaxed))
      return false;  // nothing freed: leave a waiting writer's flag alone
    slot_.out_tail.store(tail, std::memory_order_seq_cst);
    return slot_.out_writer_waiting.exchange(0, std::memory_order_seq_cst) != 0;
  }

  bool empty() const {
    return slot_.out_tail.load(std::memory_order_relaxed) ==
           slot_.out_head.load(std::memory_order_acquire);
  }

 private:
  JobSlot& slot_;
  const unsigned char* data_;
  uint64_t size_;
};

}  // namespace sp::shm
