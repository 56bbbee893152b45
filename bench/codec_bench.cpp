// Micro-benchmarks of the codecs (Google Benchmark): what the frontend spends
// in user space on a call that spawns nothing, apart from its syscalls.
//
// BM_Decode*: a `health` request read into a Call. BM_Build: an answer of
// health's shape (about 60 members, three levels) built as an rpc::Value.
// BM_Encode*: that answer written as one frame. BM_ChunkMsgpack: one 64 KiB
// chunk of execute_stream output framed into a connection's buffer, as
// Connections::partial does it; BM_ChunkMsgpackCopied: the same with the
// copies the frontend made before.
#include <benchmark/benchmark.h>

#include <string>

#include "frontend/codec/json_codec.h"
#include "frontend/codec/msgpack_codec.h"
#include "frontend/codec/value.h"

namespace {

using sp::rpc::Array;
using sp::rpc::Object;
using sp::rpc::Value;

Object worker(unsigned i) {
  return Object{{"index", i},           {"state", "serving"},
                {"pid", 14049u + i},    {"running", 0u},
                {"incarnation", 1u},    {"ready", true},
                {"last_death", "none"}, {"heartbeat_age_ms", uint64_t(42)}};
}

// The members and nesting of Frontend::health's answer, with typical values.
Object health_shape() {
  Object counters;
  for (const char* k :
       {"submitted", "started", "finished", "failed", "timed_out", "cancelled", "lost", "requeued",
        "worker_restarts", "frontend_restarts", "boot_failures", "hang_kills", "deaths_by_signal",
        "deaths_by_exit", "deaths_by_oom", "recycles", "oom_kills"})
    counters.emplace_back(k, uint64_t(5));
  Object remote = worker(128);
  remote["max_concurrent"] = 256u;
  remote["hosts"] = 0u;
  remote["host_capacity"] = 64u;
  return Object{
      {"status", "ok"},
      {"uptime_ms", uint64_t(237822)},
      {"workers", Array{worker(0), worker(1)}},
      {"remote_worker", std::move(remote)},
      {"frontend", Object{{"incarnation", 1u}, {"last_death", "none"}}},
      {"jobs",
       Object{
           {"queued", 0u}, {"running", 0u}, {"queue_capacity", 1024u}, {"max_concurrent", 128u}}},
      {"connections", 1u},
      {"metrics_listen", nullptr},
      {"output_buffered_bytes", uint64_t(0)},
      {"output_budget", uint64_t(268435456)},
      {"output_budget_holds", uint64_t(0)},
      {"sessions", 0u},
      {"services", Object{{"count", 0u}, {"capacity", 64u}}},
      {"detached", Object{{"jobs", 0u},
                          {"unfinished", 0u},
                          {"capacity", 1024u},
                          {"spool_used_bytes", uint64_t(0)},
                          {"spool_bytes", uint64_t(268435456)}}},
      {"config", Object{{"generation", 1u},
                        {"loaded_at_ms", uint64_t(1796531154442)},
                        {"reloads_ok", 0u},
                        {"reloads_failed", 0u}}},
      {"isolation", "cgroup-v1"},
      {"isolation_note", "cgroups for jobs with a processes or memory_bytes limit"},
      {"counters", std::move(counters)}};
}

void BM_DecodeJson(benchmark::State& state) {
  const sp::rpc::JsonCodec codec;
  const std::string frame = R"({"jsonrpc":"2.0","id":1,"method":"health"})";
  for (auto _ : state) benchmark::DoNotOptimize(codec.decode(frame));
}
BENCHMARK(BM_DecodeJson);

void BM_DecodeMsgpack(benchmark::State& state) {
  const sp::rpc::MsgpackCodec codec;
  std::string frame = "\x94";  // [0, 1, "health", []]
  frame += '\0';
  frame += "\x01\xa6health\x90";
  for (auto _ : state) benchmark::DoNotOptimize(codec.decode(frame));
}
BENCHMARK(BM_DecodeMsgpack);

void BM_Build(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(health_shape());
}
BENCHMARK(BM_Build);

template <typename Codec>
void BM_Encode(benchmark::State& state) {
  const Codec codec;
  const Value answer = health_shape();
  for (auto _ : state) benchmark::DoNotOptimize(codec.result(Value(1), answer));
}
BENCHMARK(BM_Encode<sp::rpc::JsonCodec>)->Name("BM_EncodeJson");
BENCHMARK(BM_Encode<sp::rpc::MsgpackCodec>)->Name("BM_EncodeMsgpack");

// A 64 KiB chunk (an output ring's worth) of text, as MessagePack bin.
void BM_ChunkMsgpack(benchmark::State& state) {
  const sp::rpc::MsgpackCodec codec;
  const std::string text(64 << 10, 'x');
  std::string out;  // a connection's buffer, kept between chunks
  for (auto _ : state) {
    Object chunk{{"type", "stdout"}, {"data", sp::rpc::Bytes::borrow(text)}};
    out.clear();
    codec.chunk(out, Value(1), chunk);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
}
BENCHMARK(BM_ChunkMsgpack);

// The same chunk copied on the way, as before the frontend framed bytes
// straight from the ring: into the chunk's own string, into a frame of its
// own, and that frame into the buffer (the baseline for BM_ChunkMsgpack).
void BM_ChunkMsgpackCopied(benchmark::State& state) {
  const sp::rpc::MsgpackCodec codec;
  const std::string text(64 << 10, 'x');
  std::string out;
  for (auto _ : state) {
    Object chunk{{"type", "stdout"}, {"data", sp::rpc::Bytes{std::string(text)}}};
    std::string frame;
    codec.chunk(frame, Value(1), chunk);
    out.clear();
    out += frame;
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
}
BENCHMARK(BM_ChunkMsgpackCopied);

}  // namespace

BENCHMARK_MAIN();
