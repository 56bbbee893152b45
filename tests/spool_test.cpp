// Spool files (shm/spool.h): records appended by a worker, read back by
// cursor in any view, in any piece size, from any resume point.
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>

#include "common/unique_fd.h"
#include "shm/layout.h"
#include "shm/spool.h"

using namespace sp;
using namespace sp::shm;

namespace {

struct SpoolFile {
  SpoolFile() {
    char path[] = "/tmp/sp-spool-XXXXXX";
    fd.reset(::mkstemp(path));
    ::unlink(path);
    REQUIRE(fd);
  }
  void append(uint8_t stream, std::string_view data) {
    auto n = spool_append(fd.get(), end, stream, data);
    REQUIRE(n);
    end += *n;
  }
  // Everything of `view` from `cursor`, in pieces of `piece`, carrying the
  // resume hint from one read to the next.
  std::string read(SpoolView view, uint64_t cursor, uint64_t piece) {
    std::string all;
    SpoolPos hint;
    for (;;) {
      auto r = read_spool(fd.get(), end, view, cursor, piece, hint);
      REQUIRE(r);
      std::string got;
      for (auto& c : r->chunks) got += c.data;
      REQUIRE(r->next_cursor == cursor + got.size());
      if (got.empty()) return all;
      all += got;
      cursor = r->next_cursor;
      hint = r->resume;
    }
  }
  UniqueFd fd;
  uint64_t end = 0;
};

}  // namespace

TEST_CASE("spool views give each stream alone or both in arrival order", "[spool]") {
  SpoolFile f;
  f.append(kStreamStdout, "hello ");
  f.append(kStreamStderr, "oops\n");
  f.append(kStreamStdout, "world\n");
  f.append(kStreamStdout, "");
  CHECK(f.read(SpoolView::kStdout, 0, 1000) == "hello world\n");
  CHECK(f.read(SpoolView::kStderr, 0, 1000) == "oops\n");
  CHECK(f.read(SpoolView::kBoth, 0, 1000) == "hello oops\nworld\n");
  auto r = read_spool(f.fd.get(), f.end, SpoolView::kBoth, 0, 1000, {});
  REQUIRE(r);
  REQUIRE(r->chunks.size() == 3);
  CHECK(r->chunks[1].stream == kStreamStderr);
  CHECK(r->chunks[1].data == "oops\n");
}

TEST_CASE("spool reads in any piece size and from any cursor reassemble the output", "[spool]") {
  SpoolFile f;
  std::string out, err, both;
  for (int i = 0; i < 500; ++i) {
    std::string o = "out " + std::to_string(i) + std::string(size_t(i % 7), 'x') + "\n";
    std::string e = "err " + std::to_string(i) + "\n";
    f.append(kStreamStdout, o);
    out += o;
    both += o;
    if (i % 3 == 0) {
      f.append(kStreamStderr, e);
      err += e;
      both += e;
    }
  }
  for (uint64_t piece : {1, 3, 64, 1000, 1 << 20}) {
    INFO("piece " << piece);
    CHECK(f.read(SpoolView::kStdout, 0, piece) == out);
    CHECK(f.read(SpoolView::kStderr, 0, piece) == err);
    CHECK(f.read(SpoolView::kBoth, 0, piece) == both);
  }
  for (uint64_t cursor : {uint64_t{1}, uint64_t{777}, uint64_t(out.size() - 1)})
    CHECK(f.read(SpoolView::kStdout, cursor, 100) == out.substr(cursor));
  // A hint past the cursor is not used (a read from an earlier cursor).
  auto late = read_spool(f.fd.get(), f.end, SpoolView::kStdout, 2000, 10, {});
  REQUIRE(late);
  auto early = read_spool(f.fd.get(), f.end, SpoolView::kStdout, 5, 10, late->resume);
  REQUIRE(early);
  CHECK(early->chunks.at(0).data == out.substr(5, 10));
  // Past the end: nothing, and the cursor stays.
  auto past = read_spool(f.fd.get(), f.end, SpoolView::kBoth, both.size() + 10, 10, {});
  REQUIRE(past);
  CHECK(past->chunks.empty());
  CHECK(past->next_cursor == both.size() + 10);
}

TEST_CASE("a spool read stops at the published end and rejects damaged files", "[spool]") {
  SpoolFile f;
  f.append(kStreamStdout, "complete");
  uint64_t published = f.end;
  f.append(kStreamStdout, "not yet published");
  auto r = read_spool(f.fd.get(), published, SpoolView::kStdout, 0, 1000, {});
  REQUIRE(r);
  REQUIRE(r->chunks.size() == 1);
  CHECK(r->chunks[0].data == "complete");
  // An end that cuts a record, or a record of no known stream: an error that says so.
  auto cut = read_spool(f.fd.get(), published + 4, SpoolView::kStdout, 0, 1000, {});
  REQUIRE(!cut);
  CHECK_THAT(cut.error().message(), Catch::Contains("past the written end"));
  ChunkHeader bad{4, 9, {}};
  REQUIRE(::pwrite(f.fd.get(), &bad, sizeof bad, 0) == sizeof bad);
  auto damaged = read_spool(f.fd.get(), f.end, SpoolView::kBoth, 0, 1000, {});
  REQUIRE(!damaged);
  CHECK_THAT(damaged.error().message(), Catch::Contains("unknown stream"));
}
