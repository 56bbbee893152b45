// The per-job output ring: records in order, wrap-around with pad records,
// backpressure when full, and the waiting-writer handshake.
#include <catch2/catch.hpp>
#include <cstring>
#include <string>

#include "shm/output.h"
#include "tests/shm_fixture.h"

using sp::shm::OutputReader;
using sp::shm::OutputWriter;
using sp::test::TestSegment;

namespace {

size_t write_record(OutputWriter& w, uint8_t stream, std::string_view data) {
  auto room = w.reserve();
  size_t n = std::min(room.size(), data.size());
  std::memcpy(room.data(), data.data(), n);
  if (n) w.commit(stream, uint32_t(n));
  return n;
}

}  // namespace

TEST_CASE("output chunks arrive in order with their stream tags", "[output]") {
  TestSegment seg;
  auto& slot = seg->jobs().slot(0);
  OutputWriter w(slot, seg->output(0), seg->caps().output_bytes);
  OutputReader r(slot, seg->output(0), seg->caps().output_bytes);
  write_record(w, sp::shm::kStreamStdout, "hello ");
  write_record(w, sp::shm::kStreamStderr, "oops");
  write_record(w, sp::shm::kStreamStdout, "world");
  std::string out, err;
  r.drain([&](uint8_t s, std::string_view d) { (s == sp::shm::kStreamStdout ? out : err) += d; });
  CHECK(out == "hello world");
  CHECK(err == "oops");
  CHECK(r.empty());
}

TEST_CASE("a full output ring stops the writer until the reader frees space", "[output]") {
  TestSegment seg;
  auto& slot = seg->jobs().slot(1);
  uint32_t size = seg->caps().output_bytes;
  OutputWriter w(slot, seg->output(1), size);
  OutputReader r(slot, seg->output(1), size);
  std::string sent;
  for (int i = 0;; ++i) {
    std::string chunk(100, char('a' + i % 26));
    size_t n = write_record(w, sp::shm::kStreamStdout, chunk);
    if (n == 0) break;
    sent.append(chunk, 0, n);
  }
  CHECK(w.reserve().empty());
  CHECK_FALSE(w.pause());  // still full: the writer may sleep
  std::string got;
  CHECK(r.drain([&](uint8_t, std::string_view d) { got += d; }));  // it was waiting: ring it
  CHECK(got == sent);
  CHECK_FALSE(w.reserve().empty());
}

TEST_CASE("the output ring wraps with pad records and loses nothing", "[output]") {
  TestSegment seg;
  auto& slot = seg->jobs().slot(2);
  uint32_t size = seg->caps().output_bytes;
  OutputWriter w(slot, seg->output(2), size);
  OutputReader r(slot, seg->output(2), size);
  std::string sent, got;
  uint64_t seed = 7;
  for (int round = 0; round < 2000; ++round) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    std::string chunk(1 + (seed >> 33) % 700, char('A' + round % 26));
    std::string_view rest = chunk;
    while (!rest.empty()) {
      size_t n = write_record(w, sp::shm::kStreamStdout, rest);
      if (n == 0) r.drain([&](uint8_t, std::string_view d) { got += d; });
      sent.append(rest.substr(0, n));
      rest.remove_prefix(n);
    }
  }
  r.drain([&](uint8_t, std::string_view d) { got += d; });
  CHECK(got.size() == sent.size());
  CHECK(got == sent);
}

TEST_CASE("a reader that frees nothing leaves a waiting writer's flag set", "[output]") {
  TestSegment seg;
  auto& slot = seg->jobs().slot(3);
  OutputWriter w(slot, seg->output(3), seg->caps().output_bytes);
  OutputReader r(slot, seg->output(3), seg->caps().output_bytes);
  while (write_record(w, sp::shm::kStreamStdout, std::string(512, 'x'))) {
  }
  CHECK_FALSE(w.pause());
  CHECK(r.drain([](uint8_t, std::string_view) {}));  // freed space: the writer is to be rung
  CHECK(slot.out_writer_waiting.load() == 0);
  // Empty now: a drain with nothing to read must not clear a new wait.
  slot.out_writer_waiting.store(1);
  CHECK_FALSE(r.drain([](uint8_t, std::string_view) {}));
  CHECK(slot.out_writer_waiting.load() == 1);
}
