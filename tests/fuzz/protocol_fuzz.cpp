// libFuzzer target: the JSON-RPC request parser, params validation and
// serialization. Any input must parse without crashing, and every text the
// layer emits must be valid JSON (it goes straight to clients).
#include <boost/json.hpp>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/text.h"
#include "frontend/codec/json_codec.h"
#include "frontend/params/params.h"

namespace {

void require_json(const std::string& text) {
  boost::system::error_code ec;
  boost::json::parse(text, ec);
  if (ec) std::abort();  // we would have sent a client invalid JSON
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  using namespace sp;
  using namespace sp::rpc;
  Line line = parse_line(in);
  if (line.error) require_json(error_text(nullptr, *line.error));
  for (const Call& call : line.calls) {
    if (call.error) {
      require_json(error_text(call.id, *call.error));
      continue;
    }
    auto exec = parse_exec_params(call.params);
    if (auto* e = std::get_if<RpcError>(&exec)) require_json(error_text(call.id, *e));
    auto session = parse_session_create_params(call.params);
    if (auto* e = std::get_if<RpcError>(&session)) require_json(error_text(call.id, *e));
    // Detached jobs and strategies (a DAG is checked whole: cycles, names).
    auto check = [&](const auto& parsed) {
      if (auto* e = std::get_if<RpcError>(&parsed)) require_json(error_text(call.id, *e));
    };
    for (shm::PlanKind kind :
         {shm::PlanKind::kChain, shm::PlanKind::kParallel, shm::PlanKind::kDag})
      check(parse_plan_params(kind, call.params));
    check(parse_job_submit_params(call.params));
    check(parse_job_output_params(call.params));
    check(parse_job_wait_params(call.params));
    check(parse_job_signal_params(call.params, true));
    check(parse_job_list_params(call.params));
    require_json(result_text(call.id, call.params));
  }
  // Command output: any bytes, in any chunking, become one valid JSON string.
  std::string carry, text;
  size_t cut = size ? data[0] % (size + 1) : 0;
  append_utf8_sanitized(text, in.substr(0, cut), carry, false);
  append_utf8_sanitized(text, in.substr(cut), carry, true);
  std::string quoted;
  append_string(quoted, text);
  require_json(quoted);
  std::string b64;
  append_base64(b64, in);
  if (decode_base64(b64) != std::string(in)) std::abort();
  return 0;
}
