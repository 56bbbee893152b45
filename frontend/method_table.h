// MethodTable: the frontend's methods by name. Each part of the frontend
// adds its methods (jobs, plans, sessions, admin); the transport hands every
// call to dispatch(), which finds the method, reads its typed params (a
// -32602 answers the call when they are wrong) and runs its handler with
// the Reply to answer, now or later. A handler never sees a wire format;
// params with an output `encoding` the call left unset get its dialect's.
//
// Used from the frontend's single thread; handlers must outlive the table.
#pragma once

#include <exception>
#include <functional>
#include <string>
#include <unordered_map>
#include <utility>

#include "frontend/connections.h"
#include "frontend/errors.h"
#include "frontend/params/params.h"

namespace sp::frontend {

class MethodTable {
 public:
  explicit MethodTable(Connections* out) : out_(out) {}
  void set_output(Connections* out) { out_ = out; }

  // Whether a call of the method may stay unanswered (a job, a wait): such
  // calls count against --max-inflight, which a batch's members are held to
  // here (single lines are not even read past it).
  enum class Holds { kNothing, kInflight };

  template <typename Params>
  void add(std::string name, rpc::Parsed<Params> (*parse)(const rpc::Value&),
           std::function<void(Params&, Reply)> handle, Holds holds = Holds::kNothing) {
    methods_[std::move(name)] = [this, parse, handle = std::move(handle), holds](
                                    const rpc::Value& params, Reply reply) {
      rpc::Parsed<Params> parsed = rpc::RpcError{rpc::Code::Internal, ""};
      try {  // the readers are pure: an exception is a bug or a failed allocation
        parsed = parse(params);
      } catch (const std::exception& e) {
        return out_->fail(reply, internal_error(e.what()));
      }
      if (auto* e = std::get_if<rpc::RpcError>(&parsed)) return out_->fail(reply, *e);
      if (holds == Holds::kInflight && out_->over_inflight(reply))
        return out_->fail(reply, out_->inflight_error());
      Params& p = std::get<Params>(parsed);
      // Output the call did not give an encoding for goes as its dialect
      // carries it: bytes on MessagePack-RPC, UTF-8 text on JSON-RPC.
      if constexpr (requires(Params & q) { q.encoding; })
        if (p.encoding == OutputEncoding::kUnset)
          p.encoding = reply.bytes ? OutputEncoding::kBytes : OutputEncoding::kUtf8;
      handle(p, std::move(reply));
    };
  }
  // A method without params (they are ignored).
  void add(std::string name, std::function<void(Reply)> handle);

  // Runs the call's method; unknown methods get -32601, and an exception
  // while reading params (a bug, or a failed allocation) -32603.
  void dispatch(rpc::Call& call, Reply reply) const;
  bool contains(const std::string& name) const { return methods_.count(name) != 0; }

 private:
  using Entry = std::function<void(const rpc::Value& params, Reply reply)>;
  Connections* out_;
  std::unordered_map<std::string, Entry> methods_;
};

}  // namespace sp::frontend
