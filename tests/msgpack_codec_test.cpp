// The MessagePack-RPC codec (frontend/codec/msgpack_codec.h): finding a
// frame's end in a stream cut anywhere, the depth bound, requests and
// notifications into Calls, answers and stream chunks out.
#include "frontend/codec/msgpack_codec.h"

#include <catch2/catch.hpp>
#include <string>

using namespace sp::rpc;

namespace {

std::string pack(const Value& v) {
  std::string out;
  append_msgpack(out, v);
  return out;
}

}  // namespace

TEST_CASE("scan_frame finds a frame's end however the stream is cut") {
  const std::string f = pack(Array{0, 7, "execute",
                                   Array{Object{{"command", "echo"},
                                                {"stdin", Bytes{std::string(70000, '\0')}},
                                                {"n", -5},
                                                {"x", 0.5}}}});
  for (size_t cut = 0; cut < f.size(); cut += cut < 64 ? 1 : 997)
    CHECK(scan_frame(std::string_view(f).substr(0, cut)).status == FrameScan::kNeedMore);
  FrameScan s = scan_frame(f + pack(Array{2, "x", Array{}}));  // the next frame follows
  CHECK(s.status == FrameScan::kComplete);
  CHECK(s.size == f.size());
  auto v = parse_msgpack(f);
  REQUIRE(v);
  CHECK(pack(*v) == f);
}

TEST_CASE("a FrameScanner fed a byte at a time goes on where it stopped") {
  // Many small values: rescanning from the frame's start on every byte would
  // take 40,000 x 40,000 steps.
  const std::string f =
      pack(Array{0, 1, "execute", Array{Array(40000, Value(7))}}) + pack(Array{2, "x", Array{}});
  FrameScanner scanner;
  size_t cut = 1;
  FrameScan s;
  for (; cut <= f.size(); ++cut)
    if ((s = scanner.scan(std::string_view(f).substr(0, cut))).status != FrameScan::kNeedMore)
      break;
  REQUIRE(s.status == FrameScan::kComplete);
  CHECK(s.size == f.size() - 5);  // the notification that follows is 5 bytes
  CHECK(cut == s.size);           // complete with its last byte, not later
  // Then the next frame, from its own start.
  s = scanner.scan(std::string_view(f).substr(s.size));
  CHECK(s.status == FrameScan::kComplete);
  CHECK(s.size == 5);
  // A bad byte met after a resume is refused as in one scan, and the scanner starts over.
  CHECK(scanner.scan("\x92\xc0").status == FrameScan::kNeedMore);
  CHECK(scanner.scan("\x92\xc0\xc1").status == FrameScan::kInvalid);
  CHECK(scanner.scan("\xc0").status == FrameScan::kComplete);
}

TEST_CASE("nesting is bounded, and bytes MessagePack never uses are refused") {
  std::string ok(kMaxDepth, char(0x91));
  ok += char(0xc0);
  CHECK(scan_frame(ok).status == FrameScan::kComplete);
  std::string deep(kMaxDepth + 1, char(0x91));
  deep += char(0xc0);
  CHECK(scan_frame(deep).status == FrameScan::kInvalid);
  CHECK(scan_frame("\x92\xc1").status == FrameScan::kInvalid);
  CHECK(scan_frame("\xd4\x01\x02").status == FrameScan::kInvalid);  // ext
  // A count larger than any frame only ever needs more bytes: nothing is allocated for it.
  CHECK(scan_frame("\xdd\xff\xff\xff\xff\xc0").status == FrameScan::kNeedMore);
  std::string why;
  CHECK_FALSE(parse_msgpack(pack(Array{"ok"}) + "x", &why));
  CHECK(why == "bytes after the value");
  CHECK_FALSE(parse_msgpack("\xa2\xc3\x28", &why));  // a str that is not UTF-8
  CHECK_THAT(why, Catch::Contains("not UTF-8"));
}

TEST_CASE("requests and notifications become calls; params in the forms clients send") {
  MsgpackCodec codec;
  Object params{{"command", "true"}};
  for (const Value& p : {Value(params), Value(Array{params})}) {
    Line l = codec.decode(pack(Array{0, 9, "execute", p}));
    REQUIRE(l.calls.size() == 1);
    CHECK_FALSE(l.calls[0].error);
    CHECK(l.calls[0].id == Value(9));
    CHECK(l.calls[0].params == Value(params));
    CHECK_FALSE(l.calls[0].notification);
  }
  Line none = codec.decode(pack(Array{0, 1, "health", Array{}}));
  CHECK(none.calls[0].params.is_null());
  Line note = codec.decode(pack(Array{2, "job_cancel", Array{Object{{"job_id", "3"}}}}));
  CHECK(note.calls[0].notification);
  CHECK(note.calls[0].method == "job_cancel");
  Line big_id = codec.decode(pack(Array{0, uint64_t(1) << 32, "health", Array{}}));
  REQUIRE(big_id.calls[0].error);
  CHECK(big_id.calls[0].error->code == Code::InvalidRequest);
  Line garbage = codec.decode("\xc1");
  REQUIRE(garbage.error);
  CHECK(garbage.error->code == Code::ParseError);
}

TEST_CASE("answers, errors and stream chunks are MessagePack-RPC frames") {
  MsgpackCodec codec;
  CHECK(*parse_msgpack(codec.result(5, Object{{"ok", true}})) ==
        Value(Array{1, 5, nullptr, Object{{"ok", true}}}));
  RpcError e{Code::QueueFull, "queue full", Object{{"retry_after_ms", 50}}};
  CHECK(*parse_msgpack(codec.error(5, e)) ==
        Value(Array{1, 5,
                    Object{{"code", -32000},
                           {"message", "queue full"},
                           {"data", Object{{"retry_after_ms", 50}}}},
                    nullptr}));
  // A chunk is appended to what the buffer holds, its bytes borrowed.
  std::string out = "before";
  const std::string text = "x";
  codec.chunk(out, 5, Object{{"data", Bytes::borrow(text)}});
  REQUIRE(out.starts_with("before"));
  CHECK(*parse_msgpack(std::string_view(out).substr(6)) ==
        Value(Array{2, "stream", Array{5, Object{{"data", Bytes{"x"}}}}}));
  CHECK(codec.terminator().empty());
  CHECK(starts_msgpack(0x94));
  CHECK_FALSE(starts_msgpack('{'));
}
