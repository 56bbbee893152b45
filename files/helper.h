// The file helper: `shell-poold files OP --root DIR --path P ...`, the
// process a file method of the frontend runs as a job (frontend/
// file_methods.h). It does one Workspace operation and writes to stdout one
// JSON line, the result or {"error", "message", "errno"}, then for "read"
// the bytes read. Exit status 0 on success, 1 on a FileError, 2 on bad
// arguments. The data of "write" and of "unpack" (without --source) comes
// on stdin. "pack" writes the archive to stdout and its JSON line to
// stderr.
#pragma once

#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace sp::files {

struct HelperArgs {
  std::string op;  // read, write, list, stat, remove, mkdir, unpack, pack
  std::string root, path;
  int64_t offset = -1;  // write: -1 replaces the file; read: from 0
  uint64_t max_bytes = 1u << 20;
  uint64_t max_entries = 10'000;
  bool append = false, mkdirs = false, recursive = false;
  int64_t mode = -1;               // -1: not given
  std::string source;              // unpack: an archive file beneath the root; "": stdin
  uint64_t max_input = 64u << 20;  // unpack: stdin bytes read at most
  bool gzip = false;               // pack
};

// Adds the (hidden) "files" subcommand to shell-poold's flags.
CLI::App* add_helper_command(CLI::App& app, HelperArgs& args);
int run_helper(const HelperArgs& args);

}  // namespace sp::files
