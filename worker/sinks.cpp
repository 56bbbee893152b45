#include "worker/sinks.h"

#include <fcntl.h>

#include <string_view>

#include "common/crash_point.h"
#include "common/log.h"
#include "common/sys.h"
#include "shm/spool.h"

namespace sp::worker {

RingSink::RingSink(const shm::Segment& seg, uint32_t slot, bool& notify)
    : rings_(seg.output_rings()),
      slot_index_(slot),
      slot_(seg.jobs().slot(slot)),
      notify_(notify) {}

bool RingSink::have_ring() {
  if (writer_) return true;
  unsigned char* ring = rings_.take(slot_index_);
  if (!ring) {
    rings_.want();
    ring = rings_.take(slot_index_);  // one freed before want() rang nobody
  }
  if (!ring) return false;
  writer_.emplace(slot_, ring, rings_.bytes());
  if (held_) {  // an empty ring has room for it
    std::memcpy(writer_->reserve().data(), hold_, held_);
    writer_->commit(shm::stream_tag(held_stream_), held_);
    held_ = 0;
    notify_ = true;
  }
  return true;
}

std::span<char> RingSink::room() {
  if (!have_ring()) return held_ ? std::span<char>() : std::span<char>(hold_);
  std::span<unsigned char> room = writer_->reserve();
  // Full: mark the writer waiting; space that appeared meanwhile is used.
  if (room.empty() && writer_->pause()) room = writer_->reserve();
  return {reinterpret_cast<char*>(room.data()), room.size()};
}

OutputSink::Taken RingSink::take(Stream stream, size_t n) {
  if (!writer_) {  // into hold_: published with the ring
    held_ = uint32_t(n);
    held_stream_ = stream;
    return {};
  }
  crash_point("mid_output_chunk");
  writer_->commit(shm::stream_tag(stream), uint32_t(n));
  return {.published = true};
}

bool RingSink::resume() {
  if (!have_ring() || writer_->reserve().empty()) return false;
  slot_.out_writer_waiting.store(0, std::memory_order_relaxed);
  return true;
}

SpoolSink::SpoolSink(const shm::Segment& seg, uint32_t slot, shm::WorkerSlot& writer, int spool_dir,
                     std::span<char> scratch)
    : seg_(seg),
      writer_(writer),
      record_(seg.record(seg.jobs().slot(slot).record.index())),
      record_index_(seg.jobs().slot(slot).record.index()),
      job_id_(seg.jobs().slot(slot).job_id),
      spool_dir_(spool_dir),
      scratch_(scratch) {}

bool SpoolSink::open_file() {
  if (file_) return true;
  std::string name = shm::spool_file_name(record_.seq);
  auto fd = sys("create the job's spool file", [&] {
    return ::openat(spool_dir_, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    0600);
  });
  if (!fd) {
    spdlog::error("job {}: {}", job_id_, fd.error().message());
    return false;
  }
  file_.reset(*fd);
  return true;
}

OutputSink::Taken SpoolSink::take(Stream stream, size_t n) {
  Taken taken;
  if (full_) return taken;
  shm::JobRecord& r = record_;
  std::string_view data(scratch_.data(), n);
  uint64_t kept = r.out_bytes[kStdout].load(std::memory_order_relaxed) +
                  r.out_bytes[kStderr].load(std::memory_order_relaxed);
  uint64_t room = r.output_cap > kept ? r.output_cap - kept : 0;
  bool over = data.size() > room;
  bool write_failed = false;
  data = data.substr(0, room);
  const uint64_t need = sizeof(shm::ChunkHeader) + data.size();
  shm::SpoolBudget budget = seg_.spool_budget();
  // Counted before the write, so the supervisor gives it back if we die there.
  if (!data.empty() && !budget.reserve(writer_, record_index_, end_, need)) {
    data = {};
    over = true;
  }
  if (!data.empty()) {
    auto wrote = open_file() ? shm::spool_append(file_.get(), end_, shm::stream_tag(stream), data)
                             : Result<uint64_t>(Error{EBADF, "no spool file"});
    crash_point("mid_spool_chunk");
    if (wrote) {
      end_ += *wrote;
      r.out_bytes[stream].fetch_add(data.size(), std::memory_order_relaxed);
      r.spool_end.store(end_, std::memory_order_release);
      shm::SpoolBudget::commit(writer_);  // the record's bytes now
      taken.published = true;
    } else {
      budget.abort(writer_);
      write_failed = true;
      spdlog::error("job {}: {}; its further output is dropped", job_id_, wrote.error().message());
      over = true;
    }
  }
  if (!over) return taken;
  full_ = true;
  r.truncated.store(1, std::memory_order_relaxed);
  // The kill policy is about room (the cap, the budget), not a failing disk.
  taken.stop_job = r.kill_on_cap && !write_failed;
  return taken;
}

std::string SpoolSink::stop_reason() const {
  const shm::JobRecord& r = record_;
  if (r.out_bytes[kStdout].load() + r.out_bytes[kStderr].load() >= r.output_cap)
    return "killed: its output exceeded " + std::to_string(r.output_cap) + " bytes";
  return "killed: the spool is full (--spool-bytes), its output cannot be kept";
}

}  // namespace sp::worker
