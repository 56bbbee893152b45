// Workspace: the file operations of the workspace file API (file_read,
// file_write, file_list, file_stat, file_remove, file_mkdir), on paths
// beneath one directory, the files root. Every path is resolved with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) from the root's fd, so
// neither `..` nor a symlink (nor a rename racing with us) reaches outside
// it; entries below a listed or removed directory are opened one name at a
// time without following symlinks. Symlinks inside the root work as usual.
//
// Runs in the file helper (`shell-poold files ...`, files/helper.cpp), a
// job like any other: blocking disk I/O never runs in the frontend's loop.
// Thread-compatible.
#pragma once

#include <linux/openat2.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <variant>

#include "common/unique_fd.h"
#include "frontend/codec/rpc.h"

namespace sp::files {

// Why an operation failed. `kind` is what a client can act on (the frontend
// maps it to an RPC error, frontend/errors.cpp); `message` names the path.
struct FileError {
  std::string kind;  // "escape", "invalid", "not_found", "exists", "not_a_directory",
                     // "is_a_directory", "not_empty", "not_a_file", "denied",
                     // "no_space", "loop", "io"
  std::string message;
  int errno_value = 0;  // 0: not from a system call
};

template <typename T>
using FileResult = std::variant<T, FileError>;

inline constexpr uint64_t kMaxListDepth = 64;  // recursive list and remove: deeper is refused
inline constexpr uint64_t kResolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;

// openat2(dir, path) with `resolve`: `..` and symlinks may move beneath
// `dir`, never out (EXDEV). O_CLOEXEC is added. -1 and errno on failure.
int open_beneath(int dir, const std::string& path, uint64_t flags, mode_t mode = 0,
                 uint64_t resolve = kResolve);
// `what` (naming the path) failed with errno `e`, as a FileError.
FileError sys_error(const std::string& what, int e);
// Opens regular file `path` beneath `dir` with `flags` (O_RDONLY,
// O_WRONLY...), having looked at it through an O_PATH fd first: a
// directory, FIFO or device is never opened for I/O (opening one can have
// effects). `what` names the call for errors.
FileResult<UniqueFd> open_regular(int dir, const std::string& path, int flags,
                                  const std::string& what);
// "file", "dir", "symlink", "fifo", ... for a st_mode.
const char* type_name(mode_t m);  // recursive list and remove: deeper is refused

class Workspace {
 public:
  // Opens `root` (an absolute path to a directory).
  static FileResult<Workspace> open(const std::string& root);

  // Up to `max_bytes` of a regular file from `offset`, into `data`; the
  // result says {size, bytes, eof}.
  FileResult<rpc::Object> read(const std::string& path, uint64_t offset, uint64_t max_bytes,
                               std::string& data) const;

  struct WriteOptions {
    std::optional<uint64_t> offset;  // write in place there (the file is created if missing)
    bool append = false;             // write in place at its end
    std::optional<uint32_t> mode;    // permission bits; default: the replaced file's, or 0644
    bool mkdirs = false;             // create missing parent directories
  };
  // Writes what `next(buf)` gives (0: the end). Without offset or append the
  // file is replaced atomically: a temporary file beside it, renamed over it
  // (a symlink at `path` is replaced, not followed).
  using Source = ssize_t (*)(void* ctx, char* buf, size_t size);
  FileResult<rpc::Object> write(const std::string& path, const WriteOptions& o, Source next,
                                void* ctx) const;

  // The entries of a directory, sorted by name (depth first when
  // recursive, names relative to `path`), at most `max_entries`.
  FileResult<rpc::Object> list(const std::string& path, bool recursive, uint64_t max_entries) const;
  // The entry itself (a symlink is described, not followed).
  FileResult<rpc::Object> stat(const std::string& path) const;
  // A file, a symlink, an empty directory, or with `recursive` any tree.
  FileResult<rpc::Object> remove(const std::string& path, bool recursive) const;
  // A directory and its missing parents; an existing directory is fine.
  FileResult<rpc::Object> mkdir(const std::string& path, std::optional<uint32_t> mode) const;

  // A directory beneath the root, opened for reading and *at calls (made,
  // with its parents, if `create`).
  FileResult<UniqueFd> directory(const std::string& path, bool create) const;
  // A regular file beneath the root, opened for reading.
  FileResult<UniqueFd> regular_file(const std::string& path) const;

 private:
  explicit Workspace(UniqueFd root, std::string path) : root_(std::move(root)), path_(path) {}

  // `path` relative to the root (an absolute path inside the root is made
  // relative; any other absolute path is an escape).
  FileResult<std::string> relative(const std::string& path) const;
  // The directory that holds the entry `rel` names, and the entry's name.
  struct Parent {
    UniqueFd dir;
    std::string name;
  };
  FileResult<Parent> parent(const std::string& rel, bool mkdirs) const;
  FileResult<UniqueFd> make_dirs(const std::string& rel, uint32_t mode, bool& created) const;

  UniqueFd root_;
  std::string path_;
};

}  // namespace sp::files
