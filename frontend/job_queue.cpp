#include "frontend/job_queue.h"

#include "common/clock.h"
#include "common/crash_point.h"
#include "shm/repair.h"

namespace sp::frontend {

using shm::JobState;
using shm::JobWord;

JobQueue::JobQueue(const shm::RoleConfig& o, const Fds& fds, const shm::Segment& seg,
                   EnvPairs base_env)
    : seg_(seg),
      jobs_(seg.jobs()),
      sessions_(seg),
      records_(seg),
      hosts_(seg),
      submit_(&seg.header().submit_bell, fds.submit),
      specs_(o, std::move(base_env)) {
  for (uint32_t i = 0; i < shm::kWorkerSlots; ++i)
    worker_bells_.emplace_back(&seg.worker(i).bell, fds.first_worker_bell + int(i));
}

bool JobQueue::accepting() const {
  return !stopping_ && !seg_.header().draining.load();
}

uint64_t JobQueue::next_job_id() const {
  return seg_.header().next_job_id.fetch_add(1, std::memory_order_relaxed);
}

uint32_t JobQueue::free_slots(uint32_t enough) const {
  uint32_t free = 0;
  for (uint32_t i = 0; i < jobs_.size() && free < enough; ++i)
    free += jobs_.load(i).state == JobState::kFree;
  return free;
}

std::variant<uint32_t, SubmitError> JobQueue::enqueue(const rpc::ExecParams& p,
                                                      JobPlacement where) {
  if (!accepting()) return SubmitError{SubmitError::kShuttingDown, {}};
  std::optional<shm::SessionEnv> session;
  if (!p.session_id.empty()) {
    session = sessions_.env_of(p.session_id);
    if (!session) return SubmitError{SubmitError::kNoSession, p.session_id};
  }
  std::optional<uint32_t> host;
  if (!p.host.empty()) {
    host = hosts_.find(p.host);
    if (!host) return SubmitError{SubmitError::kNoHost, p.host};
  }
  auto spec = specs_.build(p, session ? &*session : nullptr, host.has_value());
  if (auto* e = std::get_if<SubmitError>(&spec)) return *e;
  if (host) {
    std::get<shm::SpecInput>(spec).host_slot = *host + 1;
    std::get<shm::SpecInput>(spec).host_generation = hosts_.generation(*host);
    std::get<shm::SpecInput>(spec).host_check = p.host_check;
  }

  const bool input = p.stdin_data || p.stdin_open || p.pty;
  const uint64_t stdin_bytes = p.stdin_data ? p.stdin_data->size() : 0;
  if (const uint64_t ring = seg_.caps().input_bytes;
      stdin_bytes > ring && !stdin_->can_hold(stdin_bytes - ring))
    return SubmitError{SubmitError::kQueueFull,
                       "the frontend holds " + std::to_string(stdin_->held() >> 20) +
                           " MiB of stdin for jobs that have not read it yet"};
  auto slot = jobs_.allocate(alloc_cursor_);
  if (!slot)
    return SubmitError{SubmitError::kQueueFull,
                       std::to_string(jobs_.size()) + " jobs are queued or running"};
  shm::JobSlot& s = jobs_.slot(*slot);
  JobWord allocated = jobs_.load(*slot);
  auto words = shm::encode_spec({seg_.spec(*slot), seg_.caps().spec_bytes}, s.spec_words,
                                std::get<shm::SpecInput>(spec));
  if (!words) {
    s.spec_words = seg_.caps().spec_bytes / 8;  // unknown how much was written: zero all next time
    jobs_.transition(*slot, allocated, {JobState::kFree, 0, 0, allocated.generation + 1});
    return SubmitError{SubmitError::kTooLarge, words.error().message()};
  }
  s.spec_words = *words;
  s.job_id = where.seq ? where.seq : next_job_id();
  if (where.record)  // a detached job: the record names its slot before the job is queued
    records_.bind(*where.record, *slot, allocated.generation);
  if (where.service) jobs_.set_control(*slot, shm::kControlDetached | shm::kControlService);
  if (host) jobs_.set_control(*slot, shm::kControlRemote);
  if (input)  // before it is queued: the worker then sees its stdin is a pipe
    stdin_->start(*slot, allocated.generation, p.stdin_data.value_or(std::string()), p.stdin_open,
                  p.pty.has_value());
  if (where.waiting) {  // counted as submitted when it is queued (promote)
    jobs_.transition(*slot, allocated, allocated.with_state(JobState::kWaiting));
    return *slot;
  }
  JobWord queued = allocated.with_state(JobState::kQueued);
  jobs_.slot(*slot).queued_ns.store(monotonic_ns(), std::memory_order_relaxed);
  jobs_.transition(*slot, allocated, queued);  // release: the spec is visible to the claimer
  crash_point("mid_enqueue");
  if (!publish(*slot)) {
    SubmitError full{SubmitError::kQueueFull, "the ring is full"};
    if (jobs_.transition(*slot, queued, {JobState::kFree, 0, 0, queued.generation + 1}))
      return full;
    // A stale cell let a worker claim it meanwhile. An attached job then runs
    // for no one, and frees itself when it ends; a detached one is accepted.
    if (!where.record && !where.service) {
      jobs_.orphan(*slot);
      ring_owner(jobs_.load(*slot));
      return full;
    }
  }
  seg_.header().counters.submitted.fetch_add(1, std::memory_order_relaxed);
  return *slot;
}

bool JobQueue::publish(uint32_t slot) {
  const uint32_t control = jobs_.slot(slot).control.load(std::memory_order_acquire);
  if (!seg_.ring_for(control).push(slot)) return false;
  if (control & shm::kControlRemote)
    worker_bells_[shm::kRemoteWorker].ring();
  else
    submit_.ring();
  return true;
}

std::vector<std::string> JobQueue::session_secrets(const std::string& id) const {
  return sessions_.secrets_of(id);
}

bool JobQueue::promote(uint32_t slot, JobWord waiting) {
  JobWord queued = waiting.with_state(JobState::kQueued);
  jobs_.slot(slot).queued_ns.store(monotonic_ns(), std::memory_order_relaxed);
  if (!jobs_.transition(slot, waiting, queued)) return false;
  if (!publish(slot)) {
    // The ring is full: wait for the next turn (unless a stale cell let a
    // worker claim it meanwhile, which is as good).
    jobs_.transition(slot, queued, waiting);
    return false;
  }
  seg_.header().counters.submitted.fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool JobQueue::stop(uint32_t slot, std::string_view why, uint32_t sig, uint32_t grace_ms) {
  if (shm::finish_queued(seg_, slot, jobs_.load(slot), JobState::kCancelled, why)) return true;
  jobs_.request_cancel(slot, sig, grace_ms);
  ring_owner(jobs_.load(slot));
  return false;
}

void JobQueue::signal(uint32_t slot, int sig, std::optional<bool> foreground) {
  const bool terminal = jobs_.slot(slot).in_state.load() & shm::kInputTerminal;
  jobs_.request_signal(slot, sig, foreground.value_or(terminal) && terminal);
  ring_owner(jobs_.load(slot));
}

void JobQueue::wake_ring_waiters() const {
  if (!seg_.output_rings().take_wanted()) return;
  for (const shm::Doorbell& bell : worker_bells_) bell.ring();
}

void JobQueue::ring_owner(JobWord w) const {
  if (w.owner && w.owner <= worker_bells_.size()) worker_bells_[w.owner - 1].ring();
}

}  // namespace sp::frontend
