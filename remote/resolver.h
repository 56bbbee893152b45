// Resolver: host names looked up off the remote worker's loop. One thread
// runs getaddrinfo for the names asked (a connection to an address never
// asks) and posts each answer, which the loop collects with take() when the
// eventfd fd() is readable. Bounded: at most kMaxWaiting lookups wait, more
// are answered at once with a failure.
//
// ask() and take() are for the loop's thread only. The lookup thread shares
// a State with the Resolver (a shared_ptr): a Resolver destroyed while a
// lookup hangs does not wait for it; the thread ends once it returns.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace sp::remote {

class Resolver {
 public:
  struct Answer {
    uint64_t token = 0;
    sockaddr_storage addr{};  // the first address; with port set
    socklen_t len = 0;        // 0: the lookup failed (error says why)
    std::string error;
  };
  static constexpr size_t kMaxWaiting = 256;

  Resolver() = default;
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  Status start();
  int fd() const;
  // Looks `name` up for port `port`; the answer carries `token`.
  void ask(uint64_t token, const std::string& name, uint16_t port);
  std::vector<Answer> take();

 private:
  struct Question {
    uint64_t token;
    std::string name;
    uint16_t port;
  };
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Question> questions;  // GUARDED_BY(mu)
    std::vector<Answer> answers;     // GUARDED_BY(mu)
    bool stop = false;               // GUARDED_BY(mu)
    UniqueFd event;                  // set before the thread starts, then only read
  };
  static void run(std::shared_ptr<State> s);
  static Answer look_up(const Question& q);

  std::shared_ptr<State> state_;
};

}  // namespace sp::remote
