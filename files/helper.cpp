#include "files/helper.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>

#include "common/text.h"
#include "files/archive.h"
#include "files/workspace.h"
#include "frontend/codec/json_codec.h"

namespace sp::files {

namespace {

bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(size_t(n));
  }
  return true;
}

ssize_t read_stdin(void*, char* buf, size_t size) {
  for (;;) {
    ssize_t n = ::read(0, buf, size);
    if (n >= 0 || errno != EINTR) return n;
  }
}

int answer(const FileResult<rpc::Object>& r, std::string_view payload = {}, int fd = 1) {
  std::string line;
  if (const auto* e = std::get_if<FileError>(&r)) {
    // A message may name an entry that is not UTF-8: the line must stay JSON.
    std::string message, carry;
    append_utf8_sanitized(message, e->message, carry, true);
    rpc::Object err{{"error", e->kind}, {"message", std::move(message)}};
    if (const char* name = e->errno_value > 0 ? ::strerrorname_np(e->errno_value) : nullptr)
      err["errno"] = name;
    rpc::append_value(line, err);
  } else {
    rpc::append_value(line, std::get<rpc::Object>(r));
  }
  line += '\n';
  line.append(payload);
  if (!write_all(fd, line)) return 3;
  return std::holds_alternative<FileError>(r) ? 1 : 0;
}

}  // namespace

CLI::App* add_helper_command(CLI::App& app, HelperArgs& a) {
  CLI::App* c = app.add_subcommand("files", "")->group("");
  c->add_option("op", a.op)->required();
  c->add_option("--root", a.root)->required();
  c->add_option("--path", a.path)->required();
  c->add_option("--offset", a.offset);
  c->add_option("--max-bytes", a.max_bytes);
  c->add_option("--max-entries", a.max_entries);
  c->add_option("--mode", a.mode);
  c->add_flag("--append", a.append);
  c->add_flag("--mkdirs", a.mkdirs);
  c->add_flag("--recursive", a.recursive);
  c->add_option("--source", a.source);
  c->add_option("--max-input", a.max_input);
  c->add_flag("--gzip", a.gzip);
  return c;
}

int run_helper(const HelperArgs& a) {
  auto ws = Workspace::open(a.root);
  if (auto* e = std::get_if<FileError>(&ws)) return answer(*e);
  const Workspace& w = std::get<Workspace>(ws);
  std::optional<uint32_t> mode;
  if (a.mode >= 0) mode = uint32_t(a.mode & 0777);
  if (a.op == "read") {
    std::string data;
    auto r = w.read(a.path, a.offset < 0 ? 0 : uint64_t(a.offset), a.max_bytes, data);
    return answer(r, data);
  }
  if (a.op == "write") {
    Workspace::WriteOptions o;
    if (a.offset >= 0) o.offset = uint64_t(a.offset);
    o.append = a.append;
    o.mode = mode;
    o.mkdirs = a.mkdirs;
    return answer(w.write(a.path, o, read_stdin, nullptr));
  }
  if (a.op == "list") return answer(w.list(a.path, a.recursive, a.max_entries));
  if (a.op == "stat") return answer(w.stat(a.path));
  if (a.op == "remove") return answer(w.remove(a.path, a.recursive));
  if (a.op == "mkdir") return answer(w.mkdir(a.path, mode));
  if (a.op == "unpack")
    return answer(unpack(w, UnpackOptions{a.path, a.source, a.max_bytes, a.max_input}));
  if (a.op == "pack") return answer(pack(w, a.path, a.gzip, 1), {}, 2);
  answer(FileError{"invalid", "no file operation \"" + a.op + "\"", 0});
  return 2;
}

}  // namespace sp::files
