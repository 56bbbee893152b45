// Metrics: the pool's counters, histograms and gauges in the Prometheus
// text exposition format 0.0.4, for the `metrics` method and the HTTP
// endpoint of --metrics-listen (metrics_http.h). Counters and histograms
// live in shm (shm/metrics.h), so restarts of the frontend and the workers
// lose none; gauges are read at each scrape. The families: docs/protocol.md.
//
// Used from the frontend's single thread; reads shm only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "shm/job_table.h"
#include "shm/segment.h"

namespace sp::frontend {

inline constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

// Queued and running jobs (claimed ones count as running), from one scan of
// the job table.
struct JobCounts {
  uint32_t queued = 0, running = 0;
};
JobCounts count_jobs(const shm::JobTable& jobs);

// What only the frontend knows, read when it renders.
struct FrontendGauges {
  uint64_t connections = 0;
  uint64_t sessions = 0;
  uint64_t detached_jobs = 0;
  uint64_t output_buffered_bytes = 0;
  uint64_t config_generation = 0;
};

std::string render_metrics(const shm::Segment& seg, const FrontendGauges& gauges);

// Builds an exposition: each family's HELP and TYPE once, then its samples.
class Exposition {
 public:
  enum class Type { kCounter, kGauge, kHistogram };
  void family(std::string_view name, Type type, std::string_view help);
  // A sample of the current family; `suffix` ("_bucket", "_sum"...) is
  // appended to its name, `labels` is "" or `a="b",c="d"`.
  void sample(std::string_view suffix, std::string_view labels, uint64_t value);
  void sample(std::string_view suffix, std::string_view labels, double value);
  // A histogram of ns durations in seconds: cumulative buckets, +Inf, _sum, _count.
  void histogram(std::string_view name, std::string_view help, const shm::Histogram& h,
                 const uint64_t* bounds_ns);
  std::string take() { return std::move(text_); }

 private:
  void start_sample(std::string_view suffix, std::string_view labels);
  std::string text_;
  std::string name_;
};

}  // namespace sp::frontend
