// The MessagePack-RPC codec (the msgpack-rpc spec, as Neovim speaks it):
//   request       [0, msgid, method, params]
//   response      [1, msgid, error, result]
//   notification  [2, method, params]
// Frames are MessagePack objects back to back, with nothing between them:
// scan_frame() finds where the first one ends (or that more must come),
// checking its nesting and lengths before anything is allocated; decode()
// reads a whole frame into rpc::Values (str to a string, which must be
// UTF-8; bin to Bytes; map keys str or bin). `params` may be the map, a
// one-element array holding it (what most clients send), or an empty array
// (no params). A msgid is any uint32. There are no batches.
//
// Streaming calls (execute_stream) send each chunk as the notification
// [2, "stream", [msgid, chunk]] before the call's response.
//
// Encoding and scanning use msgpuck (Debian's libmsgpuck-dev). Pure
// functions; thread-compatible.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "frontend/codec/rpc.h"

namespace sp::rpc {

struct FrameScan {
  enum Status { kNeedMore, kComplete, kInvalid } status = kNeedMore;
  size_t size = 0;  // kComplete: the frame's length
  std::string why;  // kInvalid: what is wrong (too deep, a byte MessagePack never uses...)
};
FrameScan scan_frame(std::string_view in);

// scan_frame for a frame that arrives in pieces: it goes on from the last
// value it saw whole, so a frame of many small values fed a few bytes at a
// time costs its size once, not once per piece (what one connection keeps).
class FrameScanner {
 public:
  // As scan_frame(in); `in` starts where the frame does and holds at least
  // what the last call saw. After kComplete or kInvalid the next call scans
  // a new frame from its start.
  FrameScan scan(std::string_view in);

 private:
  size_t at_ = 0;  // the frame's bytes up to the value that was cut short
  size_t depth_ = 0;
  uint64_t left_[kMaxDepth + 1] = {1};  // values still to come at each nesting depth
};

// One whole frame (as scan_frame found it) as a Value, or nullopt with the
// reason in `why`.
std::optional<Value> parse_msgpack(std::string_view frame, std::string* why = nullptr);
// Appends `v` as MessagePack: integers as the smallest int/uint, doubles as
// float64, strings as str, Bytes as bin, objects as maps.
void append_msgpack(std::string& out, const Value& v);

class MsgpackCodec final : public Codec {
 public:
  Line decode(std::string_view frame) const override;
  std::string result(const Value& id, const Value& r) const override;
  std::string error(const Value& id, const RpcError& e) const override;
  std::string batch(const std::vector<std::string>& members) const override;
  void chunk(std::string& out, const Value& id, const Value& v) const override;
  std::string_view terminator() const override { return {}; }
  bool carries_bytes() const override { return true; }
};

// The first byte of a MessagePack-RPC connection: an array (fixarray,
// array16, array32). JSON-RPC starts with '{', '[' or whitespace.
inline bool starts_msgpack(unsigned char first) {
  return (first >= 0x90 && first <= 0x9f) || first == 0xdc || first == 0xdd;
}

}  // namespace sp::rpc
