// A service's log ring (frontend/service_log.h) over a real file, and the
// shm service table (shm::ServiceTable) on a real segment.
#include <fcntl.h>

#include <catch2/catch.hpp>
#include <memory>
#include <string>

#include "frontend/service_log.h"
#include "shm/service_table.h"
#include "tests/daemon_harness.h"
#include "tests/shm_fixture.h"

using namespace sp;
using frontend::append_service_log;
using frontend::kStreamMarker;
using frontend::LogPos;
using frontend::read_service_log;
using shm::SpoolView;

namespace {

struct Ring {
  test::TempDir dir;
  UniqueFd spool{::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC)};
  std::unique_ptr<shm::ServiceSlot> slot = std::make_unique<shm::ServiceSlot>();
  UniqueFd fd;
  explicit Ring(uint64_t bytes) {
    slot->log_bytes = bytes;
    auto f = frontend::open_service_log(spool.get(), 0, true);
    REQUIRE(f);
    fd = std::move(*f);
  }
  void append(uint8_t stream, const std::string& data) {
    REQUIRE(append_service_log(fd.get(), *slot, stream, data));
  }
  frontend::LogRead read(SpoolView view, std::optional<uint64_t> cursor,
                         std::optional<uint64_t> tail = std::nullopt, uint64_t max = 1 << 20,
                         const LogPos& hint = {}) {
    auto r = read_service_log(fd.get(), *slot, view, cursor, tail, max, hint);
    REQUIRE(r);
    return *r;
  }
};

}  // namespace

TEST_CASE("a service log keeps streams apart by view, markers in all", "[services][log]") {
  Ring ring(4096);
  ring.append(shm::kStreamStdout, "out1\n");
  ring.append(shm::kStreamStderr, "err1\n");
  ring.append(kStreamMarker, "[mark]\n");
  ring.append(shm::kStreamStdout, "out2\n");
  CHECK(ring.read(SpoolView::kBoth, 0).data == "out1\nerr1\n[mark]\nout2\n");
  CHECK(ring.read(SpoolView::kStdout, 0).data == "out1\n[mark]\nout2\n");
  CHECK(ring.read(SpoolView::kStderr, 0).data == "err1\n[mark]\n");
  // A cursor inside a record; max_bytes cuts; reading on from next_cursor.
  auto r = ring.read(SpoolView::kBoth, 7, std::nullopt, 6);
  CHECK(r.data == "r1\n[ma");
  CHECK(r.next_cursor == 13);
  CHECK_FALSE(r.at_end);
  r = ring.read(SpoolView::kBoth, r.next_cursor, std::nullopt, 1 << 20, r.resume);
  CHECK(r.data == "rk]\nout2\n");
  CHECK(r.at_end);
  CHECK(r.lost_bytes == 0);
  CHECK(ring.read(SpoolView::kBoth, std::nullopt, 5).data == "out2\n");
  // A cursor past the end reads nothing, at the end.
  r = ring.read(SpoolView::kBoth, 1000);
  CHECK(r.data.empty());
  CHECK(r.at_end);
  CHECK(r.next_cursor == 22);
}

TEST_CASE("a service log ring overwrites its oldest records and says what was lost",
          "[services][log]") {
  Ring ring(4096);
  std::string all;
  for (int i = 0; i < 500; ++i) {  // ~ 11 KiB through a 4 KiB ring, wrapping many times
    std::string line = "line " + std::to_string(i) + "\n";
    ring.append(i % 7 == 0 ? shm::kStreamStderr : shm::kStreamStdout, line);
    all += line;
  }
  CHECK(ring.slot->log_head - ring.slot->log_tail <= 4096);
  auto r = ring.read(SpoolView::kBoth, 0);
  CHECK(r.lost_bytes > 0);
  CHECK(r.lost_bytes + r.data.size() == all.size());
  CHECK(all.substr(r.lost_bytes) == r.data);
  // A record larger than a quarter of the ring goes in pieces.
  const std::string big(3000, 'x');
  ring.append(shm::kStreamStdout, big);
  r = ring.read(SpoolView::kBoth, std::nullopt, 3000);
  CHECK(r.data == big);
  r = ring.read(SpoolView::kStdout, 0);
  CHECK(r.data.size() < 4096);
  CHECK(r.data.substr(r.data.size() - 3000) == big);
}

TEST_CASE("the service table finds, bounds and frees services", "[services][table]") {
  shm::Capacities caps = test::TestSegment::small_caps();
  caps.service_slots = 3;
  caps.services_per_session = 2;
  caps.service_spec_bytes = 1024;
  test::TestSegment seg(caps);
  shm::ServiceTable t(*seg);
  auto a = t.create("a", "sess", "{\"x\":1}", 4096);
  REQUIRE(std::holds_alternative<uint32_t>(a));
  CHECK(t.spec(std::get<uint32_t>(a)) == "{\"x\":1}");
  CHECK(std::holds_alternative<uint32_t>(t.create("b", "sess", "{}", 4096)));
  CHECK(std::get<shm::ServiceError>(t.create("c", "sess", "{}", 4096)) ==
        shm::ServiceError::kSessionFull);
  CHECK(std::get<shm::ServiceError>(t.create("c", "", std::string(1025, ' '), 4096)) ==
        shm::ServiceError::kSpecTooLarge);
  CHECK(std::holds_alternative<uint32_t>(t.create("c", "", "{}", 4096)));
  CHECK(std::get<shm::ServiceError>(t.create("d", "", "{}", 4096)) ==
        shm::ServiceError::kTableFull);
  CHECK(t.find("b"));
  CHECK(t.in_session("sess") == 2);
  CHECK(t.all().size() == 3);
  const uint32_t ai = std::get<uint32_t>(a);
  CHECK(t.set_spec(ai, "{\"x\":2}"));
  CHECK_FALSE(t.set_spec(ai, std::string(2000, ' ')));
  CHECK(t.spec(ai) == "{\"x\":2}");
  t.release(ai);
  CHECK_FALSE(t.find("a"));
  // A slot a dead frontend left half-written is freed.
  t.at(ai).state.store(uint32_t(shm::ServiceSlotState::kWriting));
  t.recover();
  CHECK(t.at(ai).state.load() == uint32_t(shm::ServiceSlotState::kFree));
}
