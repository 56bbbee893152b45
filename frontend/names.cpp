#include "frontend/names.h"

#include "common/remote_error.h"
#include "common/signals.h"

namespace sp::frontend {

using shm::JobState;

const char* state_name(JobState s) {
  switch (s) {
    case JobState::kFree:
    case JobState::kAllocated:
    case JobState::kQueued:
      return "queued";
    case JobState::kClaimed:
    case JobState::kRunning:
      return "running";
    case JobState::kExited:
      return "exited";
    case JobState::kTimedOut:
      return "timed_out";
    case JobState::kCancelled:
      return "cancelled";
    case JobState::kFailed:
      return "failed";
    case JobState::kLost:
      return "lost";
    case JobState::kWaiting:
      return "waiting";
    case JobState::kSkipped:
      return "skipped";
  }
  return "lost";
}

const char* plan_kind_name(shm::PlanKind kind) {
  switch (kind) {
    case shm::PlanKind::kChain:
      return "chain";
    case shm::PlanKind::kParallel:
      return "parallel";
    case shm::PlanKind::kDag:
      return "dag";
    case shm::PlanKind::kNotAPlan:
      break;
  }
  return "";
}

const char* isolation_name(shm::Isolation i) {
  switch (i) {
    case shm::Isolation::kCgroupV2:
      return "cgroup-v2";
    case shm::Isolation::kCgroupV1:
      return "cgroup-v1";
    case shm::Isolation::kProcessGroup:
      break;
  }
  return "process-group";
}

const char* death_kind_name(shm::DeathKind k) {
  switch (k) {
    case shm::DeathKind::kAfterReady:
      return "after_ready";
    case shm::DeathKind::kBootFailure:
      return "boot_failure";
    case shm::DeathKind::kKilledStarting:
      return "killed_starting";
    case shm::DeathKind::kNone:
      break;
  }
  return "none";
}

rpc::Value signal_value(int sig) {
  if (!sig) return nullptr;
  std::string name = signal_name(sig);
  return name.empty() ? rpc::Value(sig) : rpc::Value(std::move(name));
}

rpc::Value remote_error_value(uint8_t code, uint8_t phase, const std::string& message) {
  if (!code) return nullptr;
  return rpc::Object{
      {"code", std::string(name_of(RemoteError(code)))},
      {"phase", phase ? rpc::Value(std::string(name_of(RemotePhase(phase)))) : rpc::Value(nullptr)},
      {"message", message}};
}

void add_remote_error(rpc::Object& o, uint8_t code, uint8_t phase) {
  o["error_code"] =
      code ? rpc::Value(std::string(name_of(RemoteError(code)))) : rpc::Value(nullptr);
  o["error_phase"] =
      code && phase ? rpc::Value(std::string(name_of(RemotePhase(phase)))) : rpc::Value(nullptr);
}

rpc::Value output_value(std::string text, OutputEncoding e) {
  if (e == OutputEncoding::kBytes) return rpc::Bytes{std::move(text)};
  return text;
}

void add_encoding(rpc::Object& o, OutputEncoding e) {
  if (e == OutputEncoding::kBase64) o["encoding"] = "base64";
  if (e == OutputEncoding::kBytes) o["encoding"] = "binary";
}

}  // namespace sp::frontend
