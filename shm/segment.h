// Segment: one shell-pool instance's shared-memory segment, created, mapped
// and removed with Boost.Interprocess (confined to segment.cpp). The
// supervisor creates and removes it; the frontend and the workers open it.
// Accessors return views over plain data; a Segment is move-only and its
// mapping lives as long as the object.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/result.h"
#include "shm/input.h"
#include "shm/job_table.h"
#include "shm/layout.h"
#include "shm/output.h"
#include "shm/ring.h"
#include "shm/spool_budget.h"

namespace sp::shm {

struct Offsets {
  uint32_t ring_cells;
  uint64_t workers, jobs, ring, sessions, session_envs, records, specs, outputs, inputs, services,
      service_specs, remote_ring, hosts, output_owners, total;
};
// The output rings a segment has: --output-rings, but never more than there
// are job slots (the rest could never be held).
inline uint32_t output_ring_count(const Capacities& caps) {
  return caps.output_rings < caps.job_slots ? caps.output_rings : caps.job_slots;
}
Offsets compute_offsets(const Capacities& caps);

// Checks capacities for sane bounds; the Error says which one and why.
Status validate(const Capacities& caps);

class Segment {
 public:
  // Supervisor: creates a fresh segment (fails with EEXIST if one exists).
  static Result<Segment> create(const std::string& name, const Capacities& caps);
  // Frontend/workers: maps an existing segment and checks magic and version.
  static Result<Segment> open(const std::string& name);
  // Removes the name; mappings stay valid until unmapped. False if absent.
  static bool remove(const std::string& name);
  // The segment name for the instance listening on `socket_path`.
  static std::string name_for_socket(const std::string& socket_path);

  Segment(Segment&&) noexcept;
  Segment& operator=(Segment&&) noexcept;
  ~Segment();

  Header& header() const { return *reinterpret_cast<Header*>(base_); }
  const Capacities& caps() const { return header().caps; }
  WorkerSlot& worker(uint32_t i) const { return at<WorkerSlot>(header().workers_off)[i]; }
  JobTable jobs() const { return {at<JobSlot>(header().jobs_off), caps().job_slots}; }
  SubmitRing ring() const {
    Header& h = header();
    return {at<std::atomic<uint64_t>>(h.ring_off), h.ring_cells, &h.ring_head, &h.ring_tail};
  }
  // Jobs on remote hosts (kControlRemote): the remote worker's ring.
  SubmitRing remote_ring() const {
    Header& h = header();
    return {at<std::atomic<uint64_t>>(h.remote_ring_off), h.ring_cells, &h.remote_ring_head,
            &h.remote_ring_tail};
  }
  // The ring a job with control flags `control` goes on.
  SubmitRing ring_for(uint32_t control) const {
    return control & kControlRemote ? remote_ring() : ring();
  }
  HostSlot& host(uint32_t i) const { return at<HostSlot>(header().hosts_off)[i]; }
  SessionSlot& session(uint32_t i) const { return at<SessionSlot>(header().sessions_off)[i]; }
  char* session_env(uint32_t i) const {
    return reinterpret_cast<char*>(base_ + header().session_envs_off +
                                   uint64_t(i) * caps().session_env_bytes);
  }
  JobRecord& record(uint32_t i) const { return at<JobRecord>(header().records_off)[i]; }
  SpoolBudget spool_budget() const { return {header(), &record(0), caps().job_records}; }
  unsigned char* spec(uint32_t job) const {
    return base_ + header().specs_off + uint64_t(job) * caps().spec_bytes;
  }
  OutputRings output_rings() const {
    Header& h = header();
    return {jobs(),
            at<std::atomic<uint64_t>>(h.output_owners_off),
            at<unsigned char>(h.outputs_off),
            output_ring_count(h.caps),
            h.caps.output_bytes,
            &h.rings_wanted};
  }
  // Reads job `slot`'s output (empty while it holds no ring).
  OutputReader output_reader(uint32_t slot) const {
    return {jobs().slot(slot), output_rings().held(slot), caps().output_bytes};
  }
  unsigned char* input(uint32_t job) const {
    return base_ + header().inputs_off + uint64_t(job) * caps().input_bytes;
  }
  InputWriter input_writer(uint32_t job) const {
    return {jobs().slot(job), input(job), caps().input_bytes};
  }
  InputReader input_reader(uint32_t job) const {
    return {jobs().slot(job), input(job), caps().input_bytes};
  }
  ServiceSlot& service(uint32_t i) const { return at<ServiceSlot>(header().services_off)[i]; }
  char* service_spec(uint32_t i) const {
    return reinterpret_cast<char*>(base_ + header().service_specs_off +
                                   uint64_t(i) * caps().service_spec_bytes);
  }
  uint64_t size() const { return size_; }

 private:
  struct Impl;
  Segment(std::unique_ptr<Impl> impl, unsigned char* base, uint64_t size);
  template <typename T>
  T* at(uint64_t off) const {
    return reinterpret_cast<T*>(base_ + off);
  }
  std::unique_ptr<Impl> impl_;
  unsigned char* base_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace sp::shm
