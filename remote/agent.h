// Agent: a non-blocking client of an SSH agent (the ssh-agent protocol:
// each message a 32-bit length, a type byte and its body) that lists the
// agent's keys and has it sign, one request at a time, over a Unix socket
// the remote worker's loop watches. libssh2 1.10's own agent calls block on
// that socket (and lose their place after a partial write), so an agent
// that hangs would stop every host's connections; through this client a
// login waits for the agent as it waits for the server, bounded by the
// host's connect_timeout_ms.
//
// Replies are bounded by kMaxReply (the agent protocol's own 256 KiB) and
// the keys taken from a list by kMaxKeys; more is an error or ignored.
//
// Owned by one Connection; used from the remote worker's single thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"

namespace sp::remote {

class Agent {
 public:
  enum class State { kIdle, kBusy, kDone, kFailed };
  struct Key {
    std::string blob;  // the public key, in SSH wire format
    std::string comment;
  };

  // Connects to the agent's socket at `path`: an error's text, or "".
  std::string connect(const std::string& path);
  int fd() const { return fd_.get(); }

  // Start a request; pump() moves it on as the socket allows.
  void ask_keys();
  void ask_signature(std::string_view key_blob, std::string_view data);
  State pump();
  State state() const { return state_; }
  bool wants_write() const { return state_ == State::kBusy && out_at_ < out_.size(); }
  // Back to kIdle, for the next request.
  void reset();

  // The answer of a done request; nullopt when the agent refused or sent
  // something else (error() says which).
  std::optional<std::vector<Key>> keys();
  std::optional<std::string> signature();  // the signature blob's bytes, without its type
  const std::string& error() const { return error_; }

  static constexpr size_t kMaxReply = 256 * 1024;
  static constexpr size_t kMaxKeys = 64;

 private:
  void request(std::string body);
  State fail(std::string why);

  UniqueFd fd_;
  State state_ = State::kIdle;
  std::string out_;  // the request being sent
  size_t out_at_ = 0;
  std::string in_;  // the reply being read, its length first
  std::string error_;
};

}  // namespace sp::remote
