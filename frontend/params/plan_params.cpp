// Params of the strategies: execute_chain, execute_parallel, execute_dag (and
// job_submit with "strategy"). A DAG is checked whole here: names, unknown
// dependencies, duplicates and cycles are -32602 naming the culprit.
#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "frontend/params/readers.h"

namespace sp::rpc {

using namespace detail;

namespace {

bool valid_name(std::string_view name) {
  return !name.empty() && name.size() <= kMaxJobIdBytes && id_chars(name);
}

// One step's spec; errors say which step.
std::optional<RpcError> read_step(const Value& spec, const std::string& where, PlanStep& out) {
  if (!spec.is_object()) return bad_params(where + " must be an object (an execute spec)");
  auto parsed = parse_exec_params(spec);
  if (auto* e = std::get_if<RpcError>(&parsed)) return within(*e, where);
  out.exec = std::move(std::get<ExecParams>(parsed));
  if (out.exec.stdin_open)
    return bad_params(where +
                      ": \"stdin_open\" is for job_submit and execute_stream, not plan "
                      "steps (a step may have \"stdin\")");
  if (!out.exec.hosts.empty())
    return bad_params(where +
                      ": a step runs on one host (\"host\"); \"hosts\" is for execute, "
                      "execute_stream and job_submit");
  return std::nullopt;
}

std::optional<RpcError> read_commands(Obj obj, std::vector<PlanStep>& out) {
  const Value* v = field(obj, "commands");
  if (v == nullptr) return bad_params("\"commands\" is required");
  if (!v->is_array() || v->get_array().empty())
    return bad_params("\"commands\" must be a non-empty array of execute specs");
  const Array& arr = v->get_array();
  if (arr.size() > shm::kMaxPlanSteps)
    return bad_params("\"commands\" has " + std::to_string(arr.size()) + " steps, at most " +
                      std::to_string(shm::kMaxPlanSteps) + " are allowed");
  for (size_t i = 0; i < arr.size(); ++i) {
    PlanStep step;
    step.name = std::to_string(i);
    const std::string where = "\"commands\"[" + step.name + "]";
    if (auto e = read_step(arr[i], where, step)) return e;
    if (arr[i].get_object().if_contains("depends_on"))
      return bad_params(where +
                        ": \"depends_on\" is for the nodes of execute_dag (a chain runs its "
                        "steps in order, a parallel plan all at once)");
    out.push_back(std::move(step));
  }
  return std::nullopt;
}

std::optional<RpcError> read_nodes(Obj obj, std::vector<PlanStep>& out) {
  const Value* v = field(obj, "nodes");
  if (v == nullptr) return bad_params("\"nodes\" is required");
  if (!v->is_object() || v->get_object().empty())
    return bad_params("\"nodes\" must be a non-empty object of name: execute spec");
  const Object& nodes = v->get_object();
  // A name given twice would otherwise be one node silently dropped.
  std::unordered_set<std::string_view> seen;
  for (const auto& [name, spec] : nodes)
    if (!seen.insert(name).second)
      return bad_params("node \"" + name + "\" is given twice in \"nodes\"");
  if (nodes.size() > shm::kMaxPlanSteps)
    return bad_params("\"nodes\" has " + std::to_string(nodes.size()) + " nodes, at most " +
                      std::to_string(shm::kMaxPlanSteps) + " are allowed");
  for (const auto& member : nodes) {
    PlanStep step;
    step.name = std::string(member.first);
    if (!valid_name(step.name))
      return bad_params("node name " + quoted_key(step.name) +
                        " must be 1..64 letters, digits or . _ : -");
    const std::string where = "node \"" + step.name + "\"";
    if (auto e = read_step(member.second, where, step)) return e;
    Obj spec = &member.second.get_object();
    if (auto e = read_string_array(spec, "depends_on", step.depends_on)) return within(*e, where);
    out.push_back(std::move(step));
  }
  std::unordered_map<std::string_view, size_t> index;
  for (size_t i = 0; i < out.size(); ++i) index[out[i].name] = i;
  // Every dependency names a node; then no cycle (depth-first, three colours).
  for (const PlanStep& step : out)
    for (const std::string& dep : step.depends_on)
      if (!index.count(dep))
        return bad_params("node \"" + step.name + "\" depends on " + quoted_key(dep) +
                          ", which is not a node");
  std::vector<int> colour(out.size(), 0);  // 0 new, 1 on the path, 2 done
  std::vector<size_t> path;
  std::optional<RpcError> cycle;
  auto visit = [&](auto&& self, size_t i) -> void {
    if (cycle || colour[i] == 2) return;
    if (colour[i] == 1) {
      std::string names;
      auto from = std::find(path.begin(), path.end(), i);
      for (auto it = from; it != path.end(); ++it) names += out[*it].name + " -> ";
      cycle = bad_params("\"nodes\" has a cycle: " + names + out[i].name);
      return;
    }
    colour[i] = 1;
    path.push_back(i);
    for (const std::string& dep : out[i].depends_on) self(self, index[dep]);
    path.pop_back();
    colour[i] = 2;
  };
  for (size_t i = 0; i < out.size() && !cycle; ++i) visit(visit, i);
  if (cycle) return cycle;
  return std::nullopt;
}

std::optional<RpcError> read_max_parallel(Obj obj, uint32_t& out) {
  std::optional<uint64_t> n;
  if (auto e = read_byte_count(obj, "max_parallel", n)) return e;
  if (n && (*n < 1 || *n > shm::kMaxPlanSteps))
    return bad_params("\"max_parallel\" must be 1.." + std::to_string(shm::kMaxPlanSteps));
  if (n) out = uint32_t(*n);
  return std::nullopt;
}

}  // namespace

Parsed<PlanParams> parse_plan_params(shm::PlanKind kind, const Value& params) {
  PlanParams p;
  p.kind = kind;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (kind == shm::PlanKind::kDag) {
    if (auto e = read_nodes(obj, p.steps)) return *e;
  } else {
    if (auto e = read_commands(obj, p.steps)) return *e;
  }
  if (kind == shm::PlanKind::kChain) {
    if (auto e = read_bool(obj, "stop_on_error", p.stop_on_error)) return *e;
  } else {
    if (auto e = read_bool(obj, "fail_fast", p.fail_fast)) return *e;
    if (auto e = read_max_parallel(obj, p.max_parallel)) return *e;
  }
  if (auto e = read_encoding(obj, "output_encoding", p.encoding)) return *e;
  if (auto e = read_byte_count(obj, "max_output_bytes", p.max_output_bytes)) return *e;
  return p;
}

}  // namespace sp::rpc
