// The frontend's method table and its one error table (frontend/errors.h),
// through a real Connections over a socketpair: what a client sees for an
// unknown method, bad params, a handler's answer and each part's errors.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>

#include "frontend/codec/json_codec.h"
#include "frontend/connections.h"
#include "frontend/errors.h"
#include "frontend/method_table.h"

using namespace sp;
using namespace sp::frontend;

namespace {

rpc::Parsed<std::string> parse_name(const rpc::Value& params) {
  const rpc::Value* v = params.is_object() ? params.get_object().if_contains("name") : nullptr;
  if (!v || !v->is_string()) return rpc::RpcError{rpc::Code::InvalidParams, "invalid params: name"};
  return v->get_string();
}

}  // namespace

TEST_CASE("calls reach their handler with typed params; unknown methods and bad params do not") {
  char dir[] = "/tmp/sp-methods-XXXXXX";
  REQUIRE(::mkdtemp(dir));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s/s", dir);
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  REQUIRE(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(listener.get(), 4) == 0);

  MethodTable* table = nullptr;
  UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  Connections out({}, ep.get(), std::move(listener),
                  {[&](rpc::Call& c, Reply r) { table->dispatch(c, std::move(r)); },
                   [](uint64_t) {}, [](uint64_t) {}});
  REQUIRE(out.start());
  MethodTable methods(&out);
  table = &methods;
  methods.add<std::string>("hello", parse_name, [&](std::string& name, Reply r) {
    out.answer(r, rpc::Object{{"greeting", "hi " + name}});
  });

  UniqueFd client(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  out.accept_all();
  REQUIRE(out.size() == 1);
  const std::string lines = R"({"jsonrpc":"2.0","id":1,"method":"hello","params":{"name":"ann"}})"
                            "\n"
                            R"({"jsonrpc":"2.0","id":2,"method":"nope"})"
                            "\n"
                            R"({"jsonrpc":"2.0","id":3,"method":"hello","params":{}})"
                            "\n";
  REQUIRE(::write(client.get(), lines.data(), lines.size()) == ssize_t(lines.size()));
  out.on_event(Connections::kFirstConnId, EPOLLIN);
  out.flush_dirty();
  std::string got(4096, '\0');
  ssize_t n = ::read(client.get(), got.data(), got.size());
  REQUIRE(n > 0);
  got.resize(size_t(n));
  CHECK(got ==
        R"({"jsonrpc":"2.0","id":1,"result":{"greeting":"hi ann"}})"
        "\n"
        R"({"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"method not found: nope"}})"
        "\n"
        R"({"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"invalid params: name"}})"
        "\n");
  CHECK(methods.contains("hello"));
  CHECK_FALSE(methods.contains("nope"));
  ::unlink(addr.sun_path);
  ::rmdir(dir);
}

TEST_CASE("each part's errors map to their wire codes and say why") {
  CHECK(to_rpc(TransportError::kLineTooLong, 10).code == rpc::Code::LimitExceeded);
  CHECK_THAT(to_rpc(TransportError::kLineTooLong, 10).message, Catch::Contains("10 bytes"));
  CHECK(to_rpc(TransportError::kTooManyInflight, 3).code == rpc::Code::LimitExceeded);
  auto full = to_rpc(SubmitError{SubmitError::kQueueFull, "the ring is full"});
  CHECK(full.code == rpc::Code::QueueFull);
  CHECK(full.message == "queue full: the ring is full; retry later");
  CHECK(*full.data.get_object().if_contains("retry_after_ms") == rpc::Value(kRetryAfterMs));
  auto session = to_rpc(SubmitError{SubmitError::kNoSession, "abc"});
  CHECK(session.code == rpc::Code::NotFound);
  CHECK(*session.data.get_object().if_contains("session_id") == rpc::Value("abc"));
  CHECK(to_rpc(SubmitError{SubmitError::kShuttingDown, {}}).code == rpc::Code::ShuttingDown);
  auto ceiling = to_rpc(SubmitError{SubmitError::kAboveCeiling, "\"timeout\" is above"});
  CHECK(ceiling.code == rpc::Code::InvalidParams);
  CHECK(ceiling.message == "invalid params: \"timeout\" is above");
  CHECK(to_rpc(SubmitError{SubmitError::kRecordsFull, "x"}).code == rpc::Code::LimitExceeded);
  auto state = to_rpc(JobError{JobError::kWrongState, "job a is not running", "exited"});
  CHECK(state.code == rpc::Code::WrongState);
  CHECK(*state.data.get_object().if_contains("state") == rpc::Value("exited"));
  auto missing = to_rpc(JobError{JobError::kNoJob, "j1", {}});
  CHECK(missing.code == rpc::Code::NotFound);
  CHECK_THAT(missing.message, Catch::Contains("no job with job_id j1"));
  CHECK(method_not_found("x").code == rpc::Code::MethodNotFound);
}
