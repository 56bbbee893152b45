#include "files/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <memory>
#include <set>
#include <variant>
#include <vector>

namespace sp::files {

namespace {

constexpr uint64_t kNoFollow = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

struct ReadDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
struct WriteDeleter {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryDeleter {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};
using Reader = std::unique_ptr<archive, ReadDeleter>;

// `kind`: "escape" for an entry that would lead out of the directory.
FileError refused(const std::string& entry, const std::string& why, const char* kind = "escape") {
  return {kind, "the archive was refused, nothing was written: entry \"" + entry + "\" " + why, 0};
}

FileError archive_error(archive* a, const std::string& what) {
  const char* msg = archive_error_string(a);
  return {"invalid", what + ": " + (msg ? msg : "not a tar archive"), archive_errno(a)};
}

// `path` split at '/', without empty and "." parts.
std::vector<std::string> split(const std::string& path) {
  std::vector<std::string> parts;
  size_t at = 0;
  while (at <= path.size()) {
    size_t end = path.find('/', at);
    if (end == std::string::npos) end = path.size();
    std::string part = path.substr(at, end - at);
    at = end + 1;
    if (!part.empty() && part != ".") parts.push_back(std::move(part));
  }
  return parts;
}

// An entry's name split; nullopt if it is absolute or has a ".." part.
std::optional<std::vector<std::string>> parts_of(const std::string& path) {
  if (path.empty() || path[0] == '/') return std::nullopt;
  std::vector<std::string> parts = split(path);
  if (std::find(parts.begin(), parts.end(), "..") != parts.end()) return std::nullopt;
  return parts;
}

std::string join(const std::vector<std::string>& parts, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += (i ? "/" : "") + parts[i];
  return s;
}

// Where symlink text `target` in directory `dir` leads, following the
// archive's own symlinks (`links`: path -> target) met on the way, as the
// kernel would; nullopt if it is absolute, climbs above the directory, or
// takes more than 40 links.
std::optional<std::vector<std::string>> resolve(std::vector<std::string> dir,
                                                const std::string& target,
                                                const std::map<std::string, std::string>& links,
                                                int hops = 0) {
  if (target.empty() || target[0] == '/' || hops > 40) return std::nullopt;
  for (const std::string& part : split(target)) {
    if (part == "..") {
      if (dir.empty()) return std::nullopt;
      dir.pop_back();
      continue;
    }
    dir.push_back(part);
    if (auto it = links.find(join(dir, dir.size())); it != links.end()) {
      auto to = resolve(std::vector<std::string>(dir.begin(), dir.end() - 1), it->second, links,
                        hops + 1);
      if (!to) return std::nullopt;
      dir = std::move(*to);
    }
  }
  return dir;
}

// The archive from stdin (read whole, up to `max`) or from file `fd`.
struct Source {
  std::string data;
  int fd = -1;

  std::optional<FileError> open(archive* a) {
    archive_read_support_filter_gzip(a);
    archive_read_support_filter_none(a);
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    int rc = fd >= 0 ? archive_read_open_fd(a, fd, 64 * 1024)
                     : archive_read_open_memory(a, data.data(), data.size());
    if (rc != ARCHIVE_OK) return archive_error(a, "cannot read the archive");
    return std::nullopt;
  }
  Reader reader() {
    if (fd >= 0) ::lseek(fd, 0, SEEK_SET);
    return Reader(archive_read_new());
  }
};

// The rules every entry is held to, in order, in both passes: pass 1
// checks the whole archive before anything is written; pass 2 checks each
// entry again before it writes it (an archive file may change between the
// two reads: then it stops there, never writing what it did not check).
struct Checker {
  explicit Checker(uint64_t max) : max_bytes(max) {}
  uint64_t max_bytes;
  uint64_t entries = 0, bytes = 0;
  std::set<std::string> files;               // regular files so far
  std::map<std::string, std::string> links;  // symlinks so far: path -> target

  // nullopt if `entry` may be written; `parts`: its name, split (empty:
  // the directory itself, nothing to write).
  std::optional<FileError> entry(archive_entry* entry, std::vector<std::string>& parts) {
    const char* raw = archive_entry_pathname(entry);
    const std::string name = raw ? raw : "";
    if (name.size() >= 4096)
      return refused(name.substr(0, 64) + "...", "is longer than 4095 bytes", "invalid");
    auto split_name = parts_of(name);
    if (!split_name) return refused(name, "has an absolute path or a \"..\" component");
    parts = std::move(*split_name);
    if (parts.empty()) return std::nullopt;  // "./": the directory itself
    if (parts.size() > kMaxListDepth)
      return refused(name, "is deeper than " + std::to_string(kMaxListDepth) + " directories",
                     "invalid");
    if (++entries > kMaxArchiveEntries)
      return refused(name, "is past " + std::to_string(kMaxArchiveEntries) + " entries", "invalid");
    std::string prefix;
    for (size_t i = 0; i + 1 < parts.size() && !links.empty(); ++i) {
      prefix += (i ? "/" : "") + parts[i];
      if (links.count(prefix))
        return refused(name, "is below the archive's symlink \"" + prefix +
                                 "\" (it would be written through it)");
    }
    const std::string path = join(parts, parts.size());
    if (const char* hard = archive_entry_hardlink(entry)) {
      auto target = parts_of(hard);
      if (!target || !files.count(join(*target, target->size())))
        return refused(name, std::string("is a hard link to \"") + hard +
                                 "\", which is not an earlier file of the archive");
      return std::nullopt;
    }
    const mode_t type = archive_entry_filetype(entry);
    if (type == AE_IFLNK) {
      const char* target = archive_entry_symlink(entry);
      if (!target ||
          !resolve(std::vector<std::string>(parts.begin(), parts.end() - 1), target, links))
        return refused(name, std::string("is a symlink to \"") + (target ? target : "") +
                                 "\", outside the directory");
      links[path] = target;
      files.erase(path);
    } else if (type == AE_IFREG) {
      files.insert(path);
      links.erase(path);
      bytes += uint64_t(std::max<la_int64_t>(0, archive_entry_size(entry)));
      if (bytes > max_bytes)
        return refused(name, "brings the content past " + std::to_string(max_bytes) + " bytes",
                       "invalid");
    } else if (type == AE_IFDIR) {
      links.erase(path);
    } else {
      return refused(
          name,
          std::string("is a ") + type_name(type) + ": devices, FIFOs and sockets are not extracted",
          "invalid");
    }
    return std::nullopt;
  }
};

// The next header, or nullopt at the end; an unreadable one is an error.
std::variant<archive_entry*, std::nullopt_t, FileError> next_entry(archive* a) {
  archive_entry* entry = nullptr;
  int rc = archive_read_next_header(a, &entry);
  if (rc == ARCHIVE_EOF) return std::nullopt;
  if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) return archive_error(a, "cannot read the archive");
  return entry;
}

// Pass 1: every entry checked; nothing written.
std::optional<FileError> check(Source& src, Checker& checker) {
  Reader a = src.reader();
  if (auto e = src.open(a.get())) return e;
  std::vector<std::string> parts;
  for (;;) {
    auto next = next_entry(a.get());
    if (auto* e = std::get_if<FileError>(&next)) return *e;
    if (std::holds_alternative<std::nullopt_t>(next)) return std::nullopt;
    if (auto e = checker.entry(std::get<archive_entry*>(next), parts)) return e;
  }
}

// The directory `parts[0..n)` beneath `top`, made if missing; no symlink is
// followed on the way.
FileResult<UniqueFd> make_parents(int top, const std::vector<std::string>& parts, size_t n,
                                  const std::string& name) {
  UniqueFd dir(open_beneath(top, ".", O_PATH | O_DIRECTORY));
  for (size_t i = 0; i < n; ++i) {
    UniqueFd sub(
        open_beneath(dir.get(), parts[i], O_PATH | O_DIRECTORY | O_NOFOLLOW, 0, kNoFollow));
    if (!sub && errno == ENOENT) {
      if (::mkdirat(dir.get(), parts[i].c_str(), 0755) < 0 && errno != EEXIST)
        return sys_error("extract \"" + name + "\"", errno);
      sub.reset(open_beneath(dir.get(), parts[i], O_PATH | O_DIRECTORY | O_NOFOLLOW, 0, kNoFollow));
    }
    if (!sub) {
      const int e = errno;
      struct stat st {};
      if (::fstatat(dir.get(), parts[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          S_ISLNK(st.st_mode))
        return FileError{"not_a_directory",
                         "extract \"" + name + "\": \"" + join(parts, i + 1) +
                             "\" is a symlink, and archive entries are never written through one",
                         ENOTDIR};
      return sys_error("extract \"" + name + "\"", e);
    }
    dir = std::move(sub);
  }
  return dir;
}

// Clears the way for a new entry `leaf` in `dir`: a file or link there goes;
// a directory stays (and is an error unless the entry is one too).
std::optional<FileError> clear(int dir, const std::string& leaf, bool want_dir,
                               const std::string& name) {
  struct stat st {};
  if (::fstatat(dir, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) return std::nullopt;
  if (S_ISDIR(st.st_mode)) {
    if (want_dir) return std::nullopt;
    return FileError{"is_a_directory", "extract \"" + name + "\": a directory is in its place",
                     EISDIR};
  }
  if (::unlinkat(dir, leaf.c_str(), 0) < 0) return sys_error("extract \"" + name + "\"", errno);
  return std::nullopt;
}

// Pass 2: the entries written beneath `top`, each checked again first.
std::optional<FileError> extract(Source& src, int top, uint64_t max_bytes) {
  Reader a = src.reader();
  if (auto e = src.open(a.get())) return e;
  Checker checker(max_bytes);
  std::vector<char> buf(256 * 1024);
  std::vector<std::string> parts;
  for (;;) {
    auto next = next_entry(a.get());
    if (auto* e = std::get_if<FileError>(&next)) return *e;
    if (std::holds_alternative<std::nullopt_t>(next)) return std::nullopt;
    archive_entry* entry = std::get<archive_entry*>(next);
    if (auto e = checker.entry(entry, parts)) return e;
    if (parts.empty()) continue;
    const std::string name = archive_entry_pathname(entry);
    const std::string& leaf = parts.back();
    auto parent = make_parents(top, parts, parts.size() - 1, name);
    if (auto* e = std::get_if<FileError>(&parent)) return *e;
    const int dir = std::get<UniqueFd>(parent).get();
    const mode_t perm = archive_entry_perm(entry) & 0777;
    const mode_t type = archive_entry_filetype(entry);
    const bool is_dir = type == AE_IFDIR && !archive_entry_hardlink(entry);
    if (auto e = clear(dir, leaf, is_dir, name)) return e;
    if (const char* hard = archive_entry_hardlink(entry)) {
      auto target = *parts_of(hard);  // checked above
      UniqueFd from(
          open_beneath(top, join(target, target.size()), O_PATH | O_NOFOLLOW, 0, kNoFollow));
      if (!from) return sys_error("extract \"" + name + "\" (a hard link)", errno);
      const std::string proc = "/proc/self/fd/" + std::to_string(from.get());
      if (::linkat(AT_FDCWD, proc.c_str(), dir, leaf.c_str(), AT_SYMLINK_FOLLOW) < 0)
        return sys_error("extract \"" + name + "\" (a hard link)", errno);
    } else if (is_dir) {
      if (::mkdirat(dir, leaf.c_str(), perm | 0700) < 0 && errno != EEXIST)
        return sys_error("extract \"" + name + "\"", errno);
    } else if (type == AE_IFLNK) {
      if (::symlinkat(archive_entry_symlink(entry), dir, leaf.c_str()) < 0)
        return sys_error("extract \"" + name + "\"", errno);
    } else {
      UniqueFd out(
          ::openat(dir, leaf.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, perm));
      if (!out) return sys_error("extract \"" + name + "\"", errno);
      for (;;) {
        la_ssize_t n = archive_read_data(a.get(), buf.data(), buf.size());
        if (n < 0) return archive_error(a.get(), "extract \"" + name + "\"");
        if (n == 0) break;
        for (la_ssize_t done = 0; done < n;) {
          ssize_t w = ::write(out.get(), buf.data() + done, size_t(n - done));
          if (w < 0 && errno == EINTR) continue;
          if (w < 0) return sys_error("extract \"" + name + "\"", errno);
          done += w;
        }
      }
      ::fchmod(out.get(), perm);  // past the umask, as tar does for its owner
      const timespec times[2] = {
          {0, UTIME_OMIT},
          {time_t(archive_entry_mtime(entry)), long(archive_entry_mtime_nsec(entry))}};
      ::futimens(out.get(), times);
    }
  }
}

// Writes up to `size` bytes of `fd` into the archive (the size its header
// gave: a file that grows meanwhile is cut there, one that shrank is
// padded by libarchive).
std::optional<FileError> copy_data(archive* a, int fd, uint64_t size, const std::string& name) {
  std::vector<char> buf(256 * 1024);
  for (uint64_t done = 0; done < size;) {
    ssize_t n = ::read(fd, buf.data(), size_t(std::min<uint64_t>(buf.size(), size - done)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error("pack \"" + name + "\"", errno);
    if (n == 0) return std::nullopt;
    done += uint64_t(n);
    if (archive_write_data(a, buf.data(), size_t(n)) < 0)
      return archive_error(a, "pack \"" + name + "\"");
  }
  return std::nullopt;
}

struct Packer {
  archive* a;
  uint64_t entries = 0, bytes = 0;

  std::optional<FileError> add(int dir, const std::string& prefix, uint64_t depth) {
    if (depth >= kMaxListDepth)
      return FileError{
          "invalid",
          "pack \"" + prefix + "\": deeper than " + std::to_string(kMaxListDepth) + " directories",
          0};
    int copy = ::fcntl(dir, F_DUPFD_CLOEXEC, 0);
    DIR* d = copy >= 0 ? ::fdopendir(copy) : nullptr;
    if (d == nullptr) {
      if (copy >= 0) ::close(copy);
      return sys_error("pack \"" + prefix + "\"", errno);
    }
    std::vector<std::string> names;
    while (dirent* ent = ::readdir(d)) {
      std::string_view n = ent->d_name;
      if (n != "." && n != "..") names.emplace_back(n);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) {
      const std::string path = prefix + name;
      struct stat st {};
      if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) continue;  // gone
      if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode)) continue;
      if (++entries > kMaxArchiveEntries)
        return FileError{"invalid",
                         "pack: more than " + std::to_string(kMaxArchiveEntries) + " entries", 0};
      std::unique_ptr<archive_entry, EntryDeleter> e(archive_entry_new());
      archive_entry_copy_pathname(e.get(), path.c_str());
      archive_entry_copy_stat(e.get(), &st);
      archive_entry_set_uname(e.get(), "");
      archive_entry_set_gname(e.get(), "");
      UniqueFd file;
      if (S_ISLNK(st.st_mode)) {
        char target[4096];
        ssize_t n = ::readlinkat(dir, name.c_str(), target, sizeof target - 1);
        if (n < 0) return sys_error("pack \"" + path + "\"", errno);
        target[n] = '\0';
        archive_entry_copy_symlink(e.get(), target);
      } else if (S_ISREG(st.st_mode)) {
        // Looked at before it is opened (something else may have taken its
        // name since the fstatat: a FIFO or device is not opened).
        auto opened = open_regular(dir, name, O_RDONLY, "pack \"" + path + "\"");
        if (auto* err = std::get_if<FileError>(&opened)) return *err;
        file = std::move(std::get<UniqueFd>(opened));
        bytes += uint64_t(st.st_size);
      }
      if (archive_write_header(a, e.get()) < ARCHIVE_WARN)
        return archive_error(a, "pack \"" + path + "\"");
      if (file)
        if (auto err = copy_data(a, file.get(), uint64_t(st.st_size), path)) return err;
      if (S_ISDIR(st.st_mode)) {
        UniqueFd sub(open_beneath(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, kNoFollow));
        if (!sub) return sys_error("pack \"" + path + "\"", errno);
        if (auto err = add(sub.get(), path + "/", depth + 1)) return err;
      }
    }
    return std::nullopt;
  }
};

}  // namespace

FileResult<rpc::Object> unpack(const Workspace& ws, const UnpackOptions& o) {
  Source src;
  UniqueFd file;
  if (!o.source.empty()) {
    auto f = ws.regular_file(o.source);
    if (auto* e = std::get_if<FileError>(&f)) return *e;
    file = std::move(std::get<UniqueFd>(f));
    // Blocking reads from here on (it was opened non-blocking against FIFOs).
    ::fcntl(file.get(), F_SETFL, ::fcntl(file.get(), F_GETFL) & ~O_NONBLOCK);
    src.fd = file.get();
  } else {
    std::vector<char> buf(256 * 1024);
    for (;;) {
      ssize_t n = ::read(0, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return sys_error("read the archive", errno);
      if (n == 0) break;
      if (src.data.size() + size_t(n) > o.max_input)
        return FileError{"invalid",
                         "the archive is larger than " + std::to_string(o.max_input) + " bytes", 0};
      src.data.append(buf.data(), size_t(n));
    }
  }
  Checker checker(o.max_bytes);
  if (auto e = check(src, checker)) return *e;
  auto dir = ws.directory(o.dir, true);
  if (auto* e = std::get_if<FileError>(&dir)) return *e;
  if (auto e = extract(src, std::get<UniqueFd>(dir).get(), o.max_bytes)) return *e;
  return rpc::Object{{"path", o.dir}, {"entries", checker.entries}, {"bytes", checker.bytes}};
}

FileResult<rpc::Object> pack(const Workspace& ws, const std::string& dir, bool gzip, int out_fd) {
  auto top = ws.directory(dir, false);
  if (auto* e = std::get_if<FileError>(&top)) return *e;
  std::unique_ptr<archive, WriteDeleter> a(archive_write_new());
  archive_write_set_format_pax_restricted(a.get());
  if (gzip) archive_write_add_filter_gzip(a.get());
  archive_write_set_bytes_in_last_block(a.get(), 1);  // no padding to 10 KiB
  if (archive_write_open_fd(a.get(), out_fd) != ARCHIVE_OK)
    return archive_error(a.get(), "cannot write the archive");
  Packer p{a.get()};
  if (auto e = p.add(std::get<UniqueFd>(top).get(), "", 0)) return *e;
  if (archive_write_close(a.get()) != ARCHIVE_OK)
    return archive_error(a.get(), "cannot write the archive");
  return rpc::Object{{"path", dir}, {"entries", p.entries}, {"bytes", p.bytes}};
}

}  // namespace sp::files
