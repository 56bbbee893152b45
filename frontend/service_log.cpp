#include "frontend/service_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/sys.h"

namespace sp::frontend {

namespace {

struct RecordHeader {
  uint32_t len;
  uint8_t stream;
  uint8_t pad[3];
  uint64_t at[3];
};
static_assert(sizeof(RecordHeader) == 32);
constexpr uint64_t kMinRing = 16 * sizeof(RecordHeader);  // a quarter holds a header and data

std::string file_name(uint32_t i) {
  return "service-" + std::to_string(i) + ".log";
}

// Reads or writes `n` bytes at logical position `pos` of a ring of `cap`
// bytes, in two parts where it wraps.
Status ring_io(int fd, uint64_t cap, uint64_t pos, char* buf, size_t n, bool write) {
  while (n) {
    const uint64_t off = pos % cap;
    const size_t part = size_t(std::min<uint64_t>(n, cap - off));
    auto r = sys(write ? "write service log" : "read service log", [&] {
      return write ? ::pwrite(fd, buf, part, off_t(off)) : ::pread(fd, buf, part, off_t(off));
    });
    if (!r) return r.error();
    if (*r == 0) return Error{EIO, "service log: short read"};
    pos += uint64_t(*r);
    buf += *r;
    n -= size_t(*r);
  }
  return {};
}

bool in_view(uint8_t stream, shm::SpoolView view) {
  return view == shm::SpoolView::kBoth || stream == kStreamMarker ||
         shm::stream_index(stream) == int(view);
}

Result<RecordHeader> header_at(int fd, const shm::ServiceSlot& s, uint64_t pos) {
  RecordHeader h;
  if (Status st = ring_io(fd, s.log_bytes, pos, reinterpret_cast<char*>(&h), sizeof h, false); !st)
    return st.error();
  if (h.len > s.log_bytes || pos + sizeof h + h.len > s.log_head)
    return Error{EINVAL, "service log: damaged record"};
  return h;
}

}  // namespace

Result<UniqueFd> open_service_log(int spool_dir, uint32_t i, bool fresh) {
  const std::string name = file_name(i);
  auto fd = sys("open service log", [&] {
    return ::openat(spool_dir, name.c_str(),
                    O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (fresh ? O_TRUNC : 0), 0600);
  });
  if (!fd) return fd.error();
  return UniqueFd(*fd);
}

void remove_service_log(int spool_dir, uint32_t i) {
  ::unlinkat(spool_dir, file_name(i).c_str(), 0);
}

Status append_service_log(int fd, shm::ServiceSlot& s, uint8_t stream, std::string_view data) {
  if (s.log_bytes < kMinRing) return Error{EINVAL, "service log: no ring"};
  const uint64_t piece = s.log_bytes / 4 - sizeof(RecordHeader);
  while (!data.empty()) {
    const std::string_view part = data.substr(0, piece);
    const uint64_t size = sizeof(RecordHeader) + part.size();
    // Room first: the tail moves past the records the write will cover.
    uint64_t tail = s.log_tail;
    while (s.log_head + size - tail > s.log_bytes) {
      auto h = header_at(fd, s, tail);
      if (!h) {  // cannot walk on: drop everything kept
        tail = s.log_head;
        break;
      }
      tail += sizeof(RecordHeader) + h->len;
    }
    s.log_tail = tail;
    RecordHeader h{};
    h.len = uint32_t(part.size());
    h.stream = stream;
    std::memcpy(h.at, s.log_at, sizeof h.at);
    std::string rec(reinterpret_cast<const char*>(&h), sizeof h);
    rec.append(part);
    if (Status st = ring_io(fd, s.log_bytes, s.log_head, rec.data(), rec.size(), true); !st)
      return st;
    for (int v = 0; v < 3; ++v)
      if (in_view(stream, shm::SpoolView(v))) s.log_at[v] += part.size();
    s.log_head += size;
    data.remove_prefix(part.size());
  }
  return {};
}

Result<LogRead> read_service_log(int fd, const shm::ServiceSlot& s, shm::SpoolView view,
                                 std::optional<uint64_t> cursor, std::optional<uint64_t> tail_bytes,
                                 uint64_t max_bytes, const LogPos& hint) {
  const int v = int(view);
  LogRead out;
  if (s.log_bytes < kMinRing) return Error{EINVAL, "service log: no ring"};
  // The oldest boundary kept, and the view's bytes before it.
  LogPos start{s.log_tail, {}};
  if (s.log_tail == s.log_head) {
    std::memcpy(start.at, s.log_at, sizeof start.at);
  } else {
    auto h = header_at(fd, s, s.log_tail);
    if (!h) return h.error();
    std::memcpy(start.at, h->at, sizeof start.at);
  }
  const uint64_t end = s.log_at[v];
  uint64_t want = cursor ? *cursor : tail_bytes ? end - std::min(end, *tail_bytes) : start.at[v];
  want = std::min(want, end);
  if (want < start.at[v]) {
    if (cursor) out.lost_bytes = start.at[v] - want;
    want = start.at[v];
  }
  if (hint.pos >= start.pos && hint.pos <= s.log_head && hint.at[v] <= want) start = hint;
  out.next_cursor = want;
  out.resume = start;
  LogPos p = start;
  while (p.pos < s.log_head && out.data.size() < max_bytes) {
    auto h = header_at(fd, s, p.pos);
    if (!h) return h.error();
    const uint64_t data_pos = p.pos + sizeof(RecordHeader);
    if (in_view(h->stream, view) && h->at[v] > want) {
      // A gap in the counts (a frontend died between counting and writing a
      // record): what lies in it is lost.
      out.lost_bytes += h->at[v] - want;
      want = h->at[v];
    }
    if (in_view(h->stream, view) && h->at[v] + h->len > want) {
      const uint64_t skip = want - h->at[v];
      const size_t n = size_t(std::min<uint64_t>(h->len - skip, max_bytes - out.data.size()));
      const size_t had = out.data.size();
      out.data.resize(had + n);
      if (Status st = ring_io(fd, s.log_bytes, data_pos + skip, out.data.data() + had, n, false);
          !st)
        return st.error();
      want += n;
      out.next_cursor = want;
      if (skip + n < h->len) break;  // max_bytes reached inside this record
    }
    p.pos = data_pos + h->len;
    std::memcpy(p.at, h->at, sizeof p.at);
    for (int w = 0; w < 3; ++w)
      if (in_view(h->stream, shm::SpoolView(w))) p.at[w] += h->len;
    if (p.at[v] <= out.next_cursor) out.resume = p;
  }
  out.at_end = out.next_cursor >= end;
  return out;
}

}  // namespace sp::frontend
