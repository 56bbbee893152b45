// Method dispatch: the seed's methods by their exact names.
#include <boost/json.hpp>

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
    if (auto e = submit(c, std::get<rpc::ExecParams>(parsed), r, stream)) return fail(*e);
    return;  // answered when the job ends
  }
  if (m == "session_create" || m == "session_list" || m == "session_destroy") {
    json::value result;
    if (auto e = session_method(m, call.params, result)) return fail(*e);
    return answer(r, rpc::result_text(r.id, result));
  }
  fail({rpc::Code::MethodNotFound, "method not found: " + m});
}

std::optional<rpc::RpcError> Frontend::session_method(const std::string& method,
                                                      const json::value& params,
                                                      json::value& result) {
  if (method == "session_create") {
    auto parsed = rpc::parse_session_create_params(params);
    if (auto* e = std::get_if<rpc::RpcError>(&parsed)) return *e;
    auto& p = std::get<rpc::SessionCreateParams>(parsed);
    auto id = sessions_.create(p.name, p.env_vars);
    if (!id) {
      if (id.error().code == ENAMETOOLONG) return invalid("\"name\": " + id.error().context);
      return rpc::RpcError{rpc::Code::LimitExceeded, id.error().context};
    }
    result = json::object{{"session_id", *id}};
    return std::nullopt;
  }
  if (method == "session_list") {
    if (!params.is_null() && !params.is_object() && !params.is_array())
      return invalid("params must be an object");
    json::array list;
    for (const SessionInfo& s : sessions_.list())
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
