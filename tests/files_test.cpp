// The workspace file API through the real shell-poold: file_read,
// file_write, file_list, file_stat, file_remove and file_mkdir beneath
// --files-root. Exact bytes both ways, atomic replace, offsets and append,
// chunked reads, listings, and every way out of the root refused: "..",
// absolute paths, symlinks (read through, written through, as a parent),
// with nothing outside touched. Archives both ways, and hostile ones
// (traversal, absolute names, symlinks out, writes through a symlink, hard
// links out, devices) refused whole. The CLI's cp and ls.
#include <archive.h>
#include <archive_entry.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "tests/daemon_harness.h"

using namespace sp::test;
using Catch::Contains;

namespace {

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// A daemon whose files root is <dir>/root, with `outside` beside it.
struct Workspace {
  TempDir dir;
  std::string root = dir.path() + "/root";
  std::string outside = dir.path() + "/outside";
  Workspace() {
    REQUIRE(::mkdir(root.c_str(), 0755) == 0);
    REQUIRE(::mkdir(outside.c_str(), 0755) == 0);
    write_file(outside + "/secret.txt", "outside\n");
  }
};

std::string entry_names(const json::object& list) {
  std::string names;
  for (const auto& e : list.at("entries").as_array())
    names += std::string(e.as_object().at("name").as_string()) + " ";
  return names;
}

}  // namespace

TEST_CASE("files are written and read back, exactly, by offset and atomically", "[daemon][files]") {
  Workspace w;
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--files-root", w.root}});
  Client c(d.socket());

  // Text, then exact bytes (NULs, invalid UTF-8) as base64.
  json::object r = result_of(c.call("file_write", {{"path", "notes.txt"}, {"data", "hello\n"}}));
  CHECK(num(r, "bytes_written") == 6);
  CHECK(read_file(w.root + "/notes.txt") == "hello\n");
  r = result_of(c.call("file_read", {{"path", "notes.txt"}}));
  CHECK(str(r, "data") == "hello\n");
  CHECK(num(r, "size") == 6);
  CHECK(r.at("eof").as_bool());
  CHECK(str(r, "encoding") == "utf8");
  struct stat st {};
  REQUIRE(::stat((w.root + "/notes.txt").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == (0644 & ~0022));  // the daemon's umask is 022 here

  const std::string binary = random_bytes(300'000, 7);
  r = result_of(c.call("file_write", {{"path", "bin/blob"},
                                      {"data", base64(binary)},
                                      {"encoding", "base64"},
                                      {"mkdirs", true},
                                      {"mode", "0600"}}));
  CHECK(num(r, "size") == 300'000);
  CHECK(read_file(w.root + "/bin/blob") == binary);
  REQUIRE(::stat((w.root + "/bin/blob").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  // Read back in chunks by offset.
  std::string back;
  for (uint64_t offset = 0;;) {
    r = result_of(c.call(
        "file_read",
        {{"path", "bin/blob"}, {"offset", offset}, {"max_bytes", 65536}, {"encoding", "base64"}}));
    CHECK(num(r, "offset") == int64_t(offset));
    back += base64_decode(str(r, "data"));
    offset += uint64_t(num(r, "bytes"));
    if (r.at("eof").as_bool()) break;
    REQUIRE(offset < binary.size());
  }
  CHECK(back == binary);

  // Replacing keeps the old file's mode and leaves no temporary file.
  r = result_of(c.call("file_write", {{"path", "bin/blob"}, {"data", "new"}}));
  CHECK(read_file(w.root + "/bin/blob") == "new");
  REQUIRE(::stat((w.root + "/bin/blob").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  r = result_of(c.call("file_list", {{"path", "bin"}}));
  CHECK(entry_names(r) == "blob ");

  // In place: at an offset, and appended.
  result_of(c.call("file_write", {{"path", "notes.txt"}, {"data", "J"}, {"offset", 0}}));
  result_of(c.call("file_write", {{"path", "notes.txt"}, {"data", "more\n"}, {"append", true}}));
  CHECK(read_file(w.root + "/notes.txt") == "Jello\nmore\n");
  CHECK(num(result_of(c.call("file_write", {{"path", "notes.txt"}, {"data", ""}})), "size") == 0);
  CHECK(read_file(w.root + "/notes.txt").empty());

  // A UTF-8 character cut by max_bytes waits for the next read; bytes that
  // are not UTF-8 ask for base64.
  write_file(w.root + "/utf8.txt", "a\xc3\xa9z");  // "aéz"
  r = result_of(c.call("file_read", {{"path", "utf8.txt"}, {"max_bytes", 2}}));
  CHECK(str(r, "data") == "a");
  CHECK(num(r, "bytes") == 1);
  CHECK_FALSE(r.at("eof").as_bool());
  r = result_of(c.call("file_read", {{"path", "utf8.txt"}, {"offset", 1}}));
  CHECK(str(r, "data") == "\xc3\xa9z");
  CHECK(r.at("eof").as_bool());
  write_file(w.root + "/latin1.txt", "caf\xe9\n");
  json::object e = error_of(c.call("file_read", {{"path", "latin1.txt"}}));
  CHECK(num(e, "code") == -32602);
  CHECK_THAT(str(e, "message"), Contains("base64"));
  // Past the end: nothing, at its end.
  r = result_of(c.call("file_read", {{"path", "utf8.txt"}, {"offset", 100}}));
  CHECK(str(r, "data").empty());
  CHECK(r.at("eof").as_bool());
  stop_cleanly(d);
}

TEST_CASE("directories are listed, described, made and removed", "[daemon][files]") {
  Workspace w;
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--files-root", w.root}});
  Client c(d.socket());
  json::object r = result_of(c.call("file_mkdir", {{"path", "src/lib"}}));
  CHECK(r.at("created").as_bool());
  CHECK_FALSE(result_of(c.call("file_mkdir", {{"path", "src/lib"}})).at("created").as_bool());
  write_file(w.root + "/src/main.c", "int main;\n");
  write_file(w.root + "/src/lib/a.c", "a");
  REQUIRE(::symlink("main.c", (w.root + "/src/link").c_str()) == 0);

  r = result_of(c.call("file_list", {{"path", "src"}}));
  CHECK(entry_names(r) == "lib link main.c ");
  CHECK_FALSE(r.at("truncated").as_bool());
  for (const auto& v : r.at("entries").as_array()) {
    const json::object& ent = v.as_object();
    if (str(ent, "name") == "main.c") {
      CHECK(str(ent, "type") == "file");
      CHECK(num(ent, "size") == 10);
      CHECK(num(ent, "mode") == 0644);
      CHECK(num(ent, "mtime") > 1'600'000'000);
    } else if (str(ent, "name") == "link") {
      CHECK(str(ent, "type") == "symlink");
      CHECK(str(ent, "target") == "main.c");
    } else {
      CHECK(str(ent, "type") == "dir");
    }
  }
  r = result_of(c.call("file_list", {{"path", "."}, {"recursive", true}}));
  CHECK(entry_names(r) == "src src/lib src/lib/a.c src/link src/main.c ");
  r = result_of(c.call("file_list", {{"path", "."}, {"recursive", true}, {"max_entries", 2}}));
  CHECK(entry_names(r) == "src src/lib ");
  CHECK(r.at("truncated").as_bool());
  // The root by its absolute path.
  r = result_of(c.call("file_list", {{"path", w.root}}));
  CHECK(entry_names(r) == "src ");

  r = result_of(c.call("file_stat", {{"path", "src/link"}}));
  CHECK(str(r, "type") == "symlink");
  CHECK(str(r, "target") == "main.c");
  CHECK(str(result_of(c.call("file_stat", {{"path", "."}})), "type") == "dir");
  json::object e = error_of(c.call("file_stat", {{"path", "nope"}}));
  CHECK(num(e, "code") == -32001);
  CHECK(str(e.at("data").as_object(), "error") == "not_found");

  // Reading a directory, removing a full one, writing over a directory.
  e = error_of(c.call("file_read", {{"path", "src"}}));
  CHECK(num(e, "code") == -32008);
  CHECK(str(e.at("data").as_object(), "error") == "is_a_directory");
  e = error_of(c.call("file_remove", {{"path", "src"}}));
  CHECK(num(e, "code") == -32008);
  CHECK(str(e.at("data").as_object(), "error") == "not_empty");
  CHECK_THAT(str(e, "message"), Contains("recursive"));
  e = error_of(c.call("file_write", {{"path", "src"}, {"data", "x"}}));
  CHECK(str(e.at("data").as_object(), "error") == "is_a_directory");
  // A FIFO or a device is not opened (no hang, no effect of an open).
  REQUIRE(::mkfifo((w.root + "/fifo").c_str(), 0600) == 0);
  e = error_of(c.call("file_read", {{"path", "fifo"}}));
  CHECK(str(e.at("data").as_object(), "error") == "not_a_file");
  e = error_of(c.call("file_write", {{"path", "fifo"}, {"data", "x"}, {"append", true}}));
  CHECK(str(e.at("data").as_object(), "error") == "not_a_file");
  if (::mknod((w.root + "/null").c_str(), S_IFCHR | 0600, ::makedev(1, 3)) == 0) {
    e = error_of(c.call("file_read", {{"path", "null"}}));
    CHECK(str(e.at("data").as_object(), "error") == "not_a_file");
    ::unlink((w.root + "/null").c_str());
  }
  // A character longer than max_bytes.
  write_file(w.root + "/emoji.txt", "\xf0\x9f\x98\x80");
  e = error_of(c.call("file_read", {{"path", "emoji.txt"}, {"max_bytes", 2}}));
  CHECK(num(e, "code") == -32602);
  CHECK_THAT(str(e, "message"), Contains("longer than \"max_bytes\""));

  // The link goes, not what it points to; then the whole tree.
  CHECK(num(result_of(c.call("file_remove", {{"path", "src/link"}})), "removed") == 1);
  CHECK(file_exists(w.root + "/src/main.c"));
  r = result_of(c.call("file_remove", {{"path", "src"}, {"recursive", true}}));
  CHECK(num(r, "removed") == 4);
  CHECK_FALSE(file_exists(w.root + "/src"));
  e = error_of(c.call("file_remove", {{"path", "."}, {"recursive", true}}));
  CHECK(num(e, "code") == -32602);
  CHECK(file_exists(w.root));
  stop_cleanly(d);
}

TEST_CASE("no path leads out of the files root", "[daemon][files]") {
  Workspace w;
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--files-root", w.root}});
  Client c(d.socket());
  REQUIRE(::mkdir((w.root + "/sub").c_str(), 0755) == 0);
  REQUIRE(::symlink("../outside", (w.root + "/out-dir").c_str()) == 0);
  REQUIRE(::symlink((w.outside + "/secret.txt").c_str(), (w.root + "/out-abs").c_str()) == 0);
  REQUIRE(::symlink("../../outside/secret.txt", (w.root + "/sub/out-rel").c_str()) == 0);
  REQUIRE(::symlink("..", (w.root + "/sub/up").c_str()) == 0);  // stays inside: fine

  auto refused = [&](const char* method, json::object params) {
    INFO(method << " " << json::serialize(params));
    json::object e = error_of(c.call(method, params));
    CHECK(num(e, "code") == -32602);
    CHECK_THAT(str(e, "message"), Contains("files root"));
    CHECK(str(e.at("data").as_object(), "error") == "escape");
  };
  for (const char* path :
       {"../outside/secret.txt", "sub/../../outside/secret.txt", "out-dir/secret.txt", "out-abs",
        "sub/out-rel", "sub/up/../outside/secret.txt"}) {
    refused("file_read", {{"path", path}});
    refused("file_stat", {{"path", std::string(path) + "/x"}});
  }
  refused("file_read", {{"path", w.outside + "/secret.txt"}});
  refused("file_read", {{"path", "/etc/passwd"}});
  refused("file_list", {{"path", "out-dir"}});
  refused("file_list", {{"path", ".."}});
  // Writes through a symlinked directory, to a symlinked file in place, and
  // by a path that climbs out; mkdir and remove the same.
  refused("file_write", {{"path", "out-dir/new.txt"}, {"data", "x"}});
  refused("file_write", {{"path", "out-dir/new.txt"}, {"data", "x"}, {"mkdirs", true}});
  refused("file_write", {{"path", "out-abs"}, {"data", "x"}, {"append", true}});
  refused("file_write", {{"path", "../new.txt"}, {"data", "x"}});
  refused("file_mkdir", {{"path", "out-dir/d"}});
  refused("file_mkdir", {{"path", "sub/../../d"}});
  refused("file_remove", {{"path", "out-dir/secret.txt"}});
  refused("file_remove", {{"path", "../outside"}, {"recursive", true}});
  CHECK(read_file(w.outside + "/secret.txt") == "outside\n");
  CHECK_FALSE(file_exists(w.outside + "/new.txt"));
  CHECK_FALSE(file_exists(w.outside + "/d"));
  CHECK_FALSE(file_exists(w.dir.path() + "/new.txt"));
  CHECK_FALSE(file_exists(w.dir.path() + "/d"));

  // A hard link to a file outside is not written in place (the outside
  // name would change); replaced whole, it is a new file.
  if (::link((w.outside + "/secret.txt").c_str(), (w.root + "/hard").c_str()) == 0) {
    json::object h =
        error_of(c.call("file_write", {{"path", "hard"}, {"data", "x"}, {"append", true}}));
    CHECK(num(h, "code") == -32602);
    CHECK_THAT(str(h, "message"), Contains("hard links"));
    result_of(c.call("file_write", {{"path", "hard"}, {"data", "new"}}));
    CHECK(read_file(w.root + "/hard") == "new");
    CHECK(read_file(w.outside + "/secret.txt") == "outside\n");
  }
  // Inside, symlinks work; an atomic write replaces a link that leads out
  // (the link itself, never its target), and removing it removes the link.
  write_file(w.root + "/in.txt", "inside");
  CHECK(str(result_of(c.call("file_read", {{"path", "sub/up/in.txt"}})), "data") == "inside");
  // In place, a link to a file elsewhere in the root is written through.
  REQUIRE(::symlink("../in.txt", (w.root + "/sub/in-link").c_str()) == 0);
  result_of(c.call("file_write", {{"path", "sub/in-link"}, {"data", "!"}, {"append", true}}));
  CHECK(read_file(w.root + "/in.txt") == "inside!");
  result_of(c.call("file_write", {{"path", "out-abs"}, {"data", "replaced"}}));
  CHECK(read_file(w.root + "/out-abs") == "replaced");
  CHECK(read_file(w.outside + "/secret.txt") == "outside\n");
  result_of(c.call("file_remove", {{"path", "out-dir"}}));
  CHECK(file_exists(w.outside + "/secret.txt"));
  stop_cleanly(d);
}

TEST_CASE("file params are checked and bounded; a daemon without the root says so",
          "[daemon][files]") {
  Workspace w;
  START_DAEMON(
      d, DaemonOptions{.flags = {"--workers", "1", "--files-root", w.root, "--max-line", "65536"}});
  Client c(d.socket());
  auto bad = [&](const char* method, json::object params, const char* says) {
    INFO(method << " " << json::serialize(params));
    json::object e = error_of(c.call(method, params));
    CHECK(num(e, "code") == -32602);
    CHECK_THAT(str(e, "message"), Contains(says));
  };
  bad("file_read", {}, "\"path\"");
  bad("file_read", {{"path", ""}}, "\"path\"");
  bad("file_read", {{"path", "a"}, {"max_bytes", 0}}, "max_bytes");
  bad("file_read", {{"path", "a"}, {"max_bytes", (16 << 20) + 1}}, "max_bytes");
  bad("file_read", {{"path", "a"}, {"encoding", "latin1"}}, "encoding");
  bad("file_write", {{"path", "a"}}, "\"data\"");
  bad("file_write", {{"path", "a"}, {"data", "!"}, {"encoding", "base64"}}, "data");
  bad("file_write", {{"path", "a"}, {"data", "x"}, {"offset", 1}, {"append", true}}, "append");
  bad("file_write", {{"path", "a"}, {"data", "x"}, {"mode", "0999"}}, "mode");
  bad("file_write", {{"path", "a"}, {"data", "x"}, {"mode", 4096}}, "mode");
  bad("file_write", {{"path", "a"}, {"data", "x"}, {"mode", "4755"}}, "setuid");
  bad("file_write", {{"path", "a/"}, {"data", "x"}}, "names a directory");
  bad("file_list", {{"path", "."}, {"max_entries", 100'001}}, "max_entries");
  bad("file_read", {{"path", std::string(5000, 'a')}}, "4095");
  // A write larger than a request line: the line limit answers (with a
  // null id: the line was not read), and the connection serves on.
  REQUIRE(c.send_line(
      Client::request(1000, "file_write", {{"path", "big"}, {"data", std::string(70'000, 'x')}})));
  auto answer = c.read_json();
  REQUIRE(answer);
  CHECK(answer->at("error").at("code").to_number<int64_t>() == -32002);
  CHECK_FALSE(file_exists(w.root + "/big"));
  // Larger files go by append.
  for (int i = 0; i < 3; ++i)
    result_of(c.call("file_write",
                     {{"path", "big"}, {"data", std::string(40'000, 'x')}, {"append", true}}));
  CHECK(num(result_of(c.call("file_stat", {{"path", "big"}})), "size") == 120'000);
  stop_cleanly(d);

  // A files root that is not there: the daemon does not start, and says why.
  TestDaemon bad_root(
      DaemonOptions{.flags = {"--files-root", w.dir.path() + "/missing"}, .wait_ready = false});
  CHECK(bad_root.wait_exit(20) == 78);
  CHECK_THAT(bad_root.log(), Contains("--files-root"));
}

TEST_CASE("shell-pool cp and ls copy files both ways and list them", "[daemon][files][cli]") {
  Workspace w;
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--files-root", w.root}});
  const std::string s = d.socket();
  const std::string local = w.dir.path() + "/local";
  REQUIRE(::mkdir(local.c_str(), 0755) == 0);
  // 3 MB: several parts each way.
  const std::string big = random_bytes(3'000'000, 11);
  write_file(local + "/big.bin", big);
  REQUIRE(::chmod((local + "/big.bin").c_str(), 0640) == 0);

  CliRun r = run_cli({"--socket", s, "cp", local + "/big.bin", ":big.bin"}, d.dir(), 60);
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(read_file(w.root + "/big.bin") == big);
  struct stat st {};
  REQUIRE(::stat((w.root + "/big.bin").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0640);
  // Into a directory, by its name.
  REQUIRE(::mkdir((w.root + "/dir").c_str(), 0755) == 0);
  CHECK(run_cli({"--socket", s, "cp", local + "/big.bin", ":dir"}, d.dir(), 60).exit_code == 0);
  CHECK(read_file(w.root + "/dir/big.bin") == big);

  r = run_cli({"--socket", s, "cp", ":big.bin", local + "/back.bin"}, d.dir(), 60);
  CHECK(r.exit_code == 0);
  CHECK(read_file(local + "/back.bin") == big);
  REQUIRE(::stat((local + "/back.bin").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0640);  // the remote file's (less our umask, 022 here)
  auto temporaries = [&] {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator(local))
      n += e.path().filename().string().find(".shell-pool-") != std::string::npos;
    return n;
  };
  CHECK(temporaries() == 0);
  // stdin and stdout.
  CHECK(run_cli({"--socket", s, "cp", "-", ":hi.txt"}, d.dir(), 30, "hi\n").exit_code == 0);
  r = run_cli({"--socket", s, "cp", ":hi.txt", "-"}, d.dir());
  CHECK(r.out == "hi\n");

  // A missing file, or one outside the root: an error, and nothing made here.
  r = run_cli({"--socket", s, "cp", ":nope", local + "/nope"}, d.dir());
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.err, Contains("nope"));
  CHECK(temporaries() == 0);
  r = run_cli({"--socket", s, "cp", ":../outside/secret.txt", "-"}, d.dir());
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("outside the files root"));
  CHECK(r.out.empty());
  r = run_cli({"--socket", s, "cp", local + "/big.bin", local + "/x"}, d.dir());
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains(":REMOTE"));

  r = run_cli({"--socket", s, "ls"}, d.dir());
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("-rw-r-----      3000000 "));
  CHECK_THAT(r.out, Contains(" big.bin\n"));
  CHECK_THAT(r.out, Contains(" dir\n"));
  r = run_cli({"--socket", s, "ls", "-R", ":dir", "--json"}, d.dir());
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("\"name\":\"big.bin\""));
  stop_cleanly(d);
}

namespace {

// A tar (gzip-compressed if `gzip`) of hand-made entries, hostile ones too.
struct TarEntry {
  std::string name;
  char type = 'f';  // f file, d dir, l symlink, h hard link, c char device
  std::string data_or_target = {};
};
std::string make_tar(const std::vector<TarEntry>& entries, bool gzip = false) {
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  if (gzip) archive_write_add_filter_gzip(a);
  std::vector<char> buf(1 << 20);
  size_t used = 0;
  REQUIRE(archive_write_open_memory(a, buf.data(), buf.size(), &used) == ARCHIVE_OK);
  for (const TarEntry& t : entries) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, t.name.c_str());
    archive_entry_set_perm(e, t.type == 'd' ? 0755 : 0644);
    archive_entry_set_mtime(e, 1'700'000'000, 0);
    switch (t.type) {
      case 'f':
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_size(e, la_int64_t(t.data_or_target.size()));
        break;
      case 'd':
        archive_entry_set_filetype(e, AE_IFDIR);
        break;
      case 'l':
        archive_entry_set_filetype(e, AE_IFLNK);
        archive_entry_set_symlink(e, t.data_or_target.c_str());
        break;
      case 'h':
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_hardlink(e, t.data_or_target.c_str());
        break;
      case 'c':
        archive_entry_set_filetype(e, AE_IFCHR);
        archive_entry_set_rdev(e, ::makedev(1, 3));
        break;
    }
    REQUIRE(archive_write_header(a, e) == ARCHIVE_OK);
    if (t.type == 'f') archive_write_data(a, t.data_or_target.data(), t.data_or_target.size());
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  return std::string(buf.data(), used);
}

// Every file beneath `dir` (relative names) and its content, or "-> target".
std::map<std::string, std::string> tree_of(const std::string& dir) {
  std::map<std::string, std::string> tree;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    const std::string rel = std::filesystem::relative(e.path(), dir).string();
    if (e.is_symlink())
      tree[rel] = "-> " + std::filesystem::read_symlink(e.path()).string();
    else if (e.is_regular_file())
      tree[rel] = read_file(e.path().string());
    else
      tree[rel] = "dir";
  }
  return tree;
}

}  // namespace

TEST_CASE("archives are extracted and created, and hostile ones are refused whole",
          "[daemon][files][archive]") {
  Workspace w;
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--files-root", w.root}});
  Client c(d.socket());
  const std::string big = random_bytes(200'000, 5);
  const std::string tgz = make_tar({{"src", 'd'},
                                    {"src/main.c", 'f', "int main;\n"},
                                    {"src/big.bin", 'f', big},
                                    {"src/link", 'l', "main.c"},
                                    {"src/hard", 'h', "src/main.c"},
                                    {"./top.txt", 'f', "top"}},
                                   true);
  json::object r = result_of(
      c.call("archive_extract", {{"path", "proj"}, {"data", base64(tgz)}, {"encoding", "base64"}}));
  CHECK(num(r, "entries") == 6);
  CHECK(read_file(w.root + "/proj/src/main.c") == "int main;\n");
  CHECK(read_file(w.root + "/proj/src/big.bin") == big);
  CHECK(read_file(w.root + "/proj/top.txt") == "top");
  struct stat a {
  }, b{};
  REQUIRE(::lstat((w.root + "/proj/src/link").c_str(), &a) == 0);
  CHECK(S_ISLNK(a.st_mode));
  REQUIRE(::stat((w.root + "/proj/src/main.c").c_str(), &a) == 0);
  REQUIRE(::stat((w.root + "/proj/src/hard").c_str(), &b) == 0);
  CHECK(a.st_ino == b.st_ino);
  CHECK(a.st_mtime == 1'700'000'000);
  // From a file beneath the root (uploaded before: larger than a request line may be).
  write_file(w.root + "/upload.tar.gz", tgz);
  result_of(c.call("archive_extract", {{"path", "again"}, {"source", "upload.tar.gz"}}));
  CHECK(tree_of(w.root + "/again") == tree_of(w.root + "/proj"));

  // Created back in parts by cursor, it holds the same tree.
  std::string packed;
  std::string id;
  for (int calls = 0;; ++calls) {
    REQUIRE(calls < 100);
    json::object params{{"max_bytes", 16384}};
    if (id.empty()) {
      params["path"] = "proj";
    } else {
      params["archive_id"] = id;
      params["cursor"] = packed.size();
    }
    r = result_of(c.call("archive_create", params));
    id = str(r, "archive_id");
    packed += base64_decode(str(r, "data"));
    CHECK(num(r, "next_cursor") == int64_t(packed.size()));
    if (r.at("eof").as_bool()) break;
  }
  write_file(w.root + "/packed.tar.gz", packed);
  result_of(c.call("archive_extract", {{"path", "unpacked"}, {"source", "packed.tar.gz"}}));
  CHECK(tree_of(w.root + "/unpacked") == tree_of(w.root + "/proj"));
  // Kept as a detached job until forgotten.
  CHECK(str(result_of(c.call("job_status", {{"job_id", id}})), "state") == "exited");
  result_of(c.call("job_forget", {{"job_id", id}}));
  json::object e = error_of(c.call("archive_create", {{"path", "nope"}}));
  CHECK(num(e, "code") == -32001);
  e = error_of(c.call("archive_create", {{"path", "../outside"}}));
  CHECK(num(e, "code") == -32602);
  CHECK_THAT(str(e, "message"), Contains("files root"));

  // Hostile archives: refused whole, nothing written in or outside.
  auto refused = [&](const std::vector<TarEntry>& entries, const char* says) {
    INFO(says);
    json::object err = error_of(
        c.call("archive_extract",
               {{"path", "hostile"}, {"data", base64(make_tar(entries))}, {"encoding", "base64"}}));
    CHECK(num(err, "code") == -32602);
    CHECK_THAT(str(err, "message"), Contains(says));
    CHECK_FALSE(file_exists(w.root + "/hostile"));
  };
  refused({{"ok.txt", 'f', "x"}, {"../../outside/pwn.txt", 'f', "x"}}, "\"..\"");
  refused({{"a/../../pwn.txt", 'f', "x"}}, "\"..\"");
  refused({{w.outside + "/abs.txt", 'f', "x"}}, "absolute");
  refused({{"l", 'l', "../../outside"}}, "outside the directory");
  refused({{"l", 'l', "/etc"}}, "outside the directory");
  refused({{"d", 'd'}, {"d/l", 'l', "../.."}}, "outside the directory");
  refused({{"l", 'l', "sub"}, {"l/pwn.txt", 'f', "x"}}, "written through it");
  refused({{"h", 'h', "../outside/secret.txt"}}, "hard link");
  refused({{"h", 'h', "/etc/passwd"}}, "hard link");
  refused({{"null", 'c'}}, "devices");
  // Links that each stay inside, chained, lead out: refused too.
  refused({{"d", 'd'}, {"d/up", 'l', ".."}, {"e", 'l', "d/up/.."}}, "outside the directory");
  refused({{"a", 'l', "b"}, {"b", 'l', "a"}, {"c", 'l', "a/x"}}, "outside the directory");
  std::string deep;
  for (int i = 0; i < 65; ++i) deep += "d/";
  refused({{deep + "f", 'f', "x"}}, "deeper than 64");
  // A damaged archive is an error, not a crash.
  e = error_of(c.call(
      "archive_extract",
      {{"path", "cut"}, {"data", base64(tgz.substr(0, tgz.size() / 2))}, {"encoding", "base64"}}));
  CHECK(num(e, "code") == -32602);
  CHECK_FALSE(file_exists(w.root + "/cut/src/big.bin"));
  // A symlink planted in the tree before is not written through either.
  REQUIRE(::symlink(w.outside.c_str(), (w.root + "/proj/planted").c_str()) == 0);
  e = error_of(
      c.call("archive_extract", {{"path", "proj"},
                                 {"data", base64(make_tar({{"planted/pwn.txt", 'f', "x"}}))},
                                 {"encoding", "base64"}}));
  CHECK(num(e, "code") == -32008);
  CHECK_THAT(str(e, "message"), Contains("\"planted\" is a symlink"));
  CHECK(tree_of(w.outside) == std::map<std::string, std::string>{{"secret.txt", "outside\n"}});
  // Content bound, and something that is not an archive.
  e = error_of(
      c.call("archive_extract",
             {{"path", "x"}, {"data", base64(tgz)}, {"encoding", "base64"}, {"max_bytes", 1000}}));
  CHECK(num(e, "code") == -32602);
  CHECK_THAT(str(e, "message"), Contains("1000 bytes"));
  e = error_of(c.call("archive_extract", {{"path", "x"}, {"data", "plain text, no tar"}}));
  CHECK(num(e, "code") == -32602);
  CHECK_FALSE(file_exists(w.root + "/x"));
  stop_cleanly(d);
}

TEST_CASE("an archive being read survives a frontend crash", "[daemon][files][archive]") {
  Workspace w;
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--files-root", w.root}});
  REQUIRE(::mkdir((w.root + "/tree").c_str(), 0755) == 0);
  for (int i = 0; i < 8; ++i)
    write_file(w.root + "/tree/f" + std::to_string(i), random_bytes(256 * 1024, unsigned(i)));
  Client c(d.socket());
  json::object r = result_of(
      c.call("archive_create", {{"path", "tree"}, {"format", "tar"}, {"max_bytes", 65536}}));
  const std::string id = str(r, "archive_id");
  std::string packed = base64_decode(str(r, "data"));
  REQUIRE_FALSE(r.at("eof").as_bool());

  Client c2 = kill_frontend(d);
  for (int calls = 0;; ++calls) {
    REQUIRE(calls < 200);
    r = result_of(c2.call("archive_create",
                          {{"archive_id", id}, {"cursor", packed.size()}, {"max_bytes", 65536}}));
    packed += base64_decode(str(r, "data"));
    if (r.at("eof").as_bool()) break;
  }
  write_file(w.root + "/tree.tar", packed);
  result_of(c2.call("archive_extract", {{"path", "back"}, {"source", "tree.tar"}}));
  CHECK(tree_of(w.root + "/back") == tree_of(w.root + "/tree"));
  stop_cleanly(d);
}
