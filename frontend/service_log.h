// A service's log: one ring file per service slot ("service-<slot>.log" in
// the spool directory) holding its generations' output and a marker line
// per start and end, at most ServiceSlot::log_bytes; the oldest records are
// overwritten first. Where the ring stands is in the slot (log_head,
// log_tail, log_at), so a restarted frontend appends and reads on.
//
// Records: a 32-byte header (data length, stream, and how many bytes of
// each view lie before it), then the data; a record never exceeds a quarter
// of the ring. Positions are logical byte offsets (file offset = position
// mod log_bytes). A cursor is a byte offset into one view (stdout, stderr
// or both, as job_output's); markers are in every view.
//
// Crash contract: the tail moves before a write may overwrite what it
// leaves, the head after the write. A frontend killed between a write and
// moving the head loses that record; one killed after copying output but
// before acknowledging it to the output ring writes it again (once).
// Free functions over the slot and a file; the caller owns the fd.
// Thread-compatible.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "common/unique_fd.h"
#include "shm/layout.h"
#include "shm/spool.h"

namespace sp::frontend {

inline constexpr uint8_t kStreamMarker = 3;  // a line of the daemon's own, in every view

// Opens service slot `i`'s log file beneath `spool_dir` (created 0600);
// `fresh`: emptied (a new service in the slot).
Result<UniqueFd> open_service_log(int spool_dir, uint32_t i, bool fresh);
// Removes it (the service was removed).
void remove_service_log(int spool_dir, uint32_t i);

// Appends `data` of `stream` (shm::kStreamStdout, kStreamStderr or
// kStreamMarker), dropping the oldest records to make room.
Status append_service_log(int fd, shm::ServiceSlot& s, uint8_t stream, std::string_view data);

// Where a read may resume without scanning from the tail: a record
// boundary and the view counts before it.
struct LogPos {
  uint64_t pos = 0;
  uint64_t at[3] = {};
};
struct LogRead {
  std::string data;
  uint64_t next_cursor = 0;
  uint64_t lost_bytes = 0;  // of the view, between the cursor and the oldest byte kept
  bool at_end = false;      // nothing of the view after next_cursor (yet)
  LogPos resume;            // a boundary at or before next_cursor
};
// Up to `max_bytes` of `view` from `cursor`; without one, from `tail_bytes`
// before the end, else from the oldest byte kept. `hint`: a boundary from
// an earlier read (ignored when the ring moved past it).
Result<LogRead> read_service_log(int fd, const shm::ServiceSlot& s, shm::SpoolView view,
                                 std::optional<uint64_t> cursor, std::optional<uint64_t> tail_bytes,
                                 uint64_t max_bytes, const LogPos& hint);

}  // namespace sp::frontend
