#include "shm/spool.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/sys.h"
#include "shm/layout.h"

namespace sp::shm {

namespace {

constexpr uint64_t kBlock = 64 * 1024;

// Reads a spool file through one block-sized buffer, so that scanning many
// small chunks costs one pread per block, not one per chunk.
class BlockReader {
 public:
  BlockReader(int fd, uint64_t end) : fd_(fd), end_(end) {}

  // `len` bytes at `off` (within end); an error past the end or from the pread.
  Result<std::string_view> get(uint64_t off, uint64_t len) {
    if (off + len > end_) return Error{0, "spool chunk runs past the written end"};
    if (off < base_ || off + len > base_ + buf_.size()) {
      uint64_t want = std::min(std::max(len, kBlock), end_ - off);
      buf_.resize(want);
      uint64_t got = 0;
      while (got < want) {
        auto n = sys("read spool file",
                     [&] { return ::pread(fd_, buf_.data() + got, want - got, off_t(off + got)); });
        if (!n) return n.error();
        if (*n == 0) return Error{0, "spool file is shorter than recorded"};
        got += uint64_t(*n);
      }
      base_ = off;
    }
    return std::string_view(buf_.data() + (off - base_), len);
  }

 private:
  int fd_;
  uint64_t end_;
  uint64_t base_ = 0;
  std::string buf_;
};

}  // namespace

std::string spool_file_name(uint64_t seq) {
  return "job-" + std::to_string(seq);
}

Result<uint64_t> spool_append(int fd, uint64_t offset, uint8_t stream, std::string_view data) {
  ChunkHeader h{uint32_t(data.size()), stream, {}};
  iovec iov[2] = {{&h, sizeof h}, {const_cast<char*>(data.data()), data.size()}};
  const uint64_t total = sizeof h + data.size();
  uint64_t done = 0;
  while (done < total) {
    auto wrote =
        sys("write spool file", [&] { return ::pwritev(fd, iov, 2, off_t(offset + done)); });
    if (!wrote) return wrote.error();
    if (*wrote == 0) return Error{ENOSPC, "write spool file"};
    ssize_t n = *wrote;
    done += uint64_t(n);
    // A short write: move the iovecs past what was written and go on.
    for (iovec& v : iov) {
      size_t used = std::min<size_t>(v.iov_len, size_t(n));
      v.iov_base = static_cast<char*>(v.iov_base) + used;
      v.iov_len -= used;
      n -= ssize_t(used);
    }
  }
  return total;
}

Result<SpoolRead> read_spool(int fd, uint64_t spool_end, SpoolView view, uint64_t cursor,
                             uint64_t max_bytes, const SpoolPos& hint) {
  const int v = int(view);
  SpoolRead out;
  SpoolPos pos = hint.file_off <= spool_end && hint.at[v] <= cursor ? hint : SpoolPos{};
  out.resume = pos;
  uint64_t taken = 0;
  BlockReader in(fd, spool_end);
  while (pos.file_off < spool_end && taken < max_bytes) {
    auto head = in.get(pos.file_off, sizeof(ChunkHeader));
    if (!head) return head.error();
    ChunkHeader h;
    std::memcpy(&h, head->data(), sizeof h);
    if (h.stream != kStreamStdout && h.stream != kStreamStderr)
      return Error{0, "spool chunk has an unknown stream"};
    const int s = stream_index(h.stream);
    const uint64_t data_off = pos.file_off + sizeof h;
    if (view == SpoolView::kBoth || v == s) {
      uint64_t start = pos.at[v], stop = start + h.len;  // this chunk's bytes in the view
      if (cursor < stop) {
        uint64_t from = std::max(cursor, start);
        uint64_t n = std::min(stop - from, max_bytes - taken);
        auto data = in.get(data_off + (from - start), n);
        if (!data) return data.error();
        if (out.chunks.empty() || out.chunks.back().stream != h.stream)
          out.chunks.push_back({h.stream, {}});
        out.chunks.back().data.append(*data);
        taken += n;
        cursor = from + n;
        if (cursor < stop) break;  // stopped inside the chunk: resume at its start
      }
    }
    pos.file_off = data_off + h.len;
    pos.at[s] += h.len;
    pos.at[2] += h.len;
    if (pos.at[v] <= cursor) out.resume = pos;
  }
  out.next_cursor = std::max(cursor, out.resume.at[v]);
  out.at_end = pos.file_off >= spool_end && out.next_cursor >= pos.at[v];
  return out;
}

}  // namespace sp::shm
