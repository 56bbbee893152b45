#include "frontend/session_methods.h"

#include "frontend/errors.h"
#include "frontend/params/readers.h"

namespace sp::frontend {

namespace {

// session_list takes no params; an object or array is ignored.
rpc::Parsed<bool> parse_no_params(const rpc::Value& params) {
  if (!params.is_null() && !params.is_object() && !params.is_array())
    return rpc::detail::bad_params("params must be an object");
  return true;
}

}  // namespace

void SessionMethods::add_methods(MethodTable& m) {
  m.add<rpc::SessionCreateParams>(
      "session_create", rpc::parse_session_create_params,
      [this](rpc::SessionCreateParams& p, Reply r) {
        auto id = sessions_.create(p.name, p.env_vars, p.secrets);
        if (auto* e = std::get_if<shm::SessionError>(&id))
          return out_.fail(r, to_rpc(*e, sessions_, sessions_.env_size(p.env_vars, p.secrets)));
        out_.answer(r, rpc::Object{{"session_id", std::get<std::string>(id)}});
      });
  m.add<bool>("session_list", parse_no_params, [this](bool, Reply r) {
    rpc::Array list;
    for (const shm::SessionInfo& s : sessions_.list()) {
      rpc::Object env;
      for (auto& [k, v] : s.env) env[k] = v;
      list.push_back(rpc::Object{{"session_id", s.id},
                                 {"name", s.name},
                                 {"env_vars", std::move(env)},
                                 {"secrets", s.secrets},
                                 {"created_at_ms", s.created_unix_ms}});
    }
    out_.answer(r, rpc::Object{{"sessions", std::move(list)}});
  });
  m.add<std::string>("session_destroy", rpc::parse_session_id_param,
                     [this](std::string& id, Reply r) {
                       if (!sessions_.destroy(id))
                         return out_.fail(r, to_rpc(SubmitError{SubmitError::kNoSession, id}));
                       destroyed_(id);
                       out_.answer(r, rpc::Object{{"success", true}, {"session_id", id}});
                     });
}

}  // namespace sp::frontend
