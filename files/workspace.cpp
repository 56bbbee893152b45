#include "files/workspace.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include "common/sys.h"
#include "common/text.h"

namespace sp::files {

namespace {

const char* errno_kind(int e) {
  switch (e) {
    case ENOENT:
      return "not_found";
    case EXDEV:
      return "escape";
    case EEXIST:
      return "exists";
    case ENOTDIR:
      return "not_a_directory";
    case EISDIR:
      return "is_a_directory";
    case ENOTEMPTY:
      return "not_empty";
    case EACCES:
    case EPERM:
    case EROFS:
      return "denied";
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return "no_space";
    case ELOOP:
      return "loop";
    case ENAMETOOLONG:
    case EINVAL:
      return "invalid";
    default:
      return "io";
  }
}

// A name as JSON text: bytes that are not UTF-8 become U+FFFD.
std::string text(const std::string& name) {
  std::string out, carry;
  append_utf8_sanitized(out, name, carry, true);
  return out;
}

std::string quote(const std::string& path) {
  return "\"" + path + "\"";
}

}  // namespace

const char* type_name(mode_t m) {
  switch (m & S_IFMT) {
    case S_IFREG:
      return "file";
    case S_IFDIR:
      return "dir";
    case S_IFLNK:
      return "symlink";
    case S_IFIFO:
      return "fifo";
    case S_IFSOCK:
      return "socket";
    case S_IFCHR:
      return "char_device";
    case S_IFBLK:
      return "block_device";
    default:
      return "unknown";
  }
}

namespace {

// An entry's description: name, type, size, mode, mtime and, for a
// symlink, its target (`dir` and `name` read it).
rpc::Object describe(const std::string& shown, const struct stat& st, int dir,
                     const std::string& name) {
  rpc::Object e{{"name", text(shown)},
                {"type", type_name(st.st_mode)},
                {"size", uint64_t(st.st_size)},
                {"mode", uint64_t(st.st_mode & 07777)},
                {"mtime", int64_t(st.st_mtim.tv_sec)},
                {"mtime_ms", int64_t(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1'000'000}};
  if (S_ISLNK(st.st_mode)) {
    char target[4096];
    ssize_t n = ::readlinkat(dir, name.c_str(), target, sizeof target);
    e["target"] = n >= 0 ? text(std::string(target, size_t(n))) : std::string();
  }
  return e;
}

// The names in directory `fd` but . and .., sorted.
FileResult<std::vector<std::string>> names_in(int fd, const std::string& shown) {
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return sys_error("list " + quote(shown), errno);
  DIR* d = ::fdopendir(copy);
  if (d == nullptr) {
    int e = errno;
    ::close(copy);
    return sys_error("list " + quote(shown), e);
  }
  std::vector<std::string> names;
  errno = 0;
  while (dirent* ent = ::readdir(d)) {
    std::string_view n = ent->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  int e = errno;
  ::closedir(d);
  if (e != 0) return sys_error("list " + quote(shown), e);
  std::sort(names.begin(), names.end());
  return names;
}

// Opens `name` in `dir` as a directory, following no symlink.
int open_subdir(int dir, const std::string& name) {
  return open_beneath(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0,
                      RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS);
}

struct Lister {
  uint64_t max_entries;
  rpc::Array entries;
  bool truncated = false;

  std::optional<FileError> walk(int dir, const std::string& prefix, bool recursive,
                                uint64_t depth) {
    auto names = names_in(dir, prefix.empty() ? "." : prefix);
    if (auto* e = std::get_if<FileError>(&names)) return *e;
    for (const std::string& name : std::get<0>(names)) {
      if (entries.size() >= max_entries) {
        truncated = true;
        return std::nullopt;
      }
      struct stat st {};
      if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT) continue;  // gone meanwhile
        return sys_error("stat " + quote(prefix + name), errno);
      }
      const std::string shown = prefix + name;
      entries.emplace_back(describe(shown, st, dir, name));
      if (!recursive || !S_ISDIR(st.st_mode)) continue;
      if (depth + 1 >= kMaxListDepth)
        return FileError{"invalid",
                         "list " + quote(shown) + ": deeper than " + std::to_string(kMaxListDepth) +
                             " directories",
                         0};
      UniqueFd sub(open_subdir(dir, name));
      if (!sub) {
        if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) continue;  // changed meanwhile
        return sys_error("list " + quote(shown), errno);
      }
      if (auto e = walk(sub.get(), shown + "/", true, depth + 1)) return e;
      if (truncated) return std::nullopt;
    }
    return std::nullopt;
  }
};

// Removes everything in directory `dir`; counts the entries removed.
std::optional<FileError> empty_tree(int dir, const std::string& shown, uint64_t depth,
                                    uint64_t& removed) {
  if (depth >= kMaxListDepth)
    return FileError{"invalid",
                     "remove " + quote(shown) + ": deeper than " + std::to_string(kMaxListDepth) +
                         " directories",
                     0};
  auto names = names_in(dir, shown);
  if (auto* e = std::get_if<FileError>(&names)) return *e;
  for (const std::string& name : std::get<0>(names)) {
    const std::string path = shown + "/" + name;
    struct stat st {};
    if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
      if (errno == ENOENT) continue;
      return sys_error("remove " + quote(path), errno);
    }
    if (S_ISDIR(st.st_mode)) {
      UniqueFd sub(open_subdir(dir, name));
      if (!sub) return sys_error("remove " + quote(path), errno);
      if (auto e = empty_tree(sub.get(), path, depth + 1, removed)) return e;
    }
    if (::unlinkat(dir, name.c_str(), S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) < 0 &&
        errno != ENOENT)
      return sys_error("remove " + quote(path), errno);
    ++removed;
  }
  return std::nullopt;
}

// A name for the temporary file of an atomic replace of `name`: hidden,
// unique to this process and call, and within NAME_MAX.
std::string temp_name(const std::string& name) {
  static std::atomic<uint64_t> counter{0};
  std::string base = name.substr(0, 200);
  return "." + base + ".sp-tmp-" + std::to_string(::getpid()) + "-" +
         std::to_string(counter.fetch_add(1));
}

// Copies everything `next` gives into `fd` (at `offset`, unless it is
// nullopt: at the file position). Counts the bytes into `written`.
std::optional<int> copy_in(int fd, std::optional<uint64_t> offset, Workspace::Source next,
                           void* ctx, uint64_t& written) {
  std::vector<char> buf(256 * 1024);
  for (;;) {
    ssize_t n = next(ctx, buf.data(), buf.size());
    if (n < 0) return EIO;
    if (n == 0) return std::nullopt;
    for (ssize_t done = 0; done < n;) {
      ssize_t w = offset
                      ? ::pwrite(fd, buf.data() + done, size_t(n - done), off_t(*offset + written))
                      : ::write(fd, buf.data() + done, size_t(n - done));
      if (w < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      done += w;
      written += uint64_t(w);
    }
  }
}

}  // namespace

// `what` (naming the path) failed with errno `e`.
FileError sys_error(const std::string& what, int e) {
  if (e == EXDEV)
    return {"escape", what + ": the path leads outside the files root (by \"..\" or a symlink)", e};
  return {errno_kind(e), what + ": " + std::strerror(e), e};
}

// openat2 beneath `dir`: `..` and symlinks may move within it, never out.
// EAGAIN (a rename raced with the lookup) is retried.
int open_beneath(int dir, const std::string& path, uint64_t flags, mode_t mode, uint64_t resolve) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  how.mode = (flags & O_CREAT) ? mode : 0;
  how.resolve = resolve;
  for (int tries = 0;; ++tries) {
    long fd = ::syscall(SYS_openat2, dir, path.c_str(), &how, sizeof how);
    if (fd >= 0) return int(fd);
    if ((errno != EAGAIN && errno != EINTR) || tries > 16) return -1;
  }
}

FileResult<UniqueFd> open_regular(int dir, const std::string& path, int flags,
                                  const std::string& what) {
  UniqueFd look(open_beneath(dir, path, O_PATH));
  if (!look) return sys_error(what, errno);
  struct stat st {};
  if (::fstat(look.get(), &st) < 0) return sys_error(what, errno);
  if (S_ISDIR(st.st_mode)) return FileError{"is_a_directory", what + ": it is a directory", EISDIR};
  if (!S_ISREG(st.st_mode))
    return FileError{
        "not_a_file",
        what + ": it is a " + std::string(type_name(st.st_mode)) + ", not a regular file", 0};
  const std::string proc = "/proc/self/fd/" + std::to_string(look.get());
  UniqueFd fd(::open(proc.c_str(), flags | O_CLOEXEC | O_NOCTTY));
  if (!fd) return sys_error(what, errno);
  return fd;
}

FileResult<Workspace> Workspace::open(const std::string& root) {
  if (root.empty() || root[0] != '/')
    return FileError{"invalid", "the files root " + quote(root) + " is not an absolute path", 0};
  UniqueFd fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return sys_error("the files root " + quote(root), errno);
  std::string path = root;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return Workspace(std::move(fd), path);
}

FileResult<std::string> Workspace::relative(const std::string& path) const {
  if (path.empty()) return FileError{"invalid", "\"path\" is empty (\".\" is the files root)", 0};
  if (path.find('\0') != std::string::npos)
    return FileError{"invalid", "\"path\" holds a NUL byte", 0};
  if (path[0] != '/') return path;
  // An absolute path is fine when it names something in the root.
  if (path == path_ || path_ == "/") return path_ == "/" ? "." + path : std::string(".");
  if (path.compare(0, path_.size() + 1, path_ + "/") == 0) {
    std::string rest = path.substr(path_.size() + 1);
    return rest.empty() ? std::string(".") : rest;
  }
  return FileError{
      "escape",
      quote(path) + " is outside the files root " + quote(path_) + " (paths are relative to it)",
      0};
}

FileResult<Workspace::Parent> Workspace::parent(const std::string& rel, bool mkdirs) const {
  std::string p = rel;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  size_t slash = p.rfind('/');
  std::string dir = slash == std::string::npos ? "." : p.substr(0, slash + 1);
  std::string name = slash == std::string::npos ? p : p.substr(slash + 1);
  if (name.empty() || name == "." || name == "..")
    return FileError{"invalid",
                     quote(rel) + " does not name an entry (it ends in \"" + name + "\")", 0};
  if (mkdirs) {
    bool created = false;
    auto made = make_dirs(dir, 0755, created);
    if (auto* e = std::get_if<FileError>(&made)) return *e;
    return Parent{std::move(std::get<UniqueFd>(made)), name};
  }
  UniqueFd fd(open_beneath(root_.get(), dir, O_PATH | O_DIRECTORY));
  if (!fd) return sys_error(quote(rel) + ": its directory " + quote(dir), errno);
  return Parent{std::move(fd), name};
}

FileResult<UniqueFd> Workspace::make_dirs(const std::string& rel, uint32_t mode,
                                          bool& created) const {
  // One component at a time, each resolved from the root again, so ".."
  // and symlinks along the way are held to the root like any path.
  std::string done;
  size_t at = 0;
  uint64_t depth = 0;
  UniqueFd fd(open_beneath(root_.get(), ".", O_PATH | O_DIRECTORY));
  if (!fd) return sys_error("the files root", errno);
  while (at < rel.size()) {
    size_t end = rel.find('/', at);
    if (end == std::string::npos) end = rel.size();
    std::string part = rel.substr(at, end - at);
    at = end + 1;
    if (part.empty() || part == ".") continue;
    if (++depth > kMaxListDepth)
      return FileError{
          "invalid",
          quote(rel) + " is deeper than " + std::to_string(kMaxListDepth) + " directories", 0};
    std::string next = done.empty() ? part : done + "/" + part;
    UniqueFd sub(open_beneath(root_.get(), next, O_PATH | O_DIRECTORY));
    if (!sub && errno == ENOENT && part != "..") {
      // Parents on the way get 0755; `mode` is for the last one.
      const mode_t m = at >= rel.size() ? mode : 0755;
      if (::mkdirat(fd.get(), part.c_str(), m) < 0 && errno != EEXIST)
        return sys_error("mkdir " + quote(next), errno);
      created = true;
      sub.reset(open_beneath(root_.get(), next, O_PATH | O_DIRECTORY));
    }
    if (!sub) return sys_error(quote(next), errno);
    fd = std::move(sub);
    done = next;
  }
  return fd;
}

FileResult<UniqueFd> Workspace::directory(const std::string& path, bool create) const {
  auto rel = relative(path);
  if (auto* e = std::get_if<FileError>(&rel)) return *e;
  if (create) {
    bool created = false;
    auto made = make_dirs(std::get<0>(rel), 0755, created);
    if (auto* e = std::get_if<FileError>(&made)) return *e;
  }
  UniqueFd fd(open_beneath(root_.get(), std::get<0>(rel), O_RDONLY | O_DIRECTORY));
  if (!fd) return sys_error(quote(path), errno);
  return fd;
}

FileResult<UniqueFd> Workspace::regular_file(const std::string& path) const {
  auto rel = relative(path);
  if (auto* e = std::get_if<FileError>(&rel)) return *e;
  return open_regular(root_.get(), std::get<0>(rel), O_RDONLY, quote(path));
}

FileResult<rpc::Object> Workspace::read(const std::string& path, uint64_t offset,
                                        uint64_t max_bytes, std::string& data) const {
  auto rel = relative(path);
  if (auto* e = std::get_if<FileError>(&rel)) return *e;
  auto opened = open_regular(root_.get(), std::get<0>(rel), O_RDONLY, "read " + quote(path));
  if (auto* e = std::get_if<FileError>(&opened)) return *e;
  UniqueFd& fd = std::get<UniqueFd>(opened);
  struct stat st {};
  if (::fstat(fd.get(), &st) < 0) return sys_error("read " + quote(path), errno);
  const uint64_t size = uint64_t(st.st_size);
  uint64_t want = offset < size ? std::min(max_bytes, size - offset) : 0;
  data.resize(want);
  uint64_t got = 0;
  while (got < want) {
    ssize_t n = ::pread(fd.get(), data.data() + got, want - got, off_t(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error("read " + quote(path), errno);
    if (n == 0) break;  // it shrank meanwhile
    got += uint64_t(n);
  }
  data.resize(got);
  return rpc::Object{{"size", size}, {"bytes", got}, {"eof", offset + got >= size}};
}

FileResult<rpc::Object> Workspace::write(const std::string& path, const WriteOptions& o,
                                         Source next, void* ctx) const {
  auto rel = relative(path);
  if (auto* e = std::get_if<FileError>(&rel)) return *e;
  if (path.back() == '/')
    return FileError{"invalid", quote(path) + " ends in '/': it names a directory, not a file", 0};
  auto par = parent(std::get<0>(rel), o.mkdirs);
  if (auto* e = std::get_if<FileError>(&par)) return *e;
  Parent& p = std::get<Parent>(par);
  // The parent came from an O_PATH fd: re-open it as a directory to write in.
  UniqueFd dir(open_beneath(p.dir.get(), ".", O_RDONLY | O_DIRECTORY));
  if (!dir) return sys_error("write " + quote(path), errno);
  struct stat old {};
  const bool exists = ::fstatat(dir.get(), p.name.c_str(), &old, AT_SYMLINK_NOFOLLOW) == 0;
  if (exists && S_ISDIR(old.st_mode))
    return FileError{"is_a_directory", "write " + quote(path) + ": it is a directory", EISDIR};
  uint64_t written = 0;
  if (o.offset || o.append) {
    // In place; the file is resolved like any path (a symlink inside the
    // root is followed).
    // A missing file is created (new: it cannot be a device); an existing
    // one is looked at before it is opened for writing.
    const int flags = O_WRONLY | (o.append ? O_APPEND : 0);
    UniqueFd fd(open_beneath(root_.get(), std::get<0>(rel), uint64_t(flags | O_CREAT | O_EXCL),
                             o.mode.value_or(0644)));
    if (!fd && errno == EEXIST) {
      auto opened = open_regular(root_.get(), std::get<0>(rel), flags, "write " + quote(path));
      if (auto* e = std::get_if<FileError>(&opened)) return *e;
      fd = std::move(std::get<UniqueFd>(opened));
    }
    if (!fd) return sys_error("write " + quote(path), errno);
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0) return sys_error("write " + quote(path), errno);
    // Another name of the same file may be outside the root: in place, it
    // would change too. Replacing it whole makes a new file instead.
    if (st.st_nlink > 1)
      return FileError{"invalid",
                       "write " + quote(path) + " in place: it has " + std::to_string(st.st_nlink) +
                           " hard links, and the others would change too; write it whole "
                           "(without \"offset\" or \"append\") to replace it",
                       0};
    if (o.mode && ::fchmod(fd.get(), *o.mode) < 0) return sys_error("chmod " + quote(path), errno);
    if (auto e = copy_in(fd.get(), o.append ? std::nullopt : o.offset, next, ctx, written))
      return sys_error("write " + quote(path), *e);
    if (::fstat(fd.get(), &st) < 0) return sys_error("write " + quote(path), errno);
    return rpc::Object{{"path", path}, {"bytes_written", written}, {"size", uint64_t(st.st_size)}};
  }
  const std::string temp = temp_name(p.name);
  UniqueFd fd(::openat(dir.get(), temp.c_str(),
                       O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return sys_error("write " + quote(path), errno);
  auto fail = [&](const std::string& what, int e) {
    ::unlinkat(dir.get(), temp.c_str(), 0);
    return sys_error(what + " " + quote(path), e);
  };
  if (auto e = copy_in(fd.get(), std::nullopt, next, ctx, written)) return fail("write", *e);
  // Its mode: asked for, else the replaced file's, else 0644 less the umask.
  mode_t mode = o.mode ? mode_t(*o.mode) : 0;
  if (!o.mode) {
    if (exists && S_ISREG(old.st_mode)) {
      mode = old.st_mode & 07777;
    } else {
      mode_t mask = ::umask(0);
      ::umask(mask);
      mode = 0644 & ~mask;
    }
  }
  if (::fchmod(fd.get(), mode) < 0) return fail("chmod", errno);
  if (::renameat(dir.get(), temp.c_str(), dir.get(), p.name.c_str()) < 0)
    return fail("write", errno);
  return rpc::Object{{"path", path}, {"bytes_written", written}, {"size", written}};
}

FileResult<rpc::Object> Workspace::list(const std::string& path, bool recursive,
                                        uint64_t max_entries) const {
  auto rel = relative(path);
  if (auto* e = std::get_if<FileError>(&rel)) return *e;
  UniqueFd fd(open_beneath(root_.get(), std::get<0>(rel), O_RDONLY | O_DIRECTORY));
  if (!fd) return sys_error("list " + quote(path), errno);
  Lister l{max_entries, {}};
  if (auto e = l.walk(fd.get(), "", recursive, 0)) return *e;
  return rpc::Object{{"path", path}, {"entries", std::move(l.entries)}, {"truncated", l.truncated}};
}

FileResult<rpc::Object> Workspace::stat(const std::string& path) const {
  auto rel = relative(path);
  if (auto* e = std::get_if<FileError>(&rel)) return *e;
  std::string r = std::get<0>(rel);
  while (r.size() > 1 && r.back() == '/') r.pop_back();
  size_t slash = r.rfind('/');
  std::string name = slash == std::string::npos ? r : r.substr(slash + 1);
  struct stat st {};
  if (name == "." || name == "..") {  // a directory by its own name: it is what it leads to
    UniqueFd fd(open_beneath(root_.get(), r, O_PATH | O_DIRECTORY));
    if (!fd || ::fstat(fd.get(), &st) < 0) return sys_error("stat " + quote(path), errno);
    return describe(path, st, fd.get(), "");
  }
  auto par = parent(r, false);
  if (auto* e = std::get_if<FileError>(&par)) return *e;
  Parent& p = std::get<Parent>(par);
  if (::fstatat(p.dir.get(), p.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0)
    return sys_error("stat " + quote(path), errno);
  return describe(path, st, p.dir.get(), p.name);
}

FileResult<rpc::Object> Workspace::remove(const std::string& path, bool recursive) const {
  auto rel = relative(path);
  if (auto* e = std::get_if<FileError>(&rel)) return *e;
  auto par = parent(std::get<0>(rel), false);
  if (auto* e = std::get_if<FileError>(&par)) return *e;
  Parent& p = std::get<Parent>(par);
  UniqueFd dir(open_beneath(p.dir.get(), ".", O_RDONLY | O_DIRECTORY));
  if (!dir) return sys_error("remove " + quote(path), errno);
  struct stat st {};
  if (::fstatat(dir.get(), p.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0)
    return sys_error("remove " + quote(path), errno);
  uint64_t removed = 0;
  if (S_ISDIR(st.st_mode) && recursive) {
    UniqueFd sub(open_subdir(dir.get(), p.name));
    if (!sub) return sys_error("remove " + quote(path), errno);
    if (auto e = empty_tree(sub.get(), path, 1, removed)) return *e;
  }
  if (::unlinkat(dir.get(), p.name.c_str(), S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) < 0) {
    if (errno == ENOTEMPTY || errno == EEXIST)
      return FileError{"not_empty",
                       "remove " + quote(path) +
                           ": the directory is not empty (\"recursive\": true removes it all)",
                       ENOTEMPTY};
    return sys_error("remove " + quote(path), errno);
  }
  return rpc::Object{{"path", path}, {"removed", removed + 1}};
}

FileResult<rpc::Object> Workspace::mkdir(const std::string& path,
                                         std::optional<uint32_t> mode) const {
  auto rel = relative(path);
  if (auto* e = std::get_if<FileError>(&rel)) return *e;
  bool created = false;
  auto made = make_dirs(std::get<0>(rel), mode.value_or(0755), created);
  if (auto* e = std::get_if<FileError>(&made)) {
    if (e->kind == "not_a_directory")
      e->message = "mkdir " + quote(path) + ": it, or a directory on its way, is not a directory";
    return *e;
  }
  return rpc::Object{{"path", path}, {"created", created}};
}

}  // namespace sp::files
