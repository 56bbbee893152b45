#include "frontend/method_table.h"

#include "frontend/errors.h"

namespace sp::frontend {

void MethodTable::add(std::string name, std::function<void(Reply)> handle) {
  methods_[std::move(name)] = [handle = std::move(handle)](const rpc::Value&, Reply reply) {
    handle(std::move(reply));
  };
}

void MethodTable::dispatch(rpc::Call& call, Reply reply) const {
  auto it = methods_.find(call.method);
  if (it == methods_.end()) return out_->fail(reply, method_not_found(call.method));
  it->second(call.params, std::move(reply));
}

}  // namespace sp::frontend
