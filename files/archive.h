// Archives beneath the files root (libarchive, confined to this module):
// unpack a tar (optionally gzip-compressed) into a directory, and pack a
// directory into one. Run by the file helper (files/helper.h) as a job.
//
// Unpacking reads the whole archive once to check it before it writes
// anything: an entry with an absolute path or a ".." component, a symlink
// whose target is absolute or climbs out of the directory, a hard link to
// anything but an earlier regular file of the archive, an entry below one
// of the archive's own symlinks (a write through it), a device, FIFO or
// socket, more than kMaxArchiveEntries entries or more than `max_bytes` of
// content: the archive is refused whole, naming the entry. Then it writes,
// every path resolved beneath the directory without following symlinks.
// Modes keep their permission bits only (no setuid, setgid, sticky);
// owners are not restored.
#pragma once

#include <cstdint>
#include <string>

#include "files/workspace.h"

namespace sp::files {

inline constexpr uint64_t kMaxArchiveEntries = 100'000;

struct UnpackOptions {
  std::string dir;         // the directory to unpack into (created if missing)
  std::string source;      // a file beneath the root holding the archive; "": stdin
  uint64_t max_bytes = 0;  // content of all entries together
  uint64_t max_input = 0;  // stdin: bytes read at most
};
FileResult<rpc::Object> unpack(const Workspace& ws, const UnpackOptions& o);

// Packs directory `dir` (its entries, names relative to it) into a tar,
// gzip-compressed when `gzip`, written to `out_fd`. Symlinks are stored as
// symlinks; FIFOs, sockets and devices are left out. The result counts the
// entries and the content bytes.
FileResult<rpc::Object> pack(const Workspace& ws, const std::string& dir, bool gzip, int out_fd);

}  // namespace sp::files
