#include "remote/resolver.h"

#include <netdb.h>
#include <sys/eventfd.h>

#include <cstring>
#include <thread>

#include "common/sys.h"

namespace sp::remote {

Resolver::~Resolver() {
  if (!state_) return;
  std::lock_guard lock(state_->mu);
  state_->stop = true;
  state_->cv.notify_all();
}

Status Resolver::start() {
  state_ = std::make_shared<State>();
  auto fd = new_fd("eventfd", [] { return ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); });
  if (!fd) return fd.error();
  state_->event = std::move(*fd);
  try {
    std::thread(run, state_).detach();  // ends when stop is set and its lookup returned
  } catch (const std::system_error& e) {
    return Error{e.code().value(), "start the resolver thread"};
  }
  return {};
}

int Resolver::fd() const {
  return state_ ? state_->event.get() : -1;
}

void Resolver::ask(uint64_t token, const std::string& name, uint16_t port) {
  std::lock_guard lock(state_->mu);
  if (state_->questions.size() >= kMaxWaiting) {
    Answer a;
    a.token = token;
    a.error = "too many names are being looked up at once";
    state_->answers.push_back(std::move(a));
    uint64_t one = 1;
    (void)sys_raw([&] { return ::write(state_->event.get(), &one, sizeof one); });
    return;
  }
  state_->questions.push_back({token, name, port});
  state_->cv.notify_one();
}

std::vector<Resolver::Answer> Resolver::take() {
  uint64_t n;
  (void)sys_raw([&] { return ::read(state_->event.get(), &n, sizeof n); });
  std::lock_guard lock(state_->mu);
  return std::exchange(state_->answers, {});
}

Resolver::Answer Resolver::look_up(const Question& q) {
  Answer a;
  a.token = q.token;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(q.port);
  int rc = ::getaddrinfo(q.name.c_str(), port.c_str(), &hints, &res);
  if (rc != 0 || !res) {
    a.error = std::string("cannot resolve ") + q.name + ": " + ::gai_strerror(rc);
  } else {
    std::memcpy(&a.addr, res->ai_addr, res->ai_addrlen);
    a.len = res->ai_addrlen;
  }
  if (res) ::freeaddrinfo(res);
  return a;
}

void Resolver::run(std::shared_ptr<State> s) {
  std::unique_lock lock(s->mu);
  for (;;) {
    s->cv.wait(lock, [&] { return s->stop || !s->questions.empty(); });
    if (s->stop) return;
    Question q = std::move(s->questions.front());
    s->questions.pop_front();
    lock.unlock();
    Answer a = look_up(q);
    lock.lock();
    s->answers.push_back(std::move(a));
    uint64_t one = 1;
    (void)sys_raw([&] { return ::write(s->event.get(), &one, sizeof one); });
  }
}

}  // namespace sp::remote
