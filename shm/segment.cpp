#include "shm/segment.h"

#include "common/clock.h"

#include <time.h>
#include <unistd.h>

#include <bit>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cstring>
#include <functional>
#include <new>

namespace bip = boost::interprocess;

namespace sp::shm {

namespace {
uint64_t up64(uint64_t n) {
  return (n + 63) & ~uint64_t{63};
}
}  // namespace

Offsets compute_offsets(const Capacities& caps) {
  Offsets o{};
  o.ring_cells = std::bit_ceil(2 * caps.job_slots);
  uint64_t at = up64(sizeof(Header));
  o.workers = at;
  at = up64(at + sizeof(WorkerSlot) * kWorkerSlots);
  o.jobs = at;
  at = up64(at + sizeof(JobSlot) * uint64_t(caps.job_slots));
  o.ring = at;
  at = up64(at + sizeof(uint64_t) * uint64_t(o.ring_cells));
  o.sessions = at;
  at = up64(at + sizeof(SessionSlot) * uint64_t(caps.session_slots));
  o.session_envs = at;
  at = up64(at + uint64_t(caps.session_env_bytes) * caps.session_slots);
  o.records = at;
  at = up64(at + sizeof(JobRecord) * uint64_t(caps.job_records));
  o.specs = at;
  at = up64(at + uint64_t(caps.spec_bytes) * caps.job_slots);
  o.outputs = at;
  at = up64(at + uint64_t(caps.output_bytes) * output_ring_count(caps));
  o.inputs = at;
  at = up64(at + uint64_t(caps.input_bytes) * caps.job_slots);
  o.services = at;
  at = up64(at + sizeof(ServiceSlot) * uint64_t(caps.service_slots));
  o.service_specs = at;
  at = up64(at + uint64_t(caps.service_spec_bytes) * caps.service_slots);
  o.remote_ring = at;
  at = up64(at + sizeof(uint64_t) * uint64_t(o.ring_cells));
  o.hosts = at;
  at = up64(at + sizeof(HostSlot) * uint64_t(caps.host_slots));
  o.output_owners = at;
  at = up64(at + sizeof(uint64_t) * uint64_t(output_ring_count(caps)));
  o.total = at;
  return o;
}

Status validate(const Capacities& c) {
  auto bad = [](const char* what) { return Error{EINVAL, what}; };
  if (c.job_slots < 1 || c.job_slots > (1u << 20)) return bad("job slots must be 1..1048576");
  if (c.spec_bytes < 1024 || c.spec_bytes > (16u << 20) || c.spec_bytes % 8)
    return bad("spec bytes must be a multiple of 8 in 1 KiB..16 MiB");
  if (c.output_bytes < 4096 || c.output_bytes > (256u << 20) || c.output_bytes % 8)
    return bad("output buffer bytes must be a multiple of 8 in 4 KiB..256 MiB");
  if (c.output_rings < 1 || c.output_rings > (1u << 20))
    return bad("output rings must be 1..1048576");
  if (c.input_bytes < 1024 || c.input_bytes > (16u << 20))
    return bad("input buffer bytes must be 1 KiB..16 MiB");
  if (c.session_slots < 1 || c.session_slots > 65536) return bad("sessions must be 1..65536");
  if (c.session_env_bytes < 256 || c.session_env_bytes > (16u << 20))
    return bad("session env bytes must be 256 B..16 MiB");
  if (c.job_records < 1 || c.job_records > (1u << 20)) return bad("job records must be 1..1048576");
  if (c.spool_bytes < (1u << 20)) return bad("spool bytes must be at least 1 MiB");
  if (c.service_slots < 1 || c.service_slots > 4096) return bad("services must be 1..4096");
  if (c.services_per_session < 1 || c.services_per_session > c.service_slots)
    return bad("services per session must be 1..services");
  if (c.service_spec_bytes < 1024 || c.service_spec_bytes > (16u << 20))
    return bad("service spec bytes must be 1 KiB..16 MiB");
  if (c.host_slots < 1 || c.host_slots > 4096) return bad("hosts must be 1..4096");
  if (c.remote_jobs < 1 || c.remote_jobs > 65536) return bad("remote jobs must be 1..65536");
  if (c.workers < 1 || c.workers > kMaxWorkers) return bad("workers must be 1..64");
  if (c.tick_ms < 10 || c.tick_ms > 1000) return bad("tick must be 10..1000 ms");
  if (c.jobs_per_worker < 1 || c.jobs_per_worker > 65536)
    return bad("jobs per worker must be 1..65536");
  return {};
}

struct Segment::Impl {
  bip::mapped_region region;
};

Segment::Segment(std::unique_ptr<Impl> impl, unsigned char* base, uint64_t size)
    : impl_(std::move(impl)), base_(base), size_(size) {}
Segment::Segment(Segment&&) noexcept = default;
Segment& Segment::operator=(Segment&&) noexcept = default;
Segment::~Segment() = default;

std::string Segment::name_for_socket(const std::string& socket_path) {
  // FNV-1a: stable across builds and processes (std::hash is not guaranteed to be).
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char ch : socket_path) h = (h ^ ch) * 0x100000001b3ULL;
  char buf[40];
  std::snprintf(buf, sizeof buf, "shell-pool-%016llx", static_cast<unsigned long long>(h));
  return buf;
}

Result<Segment> Segment::create(const std::string& name, const Capacities& caps) {
  if (Status s = validate(caps); !s) return s.error();
  Offsets o = compute_offsets(caps);
  try {
    bip::shared_memory_object shm(bip::create_only, name.c_str(), bip::read_write, 0600);
    shm.truncate(static_cast<bip::offset_t>(o.total));
    auto impl = std::make_unique<Impl>(Impl{bip::mapped_region(shm, bip::read_write)});
    auto* base = static_cast<unsigned char*>(impl->region.get_address());
    // A fresh segment reads as zeros; construct the header and the ring in place.
    auto* h = new (base) Header{};
    h->magic = kMagic;
    h->layout_version = kLayoutVersion;
    h->header_bytes = sizeof(Header);
    h->total_bytes = o.total;
    h->caps = caps;
    h->ring_cells = o.ring_cells;
    h->workers_off = o.workers;
    h->jobs_off = o.jobs;
    h->ring_off = o.ring;
    h->sessions_off = o.sessions;
    h->session_envs_off = o.session_envs;
    h->records_off = o.records;
    h->specs_off = o.specs;
    h->outputs_off = o.outputs;
    h->inputs_off = o.inputs;
    h->services_off = o.services;
    h->service_specs_off = o.service_specs;
    h->remote_ring_off = o.remote_ring;
    h->hosts_off = o.hosts;
    h->output_owners_off = o.output_owners;
    h->next_job_id.store(1);
    h->started_unix_ms.store(unix_ms());
    auto* cells = reinterpret_cast<std::atomic<uint64_t>*>(base + o.ring);
    auto* remote_cells = reinterpret_cast<std::atomic<uint64_t>*>(base + o.remote_ring);
    for (uint32_t i = 0; i < o.ring_cells; ++i) {
      cells[i].store(SubmitRing::initial_cell(i), std::memory_order_relaxed);
      remote_cells[i].store(SubmitRing::initial_cell(i), std::memory_order_relaxed);
    }
    std::atomic_thread_fence(std::memory_order_release);
    return Segment(std::move(impl), base, o.total);
  } catch (const bip::interprocess_exception& e) {
    int code = e.get_native_error() ? e.get_native_error() : EIO;
    return Error{code, "create shared memory " + name};
  }
}

Result<Segment> Segment::open(const std::string& name) {
  try {
    bip::shared_memory_object shm(bip::open_only, name.c_str(), bip::read_write);
    auto impl = std::make_unique<Impl>(Impl{bip::mapped_region(shm, bip::read_write)});
    auto* base = static_cast<unsigned char*>(impl->region.get_address());
    uint64_t size = impl->region.get_size();
    const auto* h = reinterpret_cast<const Header*>(base);
    if (size < sizeof(Header) || h->magic != kMagic)
      return Error{0, "shared memory " + name + " is not a shell-pool segment"};
    if (h->layout_version != kLayoutVersion)
      return Error{0, "shared memory " + name + " has layout version " +
                          std::to_string(h->layout_version) + ", this build expects " +
                          std::to_string(kLayoutVersion)};
    if (h->total_bytes != size) return Error{0, "shared memory " + name + " has a bad size"};
    return Segment(std::move(impl), base, size);
  } catch (const bip::interprocess_exception& e) {
    int code = e.get_native_error() ? e.get_native_error() : EIO;
    return Error{code, "open shared memory " + name};
  }
}

bool Segment::remove(const std::string& name) {
  return bip::shared_memory_object::remove(name.c_str());
}

}  // namespace sp::shm
