// Spool files: where a detached job's output lives, so that it outlives the
// frontend and can be read again from any byte offset. One append-only file
// per job, "job-<seq>" in the daemon's spool directory, written only by the
// worker running the job and read by the frontend.
//
// Format: chunks as in the shm output ring (an 8-byte ChunkHeader, then
// `len` data bytes), without padding. The writer publishes how many file
// bytes hold whole chunks in JobRecord::spool_end only after writing them,
// so a reader never sees a chunk a dead writer left half-written.
//
// A cursor is a byte offset into one view of the output: stdout alone, stderr
// alone, or both interleaved in the order the worker read them. Free
// functions; the caller owns the fds. Thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace sp::shm {

// "job-<seq>": the file name of job `seq`'s spool.
std::string spool_file_name(uint64_t seq);

// Writes one chunk (header + data) at `offset`. Returns the bytes written
// (8 + data.size()); an error (ENOSPC for a short write) leaves the bytes
// from `offset` on undefined, to be overwritten by the next append.
Result<uint64_t> spool_append(int fd, uint64_t offset, uint8_t stream, std::string_view data);

enum class SpoolView : uint8_t { kStdout = 0, kStderr = 1, kBoth = 2 };

// A chunk boundary in a spool file and how many bytes of each view lie
// before it. A read can start at any such position whose count for its view
// is at or before the cursor: the caller keeps the last `resume` per job so
// that reading on from where it stopped does not rescan the file.
struct SpoolPos {
  uint64_t file_off = 0;
  uint64_t at[3] = {};  // indexed by SpoolView
};

struct SpoolChunk {
  uint8_t stream = 0;  // kStreamStdout or kStreamStderr
  std::string data;
};

struct SpoolRead {
  std::vector<SpoolChunk> chunks;  // consecutive data of one stream merged into one chunk
  uint64_t next_cursor = 0;        // the view's offset after the data returned
  SpoolPos resume;                 // a chunk boundary at or before next_cursor
  bool at_end = false;             // everything of the view up to spool_end was returned
};

// Reads up to `max_bytes` of `view` from `cursor`, within the first
// `spool_end` bytes of the file. An error if the file does not hold chunks
// there (it was replaced or damaged).
Result<SpoolRead> read_spool(int fd, uint64_t spool_end, SpoolView view, uint64_t cursor,
                             uint64_t max_bytes, const SpoolPos& hint);

}  // namespace sp::shm
