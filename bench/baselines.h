// The machine's own yardsticks for the daemon, measured in the same run as
// it: a shell one-liner's spawn rate (`seq N | xargs -P<cores> -I{}
// /bin/true`), and the floor of what the architecture adds to one job: a
// Unix-socket round trip (client and frontend) plus an eventfd round trip
// (frontend and worker), each between two processes. Header-only, like
// bench_daemon.h.
#pragma once

#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "bench/bench_daemon.h"

extern char** environ;

namespace sp::bench {

// jobs/s of `seq n | xargs -P<procs> -I{} /bin/true`, its own start included;
// 0 when it failed.
inline double xargs_jobs_per_s(uint64_t n, unsigned procs) {
  const std::string line =
      "seq " + std::to_string(n) + " | xargs -P" + std::to_string(procs) + " -I{} /bin/true";
  std::vector<char*> argv{const_cast<char*>("/bin/sh"), const_cast<char*>("-c"),
                          const_cast<char*>(line.c_str()), nullptr};
  const uint64_t t0 = now_ns();
  pid_t pid = 0;
  if (posix_spawn(&pid, "/bin/sh", nullptr, nullptr, argv.data(), environ) != 0) return 0;
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 0;
  return double(n) / (double(now_ns() - t0) / 1e9);
}

struct RoundTrip {
  double p50_us = 0, p99_us = 0;
};

// `rounds` round trips of one byte between this process and a child that
// answers each: `ask` sends to it, `answer` is what the child runs per round
// (false: stop). The child is reaped before it returns.
template <typename Ask, typename Answer>
RoundTrip round_trips(int rounds, Ask ask, Answer answer) {
  pid_t pid = fork();
  if (pid < 0) return {};
  if (pid == 0) {
    while (answer()) {
    }
    _exit(0);
  }
  std::vector<uint64_t> lat;
  lat.reserve(size_t(rounds));
  for (int i = 0; i < rounds; ++i) {
    const uint64_t t0 = now_ns();
    if (!ask()) break;
    lat.push_back(now_ns() - t0);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  std::sort(lat.begin(), lat.end());
  return {percentile(lat, 50) / 1e3, percentile(lat, 99) / 1e3};
}

// One byte there and back over a Unix stream socket (what a client and the
// frontend exchange per request, at its smallest).
inline RoundTrip unix_socket_round_trip(int rounds) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return {};
  const UniqueFd mine(sv[0]), theirs(sv[1]);
  char b = 'x';
  auto ask = [&] { return ::write(mine.get(), &b, 1) == 1 && ::read(mine.get(), &b, 1) == 1; };
  auto answer = [&] {
    return ::read(theirs.get(), &b, 1) == 1 && ::write(theirs.get(), &b, 1) == 1;
  };
  return round_trips(rounds, ask, answer);
}

// A wake-up there and back over two eventfds (the frontend rings a worker's
// doorbell, the worker rings the frontend's).
inline RoundTrip eventfd_round_trip(int rounds) {
  const UniqueFd to_child(::eventfd(0, EFD_CLOEXEC)), to_parent(::eventfd(0, EFD_CLOEXEC));
  if (to_child.get() < 0 || to_parent.get() < 0) return {};
  uint64_t v = 1;
  auto ask = [&] {
    const uint64_t one = 1;
    return ::write(to_child.get(), &one, sizeof one) == sizeof one &&
           ::read(to_parent.get(), &v, sizeof v) == sizeof v;
  };
  auto answer = [&] {
    return ::read(to_child.get(), &v, sizeof v) == sizeof v &&
           ::write(to_parent.get(), &v, sizeof v) == sizeof v;
  };
  return round_trips(rounds, ask, answer);
}

}  // namespace sp::bench
