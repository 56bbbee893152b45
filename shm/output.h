// Per-job output ring: a single-writer (the worker running the job) /
// single-reader (the frontend) byte ring of chunks, each an 8-byte
// ChunkHeader plus data padded to 8. The writer publishes `out_head` only
// after a whole chunk is written, so a writer killed mid-chunk leaves
// nothing half-visible. When the ring is full the writer stops reading the
// child's pipe (backpressure) and sets `out_writer_waiting`; the reader rings
// the writer's doorbell after it frees space.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <utility>

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

class OutputReader {
 public:
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
