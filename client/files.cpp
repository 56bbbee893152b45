#include "client/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>

#include "common/text.h"

namespace sp::cli {

namespace {

// Bytes per file_write: the request stays well inside the daemon's default
// request line (1 MiB).
constexpr size_t kWriteChunk = 512 * 1024;
constexpr uint64_t kReadChunk = 4u << 20;

bool remote(const std::string& path) {
  return !path.empty() && path[0] == ':';
}

std::string base_name(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The bytes `fd` gives next, up to `max` (fewer only at its end).
std::string read_some(int fd, size_t max, const std::string& name) {
  std::string buf(max, '\0');
  size_t got = 0;
  while (got < max) {
    ssize_t n = ::read(fd, buf.data() + got, max - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die(kUsage, "cannot read " + name + ": " + std::strerror(errno));
    if (n == 0) break;
    got += size_t(n);
  }
  buf.resize(got);
  return buf;
}

json::object write_params(const std::string& path, const std::string& bytes) {
  return {{"path", path}, {"data", bytes}};
}

// The remote destination for source `from`: `to` itself, or inside it when
// it is a directory.
std::string remote_target(Client& client, std::string to, const std::string& from) {
  if (to.empty() || to.back() == '/') return to + base_name(from);
  // A directory, or a symlink to one ("to/." is what it leads to).
  for (const std::string& path : {to, to + "/."})
    if (auto r = client.try_call("file_stat", {{"path", path}}); r && r->at("type") == "dir")
      return to + "/" + base_name(from);
  return to;
}

int upload(Client& client, const std::string& from, const std::string& to) {
  const bool stdin_in = from == "-";
  UniqueFd own;
  int fd = 0;
  struct stat st {};
  if (!stdin_in) {
    own.reset(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
    if (!own) die(kUsage, "cannot open " + from + ": " + std::strerror(errno));
    fd = own.get();
    if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
      die(kUsage, from + " is a directory: cp copies one file");
  }
  const std::string path = remote_target(client, to, stdin_in ? "stdin" : from);
  // The first part replaces the file atomically (a file that fits in one
  // part is never seen half written); the rest follows at its offsets.
  std::string part = read_some(fd, kWriteChunk, from);
  json::object p = write_params(path, part);
  if (!stdin_in) p["mode"] = st.st_mode & 0777;
  client.call("file_write", std::move(p));
  uint64_t offset = part.size();
  while (part.size() == kWriteChunk) {
    part = read_some(fd, kWriteChunk, from);
    if (part.empty()) break;
    json::object next = write_params(path, part);
    next["offset"] = offset;
    client.call("file_write", std::move(next));
    offset += part.size();
  }
  return 0;
}

int download(Client& client, const std::string& from, std::string to) {
  const bool stdout_out = to == "-";
  if (to.empty()) die(kUsage, "cp needs a destination");
  struct stat st {};
  if (!stdout_out && (to.back() == '/' || (::stat(to.c_str(), &st) == 0 && S_ISDIR(st.st_mode))))
    to += (to.back() == '/' ? "" : "/") + base_name(from);
  // The first part before anything is created here: it may not be there.
  json::object r =
      client.call("file_read", {{"path", from}, {"offset", 0}, {"max_bytes", kReadChunk}});
  // Into a new temporary file beside it (mkstemp: never one that is there,
  // nor through a symlink someone planted), renamed at the end: an
  // interrupted copy leaves the old file.
  std::string temp = to + ".shell-pool-XXXXXX";
  UniqueFd out(stdout_out ? ::dup(1) : ::mkostemp(temp.data(), O_CLOEXEC));
  if (!out)
    die(kUsage, "cannot write " + (stdout_out ? "stdout" : temp) + ": " + std::strerror(errno));
  uint64_t offset = 0;
  for (;;) {
    if (offset > 0) {
      std::string error;
      auto next = client.try_call(
          "file_read", {{"path", from}, {"offset", offset}, {"max_bytes", kReadChunk}}, &error);
      if (!next) {
        if (!stdout_out) ::unlink(temp.c_str());
        die(kCannotRun,
            "reading :" + from + " failed at byte " + std::to_string(offset) + ": " + error);
      }
      r = std::move(*next);
    }
    write_all(out.get(), bytes_of(r.at("data")));
    offset += uint64_t(r.at("bytes").to_number<int64_t>());
    if (r.at("eof").as_bool()) break;
  }
  if (!stdout_out) {
    // The remote file's permission bits less our umask (mkstemp made it
    // 0600); of a symlink, what it leads to.
    mode_t mode = 0666;
    for (const std::string& path : {from, from + "/."})
      if (auto s = client.try_call("file_stat", {{"path", path}}); s && s->at("type") == "file") {
        mode = mode_t(s->at("mode").to_number<int64_t>()) & 0777;
        break;
      }
    const mode_t mask = ::umask(0);
    ::umask(mask);
    ::fchmod(out.get(), mode & ~mask);
    if (::rename(temp.c_str(), to.c_str()) < 0)
      die(kUsage, "cannot write " + to + ": " + std::strerror(errno));
  }
  return 0;
}

std::string mode_text(const json::object& e) {
  const std::string type(e.at("type").as_string());
  const auto mode = e.at("mode").to_number<int64_t>();
  std::string s = type == "dir" ? "d" : type == "symlink" ? "l" : type == "file" ? "-" : "?";
  const char* rwx = "rwxrwxrwx";
  for (int i = 0; i < 9; ++i) s += (mode & (0400 >> i)) ? rwx[i] : '-';
  return s;
}

}  // namespace

int copy_file(Client& client, const std::string& from, const std::string& to) {
  if (remote(from) == remote(to))
    die(kUsage, "cp copies between here and the daemon: one of the paths is :REMOTE");
  if (remote(to)) return upload(client, from, to.substr(1));
  return download(client, from.substr(1), to);
}

int list_files(Client& client, const std::string& path, bool recursive, bool as_json) {
  json::object r = client.call("file_list", {{"path", path}, {"recursive", recursive}});
  if (as_json) {
    std::cout << json::serialize(r.at("entries")) << "\n";
    return 0;
  }
  for (const json::value& v : r.at("entries").as_array()) {
    const json::object& e = v.as_object();
    std::time_t t = std::time_t(e.at("mtime").to_number<int64_t>());
    char when[32];
    const std::tm* local = std::localtime(&t);
    if (local == nullptr || std::strftime(when, sizeof when, "%Y-%m-%d %H:%M", local) == 0)
      std::snprintf(when, sizeof when, "%lld", static_cast<long long>(t));
    std::printf("%s %12lld %s %s", mode_text(e).c_str(),
                static_cast<long long>(e.at("size").to_number<int64_t>()), when,
                std::string(e.at("name").as_string()).c_str());
    if (const json::value* target = e.if_contains("target"))
      std::printf(" -> %s", std::string(target->as_string()).c_str());
    std::printf("\n");
  }
  if (r.at("truncated").as_bool())
    std::fprintf(stderr, "shell-pool: more entries than the daemon lists at once\n");
  return 0;
}

}  // namespace sp::cli
