// Per-job input ring: a single-writer (the frontend) / single-reader (the
// worker running the job) byte ring that carries a job's stdin, the mirror
// of output.h. Plain bytes, no chunks: the writer publishes `in_head` after
// the bytes are in place, the reader `in_tail` after it passed them to the
// command's pipe. The flags in `in_state` (layout.h: kInput*) say whether
// more will come (kInputEof), whether the command still takes any
// (kInputClosed), and whether the writer waits for room.
//
// A writer that dies leaves whole bytes only; the next frontend writes on
// from in_head. A reader that dies loses what it had taken but not yet
// written to the pipe; its job ends lost anyway.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "shm/layout.h"

namespace sp::shm {

class InputWriter {
 public:
  InputWriter(JobSlot& slot, unsigned char* data, uint32_t size)
      : slot_(slot), data_(data), size_(size) {}

  uint64_t written() const { return slot_.in_head.load(std::memory_order_relaxed); }
  uint64_t room() const {
    return size_ - (written() - slot_.in_tail.load(std::memory_order_acquire));
  }
  // Copies as much of `bytes` as there is room for and publishes it; the
  // count copied. Nothing once the reader closed.
  size_t write(std::string_view bytes) {
    if (closed()) return 0;
    const uint64_t head = written();
    const size_t n = size_t(std::min<uint64_t>(bytes.size(), room()));
    const uint64_t pos = head % size_;
    const size_t first = size_t(std::min<uint64_t>(n, size_ - pos));
    std::memcpy(data_ + pos, bytes.data(), first);
    std::memcpy(data_, bytes.data() + first, n - first);
    // seq_cst: the caller then reads the job word to find the worker to ring
    // (the reader claims with a seq_cst CAS, then reads in_head).
    if (n) slot_.in_head.store(head + n, std::memory_order_seq_cst);
    return n;
  }
  // No more bytes after these.
  void finish() { slot_.in_state.fetch_or(kInputEof, std::memory_order_seq_cst); }
  bool closed() const { return slot_.in_state.load(std::memory_order_acquire) & kInputClosed; }
  // Marks the writer as waiting for room; true if room appeared meanwhile
  // (then it must not wait) or the reader closed.
  bool wait_for_room() {
    slot_.in_state.fetch_or(kInputWriterWaiting, std::memory_order_seq_cst);
    if (room() || closed()) {
      slot_.in_state.fetch_and(~kInputWriterWaiting, std::memory_order_relaxed);
      return true;
    }
    return false;
  }

 private:
  JobSlot& slot_;
  unsigned char* data_;
  uint64_t size_;
};

class InputReader {
 public:
  InputReader(JobSlot& slot, const unsigned char* data, uint32_t size)
      : slot_(slot), data_(data), size_(size) {}

  // The published bytes not taken yet, as far as they are contiguous.
  std::span<const unsigned char> readable() const {
    const uint64_t tail = slot_.in_tail.load(std::memory_order_relaxed);
    const uint64_t head = slot_.in_head.load(std::memory_order_seq_cst);
    const uint64_t pos = tail % size_;
    return {data_ + pos, size_t(std::min(head - tail, size_ - pos))};
  }
  // Frees `n` bytes; true if the writer was waiting for room (the caller
  // rings its bell).
  bool consume(size_t n) {
    slot_.in_tail.fetch_add(n, std::memory_order_seq_cst);
    return slot_.in_state.fetch_and(~kInputWriterWaiting, std::memory_order_seq_cst) &
           kInputWriterWaiting;
  }
  // The writer finished and every byte was taken.
  bool at_eof() const {
    return (slot_.in_state.load(std::memory_order_seq_cst) & kInputEof) && readable().empty();
  }
  // The command takes no more: what is left, and what comes, is dropped.
  // True if the writer was waiting (ring its bell: it learns of the close).
  bool close() {
    slot_.in_tail.store(slot_.in_head.load(std::memory_order_acquire), std::memory_order_relaxed);
    return slot_.in_state.fetch_or(kInputClosed, std::memory_order_seq_cst) & kInputWriterWaiting;
  }

 private:
  JobSlot& slot_;
  const unsigned char* data_;
  uint64_t size_;
};

}  // namespace sp::shm
