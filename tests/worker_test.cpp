// The worker's output sinks (worker/sinks.h) on a real segment: the ring sink
// holds back when the ring is full and resumes when the reader drains it; the
// spool sink keeps a prefix within the job's cap and the daemon's spool
// budget, marks the rest truncated, and asks for a stop under the kill policy.
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "shm/output.h"
#include "shm/spool.h"
#include "tests/shm_fixture.h"
#include "worker/sinks.h"

using namespace sp;
using namespace sp::worker;
using sp::test::TestSegment;

namespace {

// Copies up to room().size() bytes of `data` into the sink; what take() said
// and how many bytes went in.
std::pair<OutputSink::Taken, size_t> put(OutputSink& sink, Stream s, std::string_view data) {
  std::span<char> room = sink.room();
  size_t n = std::min(room.size(), data.size());
  if (n == 0) return {{}, 0};
  std::memcpy(room.data(), data.data(), n);
  return {sink.take(s, n), n};
}

// A spool directory of its own, removed with everything in it.
class SpoolDir {
 public:
  SpoolDir() {
    char tmpl[] = "/tmp/sp-worker-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl));
    path_ = tmpl;
    fd_.reset(::open(tmpl, O_PATH | O_DIRECTORY | O_CLOEXEC));
    REQUIRE(fd_);
  }
  ~SpoolDir() { std::filesystem::remove_all(path_); }
  int fd() const { return fd_.get(); }
  bool has(const std::string& name) const { return std::filesystem::exists(path_ + "/" + name); }
  size_t files() const {
    auto it = std::filesystem::directory_iterator(path_);
    return size_t(std::distance(begin(it), end(it)));
  }
  // Everything of `view` in the file, as a reader sees it up to spool_end.
  std::string read(const std::string& name, uint64_t spool_end, shm::SpoolView view) const {
    UniqueFd f(::open((path_ + "/" + name).c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(f);
    auto r = shm::read_spool(f.get(), spool_end, view, 0, 1 << 20, {});
    REQUIRE(r);
    std::string out;
    for (const auto& c : r->chunks) out += c.data;
    return out;
  }

 private:
  std::string path_;
  UniqueFd fd_;
};

// Job slot `slot` made a detached job whose record is record 0.
shm::JobRecord& detach(shm::Segment& seg, uint32_t slot, uint64_t cap, bool kill_on_cap) {
  seg.jobs().slot(slot).record = shm::RecordRef::of(0);
  seg.jobs().slot(slot).job_id = 77;
  shm::JobRecord& r = seg.record(0);
  r.seq = 42;
  r.output_cap = cap;
  r.kill_on_cap = kill_on_cap;
  return r;
}

}  // namespace

TEST_CASE("the ring sink holds back when the ring is full and resumes once it is drained",
          "[worker][sinks]") {
  TestSegment seg;
  const uint32_t slot = 3;
  shm::JobSlot& s = seg->jobs().slot(slot);
  bool notify = false;
  RingSink sink(*seg, slot, notify);
  CHECK_FALSE(sink.durable());
  std::string out, err;
  for (int i = 0;; ++i) {
    std::string chunk(100, char('a' + i % 26));
    Stream stream = i % 5 == 4 ? kStderr : kStdout;
    auto [taken, n] = put(sink, stream, chunk);
    if (n == 0) break;
    CHECK(taken.published);
    CHECK_FALSE(taken.stop_job);
    (stream == kStdout ? out : err).append(chunk, 0, n);
  }
  CHECK(sink.room().empty());
  CHECK(s.out_writer_waiting.load() == 1);  // for the reader to ring the worker
  CHECK_FALSE(sink.resume());

  shm::OutputReader reader = seg->output_reader(slot);
  std::string got_out, got_err;
  CHECK(reader.drain([&](uint8_t stream, std::string_view d) {
    (stream == shm::kStreamStdout ? got_out : got_err) += d;
  }));  // the writer was waiting
  CHECK(got_out == out);
  CHECK(got_err == err);
  CHECK(sink.resume());
  CHECK(s.out_writer_waiting.load() == 0);
  CHECK_FALSE(sink.room().empty());
}

TEST_CASE("without a free output ring the ring sink holds one read, then publishes it first",
          "[worker][sinks]") {
  shm::Capacities caps = TestSegment::small_caps();
  caps.output_rings = 1;
  TestSegment seg(caps);
  shm::OutputRings rings = seg->output_rings();
  REQUIRE(rings.take(0) != nullptr);  // job 0 holds the only ring
  bool notify = false;
  RingSink sink(*seg, 1, notify);
  // One read fits: a silent job reads its EOF here and needs no ring.
  auto [taken, n] = put(sink, kStderr, "held while no ring is free");
  CHECK(n == std::string("held while no ring is free").size());
  CHECK_FALSE(taken.published);
  CHECK(sink.holding());       // the job reads no more and does not end yet
  CHECK(sink.room().empty());  // then it waits, as on a full ring
  CHECK_FALSE(sink.resume());
  CHECK(seg->header().rings_wanted.load() == 1);
  CHECK_FALSE(notify);

  // Job 0's slot is freed: the sink gets the ring, the held read first.
  shm::JobTable jobs = seg->jobs();
  shm::JobWord w = jobs.load(0);
  REQUIRE(jobs.transition(0, w, w.with_state(shm::JobState::kExited)));
  REQUIRE(jobs.release(0, w.with_state(shm::JobState::kExited)));
  CHECK(sink.resume());
  CHECK(notify);  // published outside take(): the frontend is rung
  CHECK_FALSE(sink.holding());
  put(sink, kStdout, "then the rest");
  std::string got;
  seg->output_reader(1).drain([&](uint8_t stream, std::string_view d) {
    got += (stream == shm::kStreamStderr ? "err:" : "out:") + std::string(d) + ";";
  });
  CHECK(got == "err:held while no ring is free;out:then the rest;");
}

TEST_CASE("the spool sink keeps a prefix up to the job's output cap and marks it truncated",
          "[worker][sinks]") {
  TestSegment seg;
  SpoolDir dir;
  shm::JobRecord& r = detach(*seg, 5, 10, false);
  shm::WorkerSlot& w = seg->worker(0);
  std::vector<char> scratch(64);
  SpoolSink sink(*seg, 5, w, dir.fd(), scratch);
  CHECK(sink.durable());
  CHECK(sink.resume());  // it never holds back

  CHECK(dir.files() == 0);  // a silent job costs no file
  auto [first, n1] = put(sink, kStdout, "hello ");
  CHECK(first.published);
  CHECK(dir.has("job-42"));
  auto [second, n2] = put(sink, kStderr, "world!");
  CHECK(second.published);       // "worl" fits
  CHECK_FALSE(second.stop_job);  // truncate, not kill
  CHECK(r.truncated.load() == 1);
  auto [third, n3] = put(sink, kStdout, "more");
  CHECK(n3 == 4);  // read from the pipe, and dropped
  CHECK_FALSE(third.published);

  CHECK(r.out_bytes[0].load() == 6);
  CHECK(r.out_bytes[1].load() == 4);
  const uint64_t end = 2 * sizeof(shm::ChunkHeader) + 10;
  CHECK(r.spool_end.load() == end);
  CHECK(seg->header().spool_used.load() == end);  // counted in the budget
  CHECK(w.spool_reserved.load() == 0);            // and committed
  CHECK(dir.read("job-42", end, shm::SpoolView::kBoth) == "hello worl");
  CHECK(dir.read("job-42", end, shm::SpoolView::kStderr) == "worl");
}

TEST_CASE("the spool sink asks once for the job to be stopped at its cap under the kill policy",
          "[worker][sinks]") {
  TestSegment seg;
  SpoolDir dir;
  detach(*seg, 5, 4, true);
  std::vector<char> scratch(64);
  SpoolSink sink(*seg, 5, seg->worker(0), dir.fd(), scratch);
  auto [first, n1] = put(sink, kStdout, "hello");
  CHECK(first.published);
  CHECK(first.stop_job);
  auto [second, n2] = put(sink, kStdout, "again");
  CHECK_FALSE(second.stop_job);
  CHECK(sink.stop_reason() == "killed: its output exceeded 4 bytes");
}

TEST_CASE("a full spool drops a detached job's output and is named as the reason to stop it",
          "[worker][sinks]") {
  shm::Capacities caps = TestSegment::small_caps();
  caps.spool_bytes = 1 << 20;
  TestSegment seg(caps);
  SpoolDir dir;
  shm::JobRecord& r = detach(*seg, 5, 1000, true);
  std::vector<char> scratch(64);
  SpoolSink sink(*seg, 5, seg->worker(0), dir.fd(), scratch);
  const uint64_t record = sizeof(shm::ChunkHeader) + 6;
  seg->header().spool_used.store(caps.spool_bytes - record - 1);  // room for one record
  auto [first, n1] = put(sink, kStdout, "hello ");
  CHECK(first.published);
  CHECK_FALSE(first.stop_job);
  auto [second, n2] = put(sink, kStdout, "world!");
  CHECK_FALSE(second.published);
  CHECK(second.stop_job);
  CHECK(r.truncated.load() == 1);
  CHECK(seg->header().spool_used.load() == caps.spool_bytes - 1);  // nothing counted for it
  CHECK(r.spool_end.load() == record);
  CHECK(sink.stop_reason() ==
        "killed: the spool is full (--spool-bytes), its output cannot be kept");
}
