// e2e: end-to-end throughput and latency of shell-pool against this machine's own spawn limit.
//
// One run measures three phases back to back, each for the same wall time:
//   (a) baseline: vfork()+execve("/bin/true")+waitpid() in a tight loop, the physical limit.
//   (b) daemon:   the real shell-poold on a private socket in a fresh temp dir, C clients
//                 (default 8), each a closed loop of `execute /bin/true` on its own connection.
//   (c) daemon:   the same with 1 client, so latency has no queueing in it.
// (b) and (c) speak JSON-RPC, or MessagePack-RPC with --msgpack.
// Yardsticks in the same run (bench/baselines.h): `seq N | xargs -P<cores> /bin/true`
// (ratio b/xargs) and the floor of one job, a Unix-socket plus an eventfd round trip
// between processes (added p50 per job over floor).
// Each row gives jobs/s and p50/p99 latency per job in µs (a: spawn to reaped; b, c: request
// sent to whole response line read). `ratio b/a` is the daemon's throughput as a fraction of
// the raw loop (1.00 = the daemon costs nothing); `added p50` (b - a) includes queueing when
// C exceeds the cores; `added p50 per job` (c - a) is what the daemon adds to one job.
// Compare only numbers from the same run. Exit status 1 when any job failed or the daemon
// misbehaved. See bench/README.md.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/json.hpp>

#include "bench/baselines.h"
#include "bench/bench_daemon.h"
#include "common/sys.h"
#include "common/unique_fd.h"
#include "frontend/codec/msgpack_codec.h"

extern char** environ;

namespace {

namespace json = boost::json;
namespace fs = std::filesystem;
using namespace sp::bench;

// The command of every phase: /bin/true, or with --echo `/bin/echo shell-pool`, whose
// output (a) captures through a pipe as the daemon does.
struct Command {
  bool echo = false;
  const char* path() const { return echo ? "/bin/echo" : "/bin/true"; }
  const char* args_json() const { return echo ? "[\"shell-pool\"]" : "[]"; }
  sp::rpc::Array args() const { return echo ? sp::rpc::Array{"shell-pool"} : sp::rpc::Array{}; }
};

struct Options {
  double seconds = 3;
  uint64_t count = 2000;
  int clients = 8;
  int repeat = 1;
  int warmup = 20;
  std::string daemon;
  std::vector<std::string> daemon_args;
  std::string json_file;
  bool detached = false;  // (b), (c): job_submit + job_wait instead of execute
  bool msgpack = false;   // (b), (c): MessagePack-RPC instead of JSON-RPC
  Command command;        // every phase's
};

// Bounds on waiting for the daemon, in seconds.
constexpr double kStartupTimeout = 10;   // for its socket to accept
constexpr double kStopTimeout = 10;      // after SIGTERM, before SIGKILL
constexpr int64_t kRequestTimeout = 30;  // for one response (SO_RCVTIMEO)

struct PhaseStats {
  uint64_t jobs = 0;      // completed with exit_code 0; errors and rejections are not jobs
  uint64_t errors = 0;    // failed jobs, bad responses, broken connections
  uint64_t rejected = 0;  // -32000 answers (queue full)
  double secs = 0, jobs_per_s = 0, p50_us = 0, p99_us = 0;
};

PhaseStats summarize(std::vector<uint64_t> lat_ns, double secs, uint64_t errors,
                     uint64_t rejected) {
  std::sort(lat_ns.begin(), lat_ns.end());
  const double jobs = static_cast<double>(lat_ns.size());
  return {lat_ns.size(),
          errors,
          rejected,
          secs,
          secs > 0 ? jobs / secs : 0,
          percentile(lat_ns, 50) / 1e3,
          percentile(lat_ns, 99) / 1e3};
}

// ---- (a) baseline --------------------------------------------------------------------------

// vfork shares our memory until the child execs, so the child calls only dup2, execve and
// _exit. Only called while this process has a single thread. out_fd >= 0: the child's stdout.
__attribute__((noinline)) pid_t spawn(const Command& cmd, int out_fd) {
  static char t[] = "/bin/true", e[] = "/bin/echo", word[] = "shell-pool";
  static char* true_argv[] = {t, nullptr};
  static char* echo_argv[] = {e, word, nullptr};
  char** argv = cmd.echo ? echo_argv : true_argv;
  pid_t pid = vfork();
  if (pid == 0) {
    if (out_fd >= 0 && dup2(out_fd, 1) < 0) _exit(127);
    execve(argv[0], argv, environ);
    _exit(127);
  }
  return pid;
}

// One spawn to reaped; with --echo its output read to EOF from a pipe first.
bool spawn_and_reap(const Command& cmd) {
  sp::UniqueFd rd, wr;
  if (cmd.echo) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return false;
    rd.reset(p[0]);
    wr.reset(p[1]);
  }
  pid_t pid = spawn(cmd, wr.get());
  if (pid < 0) return false;
  wr.reset();
  size_t got = 0;
  char buf[64];
  for (ssize_t n; rd && (n = sp::sys_raw([&] { return read(rd.get(), buf, sizeof buf); })) > 0;)
    got += size_t(n);
  int status = 0;
  auto r = sp::sys("waitpid", [&] { return waitpid(pid, &status, 0); });
  return r.ok() && WIFEXITED(status) && WEXITSTATUS(status) == 0 && got == (cmd.echo ? 11 : 0);
}

PhaseStats run_baseline(const Options& opt) {
  uint64_t errors = 0;
  for (int i = 0; i < opt.warmup; ++i) errors += spawn_and_reap(opt.command) ? 0 : 1;
  std::vector<uint64_t> lat;
  lat.reserve(opt.count ? opt.count : 1 << 14);
  const uint64_t t0 = now_ns();
  const uint64_t end = t0 + to_ns(opt.seconds);
  uint64_t t = t0;
  while (t < end && (opt.count == 0 || lat.size() < opt.count)) {
    const bool ok = spawn_and_reap(opt.command);
    const uint64_t t1 = now_ns();
    if (ok) {
      lat.push_back(t1 - t);
    } else {
      ++errors;
    }
    t = t1;
  }
  return summarize(std::move(lat), static_cast<double>(t - t0) / 1e9, errors, 0);
}

// ---- (b), (c) clients -----------------------------------------------------------------------

enum class Outcome { kOk, kRejected, kError };

// Checks one response line against the request id; on kError, *why says what was wrong.
Outcome check_response(std::string_view line, uint64_t id, const char** why) {
  unsigned char storage[4096];
  json::monotonic_resource mr(storage, sizeof storage);
  boost::system::error_code ec;
  const json::value v = json::parse(line, ec, &mr);
  const json::object* obj = ec ? nullptr : v.if_object();
  if (!obj) return *why = "not a JSON object", Outcome::kError;
  const json::value* rid = obj->if_contains("id");
  if (!rid || !rid->is_number() || rid->to_number<uint64_t>(ec) != id || ec) {
    return *why = "id does not match the request", Outcome::kError;
  }
  if (const json::value* err = obj->if_contains("error")) {
    const json::object* eo = err->if_object();
    const json::value* code = eo ? eo->if_contains("code") : nullptr;
    if (code && code->is_number() && code->to_number<int64_t>(ec) == -32000 && !ec) {
      return Outcome::kRejected;
    }
    return *why = "error response", Outcome::kError;
  }
  const json::value* result = obj->if_contains("result");
  const json::object* ro = result ? result->if_object() : nullptr;
  const json::value* exit_code = ro ? ro->if_contains("exit_code") : nullptr;
  if (!exit_code || !exit_code->is_number()) return *why = "no result.exit_code", Outcome::kError;
  if (exit_code->to_number<int64_t>(ec) != 0 || ec) return *why = "exit_code != 0", Outcome::kError;
  return Outcome::kOk;
}

// As check_response, for a MessagePack-RPC answer [1, msgid, error, result].
Outcome check_frame(std::string_view frame, uint64_t id, const char** why) {
  using sp::rpc::Value;
  auto v = sp::rpc::parse_msgpack(frame);
  if (!v || !v->is_array() || v->get_array().size() != 4)
    return *why = "not a MessagePack-RPC response", Outcome::kError;
  const sp::rpc::Array& a = v->get_array();
  if (a[1] != Value(int64_t(id))) return *why = "msgid does not match the request", Outcome::kError;
  if (!a[2].is_null()) {
    const Value* code = a[2].is_object() ? a[2].get_object().if_contains("code") : nullptr;
    if (code && *code == Value(-32000)) return Outcome::kRejected;
    return *why = "error response", Outcome::kError;
  }
  const Value* exit_code = a[3].is_object() ? a[3].get_object().if_contains("exit_code") : nullptr;
  if (!exit_code || *exit_code != Value(0)) return *why = "exit_code != 0", Outcome::kError;
  return Outcome::kOk;
}

std::optional<std::pair<size_t, size_t>> frame_end(std::string_view b) {
  sp::rpc::FrameScan s = sp::rpc::scan_frame(b);
  if (s.status == sp::rpc::FrameScan::kNeedMore) return std::nullopt;
  return std::pair{s.size, s.size};  // a bad frame: empty, which check_frame refuses
}

struct ClientResult {
  std::vector<uint64_t> lat_ns;
  uint64_t errors = 0;
  uint64_t rejected = 0;
  std::string first_error;
};

// Connects, warms up, waits at `start` with the others, then runs a closed loop until `stop`.
void client_loop(const std::string& socket, const Options& opt, std::barrier<>& start,
                 const std::atomic<bool>& stop, ClientResult& out) {
  auto fail = [&](std::string what) {
    ++out.errors;
    if (out.first_error.empty()) out.first_error = std::move(what);
  };
  std::optional<Conn> conn;
  if (auto fd = connect_unix(socket); !fd) {
    fail(fd.error().message());
  } else {
    const timeval tv{kRequestTimeout, 0};
    setsockopt(fd->get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    conn.emplace(std::move(*fd));
  }
  uint64_t id = 0;
  static std::atomic<uint64_t> job_seq{0};  // client-chosen job ids, unique in the run
  // One request/response; false when the connection is unusable.
  auto one = [&](bool measured) {
    char req[512];
    int n = 0;
    std::string frame;
    if (opt.msgpack) {
      using sp::rpc::Array, sp::rpc::Object;
      sp::rpc::append_msgpack(frame, Array{0, int64_t(++id), "execute",
                                           Array{Object{{"command", opt.command.path()},
                                                        {"args", opt.command.args()},
                                                        {"shell", false}}}});
    } else if (opt.detached) {  // both lines at once: the submit is answered first, then the wait
      const auto job = static_cast<unsigned long long>(job_seq.fetch_add(1));
      n = snprintf(req, sizeof req,
                   "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"method\":\"job_submit\",\"params\":"
                   "{\"command\":\"%s\",\"args\":%s,\"shell\":false,\"job_id\":\"b-%llu\"}}\n"
                   "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"method\":\"job_wait\",\"params\":"
                   "{\"job_id\":\"b-%llu\"}}\n",
                   static_cast<unsigned long long>(id + 1), opt.command.path(),
                   opt.command.args_json(), job, static_cast<unsigned long long>(id + 2), job);
      id += 2;
    } else {
      n = snprintf(req, sizeof req,
                   "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"method\":\"execute\",\"params\":"
                   "{\"command\":\"%s\",\"args\":%s,\"shell\":false}}\n",
                   static_cast<unsigned long long>(++id), opt.command.path(),
                   opt.command.args_json());
    }
    const uint64_t t0 = now_ns();
    const std::string_view sending =
        opt.msgpack ? std::string_view(frame) : std::string_view(req, static_cast<size_t>(n));
    if (auto st = conn->send_all(sending); !st) return fail(st.error().message()), false;
    if (opt.detached) {
      auto submitted = conn->read_line();
      if (!submitted) return fail(submitted.error().message()), false;
      if (submitted->find("\"result\"") == std::string_view::npos)
        return fail("job_submit: " + std::string(submitted->substr(0, 300))), false;
    }
    auto line = opt.msgpack ? conn->read_unit(frame_end) : conn->read_line();
    if (!line) return fail(line.error().message()), false;
    const uint64_t t1 = now_ns();
    const char* why = nullptr;
    switch (opt.msgpack ? check_frame(*line, id, &why) : check_response(*line, id, &why)) {
      case Outcome::kOk:
        if (measured) out.lat_ns.push_back(t1 - t0);
        break;
      case Outcome::kRejected:
        if (measured) ++out.rejected;
        // The queue is full: back off instead of hammering it in a loop.
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        break;
      case Outcome::kError:
        fail(std::string(why) + (opt.msgpack ? "" : ": " + std::string(line->substr(0, 300))));
        break;
    }
    return true;
  };
  bool alive = conn.has_value();
  for (int i = 0; alive && i < opt.warmup; ++i) alive = one(false);
  start.arrive_and_wait();
  while (alive && !stop.load(std::memory_order_relaxed)) alive = one(true);
}

PhaseStats run_clients(const std::string& socket, const Options& opt, int clients, double secs,
                       std::string& first_error) {
  std::barrier<> start(clients + 1);
  std::atomic<bool> stop{false};
  std::vector<ClientResult> results(clients);
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back(client_loop, std::cref(socket), std::cref(opt), std::ref(start),
                         std::cref(stop), std::ref(results[i]));
  }
  start.arrive_and_wait();
  const uint64_t t0 = now_ns();
  std::this_thread::sleep_for(std::chrono::nanoseconds(to_ns(secs)));
  stop.store(true);
  for (auto& t : threads) t.join();
  const double wall = static_cast<double>(now_ns() - t0) / 1e9;
  std::vector<uint64_t> lat;
  uint64_t errors = 0, rejected = 0;
  for (auto& r : results) {
    lat.insert(lat.end(), r.lat_ns.begin(), r.lat_ns.end());
    errors += r.errors;
    rejected += r.rejected;
    if (first_error.empty()) first_error = r.first_error;
  }
  return summarize(std::move(lat), wall, errors, rejected);
}

// ---- CPU per job, by who spends it ---------------------------------------------------------

double cpu_seconds(int who) {  // RUSAGE_SELF (all our threads) or RUSAGE_CHILDREN (reaped)
  rusage ru{};
  getrusage(who, &ru);
  auto secs = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) / 1e6; };
  return secs(ru.ru_utime) + secs(ru.ru_stime);
}

// CPU seconds so far of this process (the clients' threads) and of the daemon's roles;
// a worker's reaped children are the commands it ran.
struct CpuSnapshot {
  double clients = 0, frontend = 0, workers = 0, commands = 0, supervisor = 0;
};

CpuSnapshot cpu_snapshot(pid_t supervisor) {
  CpuSnapshot s;
  s.clients = cpu_seconds(RUSAGE_SELF);
  for (const Proc& p : daemon_processes(supervisor)) {
    const Cpu c = process_cpu(p.pid);
    if (p.role == "supervisor") {
      s.supervisor += c.self;
    } else if (p.role == "frontend") {
      s.frontend += c.self;
    } else {
      s.workers += c.self;
      s.commands += c.children;
    }
  }
  return s;
}

// ---- a whole run ----------------------------------------------------------------------------

struct Run {
  PhaseStats a, b, c;
  double ratio_b = 0, ratio_c = 0;  // jobs/s of b (c) over a
  double added_b = 0, added_c = 0;  // p50 of b (c) minus p50 of a, µs
  // The yardsticks beside (a): xargs -P<cores>, and the floor's two round trips.
  double xargs_jobs_s = 0, socket_rtt_us = 0, eventfd_rtt_us = 0;
  double ratio_b_xargs = 0;  // jobs/s of b over xargs
  double added_c_floor = 0;  // added p50 per job over the floor (one of each round trip)
  // CPU per job in µs: (a)'s spawner and its /bin/true; (b)'s clients, roles and commands.
  double cpu_raw_spawner = 0, cpu_raw_commands = 0;
  double cpu_clients = 0, cpu_frontend = 0, cpu_workers = 0, cpu_commands = 0, cpu_supervisor = 0;
  bool ok = true;           // no job errors, daemon stopped on SIGTERM
  std::string diagnostics;  // what went wrong, for stderr after the table

  void derive() {
    ratio_b = a.jobs_per_s > 0 ? b.jobs_per_s / a.jobs_per_s : 0;
    ratio_c = a.jobs_per_s > 0 ? c.jobs_per_s / a.jobs_per_s : 0;
    added_b = b.p50_us - a.p50_us;
    added_c = c.p50_us - a.p50_us;
    ratio_b_xargs = xargs_jobs_s > 0 ? b.jobs_per_s / xargs_jobs_s : 0;
    const double floor_us = socket_rtt_us + eventfd_rtt_us;
    added_c_floor = floor_us > 0 ? added_c / floor_us : 0;
  }
};

// (a), with its CPU per spawn: the spawner's own and its /bin/true's (warm-up included).
void run_raw(const Options& opt, Run& run) {
  const double self0 = cpu_seconds(RUSAGE_SELF), children0 = cpu_seconds(RUSAGE_CHILDREN);
  run.a = run_baseline(opt);
  const double per_spawn = run.a.jobs ? 1e6 / double(run.a.jobs + uint64_t(opt.warmup)) : 0;
  run.cpu_raw_spawner = (cpu_seconds(RUSAGE_SELF) - self0) * per_spawn;
  run.cpu_raw_commands = (cpu_seconds(RUSAGE_CHILDREN) - children0) * per_spawn;
}

// Beside (a), before the daemon starts: xargs over as many jobs as (a) ran
// (at least 500), and 20,000 of each round trip.
void run_yardsticks(Run& run) {
  run.xargs_jobs_s =
      xargs_jobs_per_s(std::max<uint64_t>(run.a.jobs, 500), std::thread::hardware_concurrency());
  run.socket_rtt_us = unix_socket_round_trip(20000).p50_us;
  run.eventfd_rtt_us = eventfd_round_trip(20000).p50_us;
}

// Phases (b) and (c) against a fresh daemon; error only when nothing could be measured.
sp::Status run_daemon_phases(const Options& opt, const std::string& exe, Run& run) {
  const char* base = getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/shell-pool-e2e.XXXXXX";
  if (!mkdtemp(tmpl.data())) return sp::Error{errno, "mkdtemp " + tmpl};
  const TempDir dir{tmpl};
  const std::string socket = dir.path + "/sock";
  Daemon daemon;
  if (auto st = daemon.start(exe, opt.daemon_args, socket, dir.path + "/daemon.log"); !st) {
    return st;
  }
  if (auto st = daemon.wait_ready(socket, kStartupTimeout); !st) {
    fputs(daemon.log_tail().c_str(), stderr);
    return st;
  }
  std::string first_error;
  const CpuSnapshot before = cpu_snapshot(daemon.pid());
  run.b = run_clients(socket, opt, opt.clients, run.a.secs, first_error);
  const CpuSnapshot after = cpu_snapshot(daemon.pid());
  const double per_job = run.b.jobs ? 1e6 / double(run.b.jobs) : 0;
  run.cpu_clients = (after.clients - before.clients) * per_job;
  run.cpu_frontend = (after.frontend - before.frontend) * per_job;
  run.cpu_workers = (after.workers - before.workers) * per_job;
  run.cpu_commands = (after.commands - before.commands) * per_job;
  run.cpu_supervisor = (after.supervisor - before.supervisor) * per_job;
  run.c = run_clients(socket, opt, 1, run.a.secs, first_error);
  auto stopped = daemon.stop(kStopTimeout);
  run.ok = run.a.errors + run.b.errors + run.c.errors == 0 && stopped.ok();
  run.derive();
  std::string& d = run.diagnostics;
  if (!first_error.empty()) d += "e2e: first error: " + first_error + "\n";
  if (!stopped) d += "e2e: " + stopped.error().message() + "\n";
  if (stopped && *stopped != "exit status 0") {
    d += "e2e: warning: daemon ended with " + *stopped + " (expected 0 on SIGTERM)\n";
  }
  if (!run.ok) d += daemon.log_tail();
  return {};
}

void print_run(const char* title, const Run& r, int clients) {
  printf("%s\n", title);
  printf("%-24s %8s %10s %11s %11s %7s %9s\n", "phase", "jobs", "jobs/s", "p50 µs", "p99 µs",
         "errors", "rejected");
  const std::string b_name = "(b) daemon, " + std::to_string(clients) + " clients";
  const std::pair<const char*, const PhaseStats*> rows[] = {
      {"(a) raw vfork+exec loop", &r.a}, {b_name.c_str(), &r.b}, {"(c) daemon, 1 client", &r.c}};
  for (const auto& [name, s] : rows) {
    printf("%-24s %8llu %10.1f %10.0f %10.0f %7llu %9llu\n", name,
           static_cast<unsigned long long>(s->jobs), s->jobs_per_s, s->p50_us, s->p99_us,
           static_cast<unsigned long long>(s->errors),
           static_cast<unsigned long long>(s->rejected));
  }
  printf("ratio b/a = %.2f   (daemon jobs/s over raw jobs/s; 1.00 = no overhead)\n", r.ratio_b);
  printf("ratio c/a = %.2f   (1 client)\n", r.ratio_c);
  printf("added p50 = %.0f µs   (b - a; includes queueing of %d clients)\n", r.added_b, clients);
  printf("added p50 per job = %.0f µs   (c - a; 1 client, no queueing; p99 of c: %.0f µs)\n",
         r.added_c, r.c.p99_us);
  printf("xargs -P%u: %.1f jobs/s   ratio b/xargs = %.2f   (the shell one-liner; goal >= 1.1)\n",
         std::thread::hardware_concurrency(), r.xargs_jobs_s, r.ratio_b_xargs);
  printf(
      "floor = %.1f µs (Unix-socket round trip %.1f + eventfd round trip %.1f, p50)   "
      "added p50 per job / floor = %.2f   (goal <= 1.2)\n",
      r.socket_rtt_us + r.eventfd_rtt_us, r.socket_rtt_us, r.eventfd_rtt_us, r.added_c_floor);
  const double raw = r.cpu_raw_spawner + r.cpu_raw_commands;
  const double total =
      r.cpu_clients + r.cpu_frontend + r.cpu_workers + r.cpu_commands + r.cpu_supervisor;
  printf(
      "CPU per job, µs: (a) %.0f (spawner %.0f, /bin/true %.0f); (b) %.0f = %.2f x (a): "
      "clients %.0f, frontend %.0f, workers %.0f, their commands %.0f, supervisor %.0f\n\n",
      raw, r.cpu_raw_spawner, r.cpu_raw_commands, total, raw > 0 ? total / raw : 0, r.cpu_clients,
      r.cpu_frontend, r.cpu_workers, r.cpu_commands, r.cpu_supervisor);
}

// Medians field by field over the runs (ratios: median of each run's own ratio); errors and
// rejections are totals, so no failure hides behind a median.
Run median_run(const std::vector<Run>& runs) {
  auto med = [&](auto get) {
    std::vector<double> v;
    for (const Run& r : runs) v.push_back(static_cast<double>(get(r)));
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  };
  Run m;
  for (PhaseStats Run::*ph : {&Run::a, &Run::b, &Run::c}) {
    for (double PhaseStats::*f :
         {&PhaseStats::secs, &PhaseStats::jobs_per_s, &PhaseStats::p50_us, &PhaseStats::p99_us}) {
      (m.*ph).*f = med([&](const Run& r) { return (r.*ph).*f; });
    }
    (m.*ph).jobs = static_cast<uint64_t>(med([&](const Run& r) { return (r.*ph).jobs; }));
    for (const Run& r : runs) (m.*ph).errors += (r.*ph).errors;
    for (const Run& r : runs) (m.*ph).rejected += (r.*ph).rejected;
  }
  for (double Run::*f :
       {&Run::ratio_b, &Run::ratio_c, &Run::added_b, &Run::added_c, &Run::xargs_jobs_s,
        &Run::socket_rtt_us, &Run::eventfd_rtt_us, &Run::ratio_b_xargs, &Run::added_c_floor,
        &Run::cpu_raw_spawner, &Run::cpu_raw_commands, &Run::cpu_clients, &Run::cpu_frontend,
        &Run::cpu_workers, &Run::cpu_commands, &Run::cpu_supervisor}) {
    m.*f = med([&](const Run& r) { return r.*f; });
  }
  m.ok = std::all_of(runs.begin(), runs.end(), [](const Run& r) { return r.ok; });
  return m;
}

json::object to_json(const PhaseStats& s) {
  return {{"jobs", s.jobs},    {"errors", s.errors},         {"rejected", s.rejected},
          {"seconds", s.secs}, {"jobs_per_s", s.jobs_per_s}, {"p50_us", s.p50_us},
          {"p99_us", s.p99_us}};
}

json::object to_json(const Run& r) {
  return {{"a", to_json(r.a)},
          {"b", to_json(r.b)},
          {"c", to_json(r.c)},
          {"ratio_b_a", r.ratio_b},
          {"ratio_c_a", r.ratio_c},
          {"added_p50_us", r.added_b},
          {"added_p50_per_job_us", r.added_c},
          {"xargs_jobs_per_s", r.xargs_jobs_s},
          {"ratio_b_xargs", r.ratio_b_xargs},
          {"socket_round_trip_us", r.socket_rtt_us},
          {"eventfd_round_trip_us", r.eventfd_rtt_us},
          {"added_p50_per_job_over_floor", r.added_c_floor},
          {"cpu_us_per_job",
           {{"raw_spawner", r.cpu_raw_spawner},
            {"raw_commands", r.cpu_raw_commands},
            {"clients", r.cpu_clients},
            {"frontend", r.cpu_frontend},
            {"workers", r.cpu_workers},
            {"commands", r.cpu_commands},
            {"supervisor", r.cpu_supervisor}}},
          {"ok", r.ok}};
}

// Every run and the medians to --json; false when the file could not be written.
bool write_json(const Options& opt, const std::string& exe, const std::vector<Run>& runs,
                const Run& med) {
  json::array all;
  for (const Run& r : runs) all.push_back(to_json(r));
  json::array extra(opt.daemon_args.begin(), opt.daemon_args.end());
  const json::object doc{{"daemon", exe},
                         {"daemon_args", std::move(extra)},
                         {"command", opt.command.path()},
                         {"seconds", opt.seconds},
                         {"count", opt.count},
                         {"clients", opt.clients},
                         {"runs", std::move(all)},
                         {"median", to_json(med)},
                         {"ok", med.ok}};
  std::ofstream out(opt.json_file);
  out << json::serialize(doc) << "\n";
  return bool(out);
}

// --daemon, else shell-poold next to this binary, else in ../supervisor/ (the build tree).
}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app{"shell-pool end-to-end benchmark: raw spawn loop vs. the daemon, same run"};
  app.option_defaults()->always_capture_default();
  app.add_option("--seconds", opt.seconds, "wall time per phase (a stops earlier at --count)")
      ->check(CLI::PositiveNumber);
  app.add_option("--count", opt.count,
                 "phase (a) stops after this many spawns (0: no cap); "
                 "(b) and (c) then run as long as (a) took");
  app.add_option("--clients", opt.clients, "concurrent clients in phase (b)")
      ->check(CLI::Range(1, 1024));
  app.add_option("--daemon", opt.daemon,
                 "shell-poold binary (default: next to e2e, then ../supervisor/)");
  app.add_option("--daemon-arg", opt.daemon_args,
                 "extra daemon argument, repeatable; write --daemon-arg=--flag for dashes")
      ->allow_extra_args(false);
  app.add_option("--repeat", opt.repeat, "run the a/b/c sequence K times, then print medians")
      ->check(CLI::Range(1, 1000));
  app.add_option("--warmup", opt.warmup, "unmeasured spawns (a) / requests per client (b, c)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--json", opt.json_file, "also write all numbers to this file as JSON");
  app.add_flag("--detached", opt.detached,
               "(b), (c): each job is a job_submit and a job_wait (sent together) instead of an "
               "execute");
  app.add_flag("--msgpack", opt.msgpack, "(b), (c): speak MessagePack-RPC instead of JSON-RPC")
      ->excludes("--detached");
  app.add_flag("--echo", opt.command.echo,
               "every phase runs `/bin/echo shell-pool` instead of /bin/true, and (a) captures "
               "its output through a pipe: (c) - (a) is then what the daemon adds to a "
               "spawn-and-capture");
  CLI11_PARSE(app, argc, argv);
  setvbuf(stdout, nullptr, _IOLBF, 0);

  const std::string exe = find_daemon(opt.daemon);
  if (exe.empty()) {
    fprintf(stderr, "e2e: %s\n",
            opt.daemon.empty() ? "no shell-poold next to e2e or in ../supervisor/; pass --daemon"
                               : "--daemon is not an executable file");
    return 2;
  }
  printf("daemon %s, %.1f s or %llu spawns per phase, %d clients in (b), %s, %s\n\n", exe.c_str(),
         opt.seconds, static_cast<unsigned long long>(opt.count), opt.clients,
         opt.msgpack ? "MessagePack-RPC" : "JSON-RPC",
         opt.command.echo ? "/bin/echo shell-pool, output captured" : "/bin/true");
  std::vector<Run> runs;
  for (int k = 1; k <= opt.repeat; ++k) {
    Run run;
    run_raw(opt, run);
    run_yardsticks(run);
    if (auto st = run_daemon_phases(opt, exe, run); !st) {
      fprintf(stderr, "e2e: %s\n", st.error().message().c_str());
      return 1;
    }
    runs.push_back(run);
    char title[64];
    snprintf(title, sizeof title, "run %d/%d (%.2f s per phase)", k, opt.repeat, run.a.secs);
    print_run(title, run, opt.clients);
    fputs(run.diagnostics.c_str(), stderr);
  }
  const Run med = median_run(runs);
  if (opt.repeat > 1) {
    const std::string title =
        "median of " + std::to_string(opt.repeat) + " runs (errors and rejected: totals)";
    print_run(title.c_str(), med, opt.clients);
  }
  if (!opt.json_file.empty() && !write_json(opt, exe, runs, med)) {
    fprintf(stderr, "e2e: cannot write %s\n", opt.json_file.c_str());
    return 1;
  }
  if (!med.ok) fprintf(stderr, "e2e: FAILED: some jobs failed or the daemon misbehaved\n");
  return med.ok ? 0 : 1;
}
