// Connections: the frontend's transport. Accepts clients on the listening
// socket (checking their uid), picks each one's dialect by its first byte
// (a MessagePack array: MessagePack-RPC; anything else: JSON-RPC), cuts
// what it sends into frames (lines, or MessagePack objects), decodes each
// with its codec and hands every call to the dispatcher with the Reply that
// answers it; encodes answers and writes them, holding what a client has
// not read yet.
//
// Bounds (docs/protocol.md): a connection's unsent answers
// (kMaxBacklogBytes) and its unanswered requests (--max-inflight) stop its
// reading until they drop, so one read cannot start more work than that; a
// batch's answers are held to kMaxBacklogBytes; lines and MessagePack
// frames to --max-line; connections to --max-connections. MessagePack has
// no line ends to find the next frame by: after a frame that cannot be
// read, or one too long, the connection is answered and closed.
//
// Used from the frontend's single thread. Owns the client sockets and the
// listening fd it was given (the supervisor keeps its own copy).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "frontend/codec/json_codec.h"
#include "frontend/codec/msgpack_codec.h"
#include "frontend/codec/rpc.h"

namespace sp::frontend {

inline constexpr size_t kMaxBacklogBytes = 4u << 20;  // unsent answers: stop reading requests
                                                      // and draining its streams beyond this
// A connection's output buffer, once all written, keeps its memory up to this
// for the next answers and chunks (a stream's are framed into it); a larger
// one (a backlog that reached kMaxBacklogBytes, a big answer) is let go.
inline constexpr size_t kKeptBufferBytes = 1u << 20;

// Collects the answers of one batch; sent as one frame when all are in.
struct Batch {
  uint64_t conn_id = 0;
  std::vector<std::string> answers;
  uint64_t held_bytes = 0;  // of answers, counted in Connections::unsent() until sent
  size_t remaining = 0;
};

// Where the answer to one call goes. Every Reply the dispatcher is given is
// answered exactly once (answer, fail or drop), now or later.
struct Reply {
  uint64_t conn_id = 0;  // 0: the client is gone
  rpc::Value id;
  bool silent = false;  // a notification
  bool bytes = false;   // the dialect carries bytes: output goes as rpc::Bytes
  std::shared_ptr<Batch> batch;
};

class Connections {
 public:
  struct Limits {
    uint32_t max_connections = 1024;
    uint64_t max_line_bytes = 1ull << 20;
    uint32_t max_inflight = 256;  // unanswered requests per connection
    std::vector<uint32_t> allow_uids;
  };
  struct Handlers {
    std::function<void(rpc::Call&, Reply)> dispatch;
    std::function<void(uint64_t conn_id)> closed;   // its client is gone
    std::function<void(uint64_t conn_id)> drained;  // its backlog fell below the bound
  };

  // `epoll_fd`: the loop's; connections are registered with their id as tag
  // (ids from kFirstConnId on). `listen_fd`: owned from now on.
  Connections(Limits limits, int epoll_fd, UniqueFd listen_fd, Handlers handlers);
  ~Connections();
  static constexpr uint64_t kListenTag = 1;     // the listening socket's epoll tag
  static constexpr uint64_t kFirstConnId = 16;  // tags below are the loop's own
  // Registers the listening socket with the loop.
  Status start();

  int listen_fd() const { return listen_.get(); }
  void accept_all();
  void stop_listening();  // draining: no new clients
  // No new requests (the frontend stops); answers are still written.
  void stop_reading() { stopping_ = true; }
  void on_event(uint64_t conn_id, uint32_t events);
  // Writes what was answered since the last call (and handles the request
  // lines that waited for room meanwhile).
  void flush_dirty();

  // Answers. A Reply whose client is gone (or a notification) is counted
  // as answered and nothing is built.
  void answer(Reply& r, const rpc::Value& result);
  void fail(Reply& r, const rpc::RpcError& err);
  void drop(Reply& r);
  // One of several answers to the same call (execute_stream's chunks); the
  // call stays unanswered.
  void partial(const Reply& r, const rpc::Value& result);
  // Whether anyone would read an answer to `r` (its client is connected and
  // it is not a notification): otherwise nothing needs building.
  bool wanted(const Reply& r) const;

  // A batch is answered whole, so its answers are held to kMaxBacklogBytes:
  // a member answered after they passed it gets a -32002 instead.
  static bool batch_full(const Reply& r) {
    return r.batch && r.batch->held_bytes >= kMaxBacklogBytes;
  }
  // Its client has kMaxBacklogBytes of answers unread: hold its work.
  bool backlogged(uint64_t conn_id) const;
  // The connection of `r` has more unanswered requests than --max-inflight
  // (a batch's members are read at once, so they are held to it here).
  bool over_inflight(const Reply& r) const;
  rpc::RpcError inflight_error() const;

  // The peer of `conn_id` is the daemon's own uid or root (not only an
  // --allow-uid one).
  bool privileged(uint64_t conn_id) const;
  // A live reload: bounds apply to what comes next (connections open stay).
  void set_limits(Limits limits) { limits_ = std::move(limits); }

  size_t size() const { return conns_.size(); }
  uint64_t unsent() const { return unsent_; }  // bytes of answers not yet written
  bool any_unsent() const;

 private:
  struct Conn;
  Conn* conn(uint64_t id) const;
  bool allowed(uid_t uid) const;
  bool takes_requests(const Conn& c) const;
  void read_from(Conn& c);
  void handle_input(Conn& c);  // by the connection's dialect:
  void handle_lines(Conn& c);
  void handle_frames(Conn& c);
  void handle_line(Conn& c, std::string_view line);
  // A MessagePack stream that cannot go on: `err` is answered, the rest of
  // the input dropped, and the connection closes once its answers are out.
  void give_up(Conn& c, const rpc::RpcError& err);
  const rpc::Codec& codec_of(uint64_t conn_id) const;
  void send(uint64_t conn_id, std::string text);
  void finish(Reply& r, std::string text);  // the answer (maybe empty: none) to r
  void flush(Conn& c);
  void update_events(Conn& c);
  void request_finished(Conn& c);
  void close(uint64_t id);

  Limits limits_;
  int epoll_;
  UniqueFd listen_;
  const rpc::JsonCodec json_;
  const rpc::MsgpackCodec msgpack_;
  Handlers handlers_;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  std::vector<uint64_t> dirty_;  // connections with answers to write
  uint64_t next_id_ = kFirstConnId;
  uint64_t unsent_ = 0;         // answers not yet written, all connections (and held batches)
  bool accept_paused_ = false;  // out of fds: the listening fd is out of epoll
  bool stopping_ = false;
  std::unordered_set<uid_t> refused_uids_;  // logged once each (bounded)
};

}  // namespace sp::frontend
