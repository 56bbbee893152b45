// Method dispatch: the seed's methods by their exact names.
#include <boost/json.hpp>

#include "common/clock.h"
#include "frontend/server.h"

namespace sp::frontend {

namespace json = boost::json;

namespace {

rpc::RpcError invalid(std::string message) {
  return {rpc::Code::InvalidParams, "invalid params: " + std::move(message)};
}

json::object env_object(const EnvPairs& env) {
  json::object o;
  for (auto& [k, v] : env) o[k] = v;
  return o;
}

}  // namespace

void Frontend::handle_call(Conn& c, rpc::Call& call, Reply r) {
  auto fail = [&](const rpc::RpcError& e) { answer(r, rpc::error_text(r.id, e)); };
  if (call.error) return fail(*call.error);
  const std::string& m = call.method;
  if (m == "execute" || m == "execute_stream") {
    bool stream = m == "execute_stream";
    auto parsed = rpc::parse_exec_params(call.params);
    if (auto* e = std::get_if<rpc::RpcError>(&parsed)) return fail(*e);
    if (stream && r.batch)
      return fail({rpc::Code::InvalidRequest,
                   "execute_stream answers with several messages and cannot be part of a "
                   "batch; send it on its own line"});
    // Single lines are not read past --max-inflight; a batch's members are
    // all read at once, so they are held to it here.
    if (c.unfinished() >= o_.max_inflight) return fail(inflight_error());
    if (auto e = submit(c, std::get<rpc::ExecParams>(parsed), r, stream)) return fail(*e);
    return;  // answered when the job ends
  }
  if (m == "execute_chain" || m == "execute_parallel" || m == "execute_dag") {
    auto kind = m == "execute_chain"      ? rpc::PlanKind::kChain
                : m == "execute_parallel" ? rpc::PlanKind::kParallel
                                          : rpc::PlanKind::kDag;
    auto parsed = rpc::parse_plan_params(kind, call.params, call.duplicate_node);
    if (auto* e = std::get_if<rpc::RpcError>(&parsed)) return fail(*e);
    auto& p = std::get<rpc::PlanParams>(parsed);
    if (c.unfinished() >= o_.max_inflight) return fail(inflight_error());
    auto plan = submit_plan(p, "", true);
    if (auto* e = std::get_if<rpc::RpcError>(&plan)) return fail(*e);
    rpc::JobWaitParams wait;
    wait.base64 = p.base64;
    wait.max_output_bytes = p.max_output_bytes;
    park(c, r, std::get<uint32_t>(plan), std::nullopt, std::move(wait), true);
    return;  // answered when the plan ends
  }
  if (m == "session_create" || m == "session_list" || m == "session_destroy") {
    json::value result;
    if (auto e = session_method(m, call.params, result)) return fail(*e);
    return answer(r, rpc::result_text(r.id, result));
  }
  if (m == "health") return answer(r, rpc::result_text(r.id, health()));
  if (job_method(c, call, r)) return;
  fail({rpc::Code::MethodNotFound, "method not found: " + m});
}

rpc::RpcError Frontend::inflight_error() const {
  return {rpc::Code::LimitExceeded,
          "more than --max-inflight (" + std::to_string(o_.max_inflight) +
              ") unfinished requests on this connection",
          {{"limit", o_.max_inflight}}};
}

// Pool state and counters: what an operator or a load balancer asks.
json::value Frontend::health() {
  const shm::Header& h = seg_.header();
  const shm::Capacities& caps = seg_.caps();
  uint64_t now = monotonic_ns();
  json::array workers;
  for (uint32_t i = 0; i < caps.workers; ++i) {
    const shm::WorkerRecord& w = seg_.worker(i);
    uint64_t beat = w.heartbeat_ns.load();
    workers.push_back(
        json::object{{"index", i},
                     {"pid", w.pid.load()},
                     {"running", w.running.load()},
                     {"incarnation", w.incarnation.load()},
                     {"heartbeat_age_ms", beat && now > beat ? (now - beat) / 1'000'000 : 0}});
  }
  uint32_t queued = 0, running = 0;
  for (uint32_t i = 0; i < jobs_.size(); ++i) {
    shm::JobState s = jobs_.load(i).state;
    queued += s == shm::JobState::kQueued;
    running += s == shm::JobState::kClaimed || s == shm::JobState::kRunning;
  }
  const shm::Counters& c = h.counters;
  json::object counters{{"submitted", c.submitted.load()},
                        {"started", c.started.load()},
                        {"finished", c.finished.load()},
                        {"failed", c.failed.load()},
                        {"timed_out", c.timed_out.load()},
                        {"cancelled", c.cancelled.load()},
                        {"lost", c.lost.load()},
                        {"requeued", c.requeued.load()},
                        {"worker_restarts", c.worker_restarts.load()},
                        {"frontend_restarts", c.frontend_restarts.load()},
                        {"hang_kills", c.hang_kills.load()},
                        {"deaths_by_signal", c.deaths_signal.load()},
                        {"deaths_by_exit", c.deaths_exit.load()},
                        {"deaths_by_oom", c.deaths_oom.load()},
                        {"recycles", c.recycles.load()},
                        {"oom_kills", c.oom_kills.load()}};
  return json::object{
      {"status", h.draining.load() ? "draining" : "ok"},
      {"uptime_ms", unix_ms() - h.started_unix_ms.load()},
      {"workers", std::move(workers)},
      {"jobs", json::object{{"queued", queued},
                            {"running", running},
                            {"queue_capacity", caps.job_slots},
                            {"max_concurrent", caps.workers * caps.jobs_per_worker}}},
      {"connections", conns_.size()},
      {"output_buffered_bytes", buffered_ + unsent_},
      {"output_budget", o_.output_budget},
      {"output_budget_holds", budget_holds_},
      {"sessions", sessions_.count()},
      {"detached", json::object{{"jobs", records_.live_count()},
                                {"unfinished", unsettled_.size() + open_plans_.size()},
                                {"capacity", records_.size()},
                                {"spool_used_bytes", seg_.spool_budget().used()},
                                {"spool_bytes", caps.spool_bytes}}},
      {"isolation", o_.isolation},            // cgroup-v2, cgroup-v1 or process-group
      {"isolation_note", o_.isolation_note},  // which jobs get cgroups, or why none do
      {"counters", std::move(counters)}};
}

std::optional<rpc::RpcError> Frontend::session_method(const std::string& method,
                                                      const json::value& params,
                                                      json::value& result) {
  if (method == "session_create") {
    auto parsed = rpc::parse_session_create_params(params);
    if (auto* e = std::get_if<rpc::RpcError>(&parsed)) return *e;
    auto& p = std::get<rpc::SessionCreateParams>(parsed);
    auto id = sessions_.create(p.name, p.env_vars);
    if (auto* e = std::get_if<shm::SessionError>(&id)) {
      switch (*e) {
        case shm::SessionError::kNameTooLong:
          return invalid("\"name\": session name is longer than " +
                         std::to_string(sessions_.max_name_bytes()) + " bytes");
        case shm::SessionError::kEnvTooLarge:
          return rpc::RpcError{rpc::Code::LimitExceeded,
                               "session env_vars need " +
                                   std::to_string(sessions_.env_size(p.env_vars)) +
                                   " bytes, the limit is " + std::to_string(sessions_.env_bytes())};
        case shm::SessionError::kTableFull:
          return rpc::RpcError{
              rpc::Code::LimitExceeded,
              "too many sessions (the limit is " + std::to_string(sessions_.slots()) + ")"};
      }
    }
    result = json::object{{"session_id", std::get<std::string>(id)}};
    return std::nullopt;
  }
  if (method == "session_list") {
    if (!params.is_null() && !params.is_object() && !params.is_array())
      return invalid("params must be an object");
    json::array list;
    for (const shm::SessionInfo& s : sessions_.list())
      list.push_back(json::object{{"session_id", s.id},
                                  {"name", s.name},
                                  {"env_vars", env_object(s.env)},
                                  {"created_at_ms", s.created_unix_ms}});
    result = json::object{{"sessions", std::move(list)}};
    return std::nullopt;
  }
  auto parsed = rpc::parse_session_id_param(params);
  if (auto* e = std::get_if<rpc::RpcError>(&parsed)) return *e;
  const std::string& id = std::get<std::string>(parsed);
  if (!sessions_.destroy(id))
    return rpc::RpcError{rpc::Code::NotFound, "no session with session_id " + id};
  result = json::object{{"success", true}, {"session_id", id}};
  return std::nullopt;
}

}  // namespace sp::frontend
