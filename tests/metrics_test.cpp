// The exposition that `metrics` and GET /metrics answer (frontend/metrics.h),
// rendered from a real segment and read by the strict checker, and the
// checker itself.
#include "frontend/metrics.h"

#include <catch2/catch.hpp>

#include "shm/metrics.h"
#include "tests/exposition_check.h"
#include "tests/shm_fixture.h"

using namespace sp;
using sp::test::check_exposition;
using sp::test::TestSegment;

namespace {

std::string problems_of(const test::Exposition& e) {
  std::string all;
  for (const std::string& p : e.problems) all += p + "\n";
  return all;
}

}  // namespace

TEST_CASE("the strict checker passes a good exposition and names each broken rule", "[metrics]") {
  const std::string good =
      "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n"
      "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
      "h_sum 3.5\nh_count 2\n";
  CHECK(problems_of(check_exposition(good)).empty());
  auto broken = [](const std::string& text, const std::string& rule) {
    test::Exposition e = check_exposition(text);
    INFO(text);
    CHECK_THAT(problems_of(e), Catch::Contains(rule));
  };
  broken("# HELP a A.\n# TYPE a gauge\na 1", "does not end in");
  broken("# HELP a A.\n# HELP a A.\n# TYPE a gauge\na 1\n", "second HELP");
  broken("# HELP a A.\na 1\n# TYPE a gauge\n", "before (or without) its TYPE");
  broken("# TYPE a gauge\na 1\n", "without its HELP");
  broken("# HELP a A.\n# TYPE a counter\na 1\n", "not named *_total");
  broken("# HELP a_total A.\n# TYPE a_total counter\na_total -1\n", "bad counter sample");
  broken("# HELP a A.\n# TYPE a gauge\na 1\na 2\n", "repeated sample");
  broken("# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\na{x=\"1\"} 1\nb 1\na 2\n",
         "not contiguous");
  broken("# HELP a A.\n# TYPE a gauge\na{x=1} 1\n", "malformed labels");
  broken("# HELP a A.\n# TYPE a gauge\na one\n", "not a number");
  broken(
      "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
      "h_sum 1\nh_count 1\n",
      "not cumulative");
  broken("# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
         "not le=\"+Inf\"");
  broken("# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
         "differs from _count");
  broken("# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n", "no _sum");
}

TEST_CASE("a fresh segment's metrics pass the strict check with every family at zero",
          "[metrics]") {
  TestSegment seg;
  test::Exposition e = check_exposition(frontend::render_metrics(*seg, {}));
  INFO(problems_of(e));
  CHECK(e.problems.empty());
  for (const char* family :
       {"shell_pool_jobs_started_total", "shell_pool_jobs_finished_total",
        "shell_pool_job_duration_seconds", "shell_pool_queue_wait_seconds",
        "shell_pool_jobs_queued", "shell_pool_jobs_running", "shell_pool_workers",
        "shell_pool_role_restarts_total", "shell_pool_reloads_total", "shell_pool_connections",
        "shell_pool_output_bytes_total"})
    CHECK(e.types.count(family) == 1);
  CHECK(e.types["shell_pool_job_duration_seconds"] == "histogram");
  for (const char* status : {"exited", "timed_out", "cancelled", "failed", "lost"})
    CHECK(e.value("shell_pool_jobs_finished_total{status=\"" + std::string(status) + "\"}") == 0);
  CHECK(e.value("shell_pool_job_duration_seconds_count") == 0);
  CHECK(e.value("shell_pool_job_duration_seconds_bucket{le=\"+Inf\"}") == 0);
}

TEST_CASE("observed durations land in cumulative buckets whose +Inf equals the count",
          "[metrics]") {
  TestSegment seg;
  shm::Histogram& h = seg->header().metrics.job_duration;
  for (uint64_t ns : {500'000ull, 3'000'000ull, 2'000'000'000ull, 1'000'000'000'000ull})
    shm::observe(h, shm::kJobDurationBounds, ns);
  shm::observe(h, shm::kJobDurationBounds, shm::kJobDurationBounds[0]);  // on a bound: in it
  test::Exposition e = check_exposition(frontend::render_metrics(*seg, {}));
  INFO(problems_of(e));
  CHECK(e.problems.empty());
  auto bucket = [&](const char* le) {
    return e.value("shell_pool_job_duration_seconds_bucket{le=\"" + std::string(le) + "\"}");
  };
  CHECK(bucket("0.001") == 2);
  CHECK(bucket("0.005") == 3);
  CHECK(bucket("1") == 3);
  CHECK(bucket("2.5") == 4);
  CHECK(bucket("300") == 4);
  CHECK(bucket("+Inf") == 5);
  CHECK(e.value("shell_pool_job_duration_seconds_count") == 5);
  CHECK(e.value("shell_pool_job_duration_seconds_sum") == Approx(1002.0045));
}

TEST_CASE("role deaths are counted by role and cause, workers by state", "[metrics]") {
  TestSegment seg;
  shm::Counters& c = seg->header().counters;
  shm::count_death(c, shm::RoleKind::kWorker, shm::DeathCause::kCrash);
  shm::count_death(c, shm::RoleKind::kWorker, shm::DeathCause::kCrash);
  shm::count_death(c, shm::RoleKind::kFrontend, shm::DeathCause::kHang);
  c.recycles.store(3);
  CHECK(shm::deaths_of(c, shm::RoleKind::kWorker) == 2);
  CHECK(shm::deaths_by(c, shm::DeathCause::kHang) == 1);
  // Slot 0 serves and runs a job, 1 starts, 2 is down, 3 retires.
  auto slot = [&](uint32_t i, shm::WorkerUse use, int pid, bool ready, uint32_t running) {
    shm::WorkerSlot& w = seg->worker(i);
    w.use.store(use);
    w.pid.store(pid);
    w.incarnation.store(1);
    w.ready.store(ready ? 1 : 0);
    w.running.store(running);
  };
  slot(0, shm::WorkerUse::kServing, 100, true, 1);
  slot(1, shm::WorkerUse::kServing, 101, false, 0);
  slot(2, shm::WorkerUse::kServing, 0, false, 0);
  slot(3, shm::WorkerUse::kRetiring, 103, true, 1);
  test::Exposition e = check_exposition(frontend::render_metrics(*seg, {.connections = 7}));
  INFO(problems_of(e));
  CHECK(e.problems.empty());
  CHECK(e.value("shell_pool_role_restarts_total{role=\"worker\",cause=\"crash\"}") == 2);
  CHECK(e.value("shell_pool_role_restarts_total{role=\"frontend\",cause=\"hang\"}") == 1);
  CHECK(e.value("shell_pool_role_restarts_total{role=\"frontend\",cause=\"crash\"}") == 0);
  CHECK(e.value("shell_pool_role_restarts_total{role=\"worker\",cause=\"recycle\"}") == 3);
  CHECK(e.value("shell_pool_workers{state=\"busy\"}") == 1);
  CHECK(e.value("shell_pool_workers{state=\"starting\"}") == 1);
  CHECK(e.value("shell_pool_workers{state=\"down\"}") == 1);
  CHECK(e.value("shell_pool_workers{state=\"retiring\"}") == 1);
  CHECK(e.value("shell_pool_workers{state=\"idle\"}") == 0);
  CHECK(e.value("shell_pool_connections") == 7);
}
