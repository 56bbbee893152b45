// libFuzzer target: the MessagePack-RPC frame scanner and decoder. Any
// input must scan and decode without crashing or reading past its end; a
// frame found complete must decode or be refused with a reason; what the
// codec writes must scan as one whole frame and read back the same; the
// scanner fed in pieces must find what one scan of the whole finds; and
// every decoded value must also make valid JSON (a JSON-RPC client may be
// shown what a MessagePack-RPC one stored).
#include <algorithm>
#include <boost/json.hpp>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "frontend/codec/json_codec.h"
#include "frontend/codec/msgpack_codec.h"

namespace {

using namespace sp::rpc;

// `text` is exactly one frame, which reads back into a value that writes
// the same bytes again.
void require_frame(const std::string& text) {
  FrameScan s = scan_frame(text);
  if (s.status != FrameScan::kComplete || s.size != text.size()) std::abort();
  auto v = parse_msgpack(text);
  if (!v) std::abort();
  std::string again;
  append_msgpack(again, *v);
  if (again != text) std::abort();
}

void require_json(const Value& v) {
  std::string text;
  append_value(text, v);
  boost::system::error_code ec;
  boost::json::parse_options deep;
  deep.max_depth = 2 * kMaxDepth;  // its default (32) is below ours
  boost::json::parse(text, ec, {}, deep);
  if (ec) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const MsgpackCodec codec;
  FrameScan s = scan_frame(in);
  // Fed in pieces (the input's first byte picks their size), a FrameScanner
  // finds what one scan of the whole finds.
  FrameScanner pieces;
  FrameScan last;
  const size_t step = size ? 1 + data[0] % 7 : 1;
  for (size_t seen = 0; seen < size;) {
    seen = std::min(size, seen + step);
    last = pieces.scan(in.substr(0, seen));
    if (last.status != FrameScan::kNeedMore) break;
  }
  if (size && (last.status != s.status || last.size != s.size)) std::abort();
  if (s.status == FrameScan::kComplete) {
    if (s.size == 0 || s.size > in.size()) std::abort();
    // A prefix of a complete frame is never complete.
    if (scan_frame(in.substr(0, s.size - 1)).status == FrameScan::kComplete) std::abort();
    std::string why;
    auto v = parse_msgpack(in.substr(0, s.size), &why);
    if (!v && why.empty()) std::abort();
    if (v) {
      std::string text;
      append_msgpack(text, *v);
      require_frame(text);
      require_json(*v);
    }
    Line line = codec.decode(in.substr(0, s.size));
    if (line.error) require_frame(codec.error(nullptr, *line.error));
    for (const Call& call : line.calls) {
      if (call.error) {
        require_frame(codec.error(call.id, *call.error));
        continue;
      }
      // A result as deep as the request (params echoed), and a stream chunk
      // (the daemon's own, shallow: [2, "stream", [msgid, {...}]]).
      require_frame(codec.result(call.id, call.params));
      std::string chunk;
      codec.chunk(chunk, call.id, Object{{"data", Bytes::borrow(call.method)}});
      require_frame(chunk);
    }
  } else if (s.status == FrameScan::kInvalid && s.why.empty()) {
    std::abort();
  }
  return 0;
}
