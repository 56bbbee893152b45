// limits: what the daemon costs where it spawns nothing or moves bytes, against this
// machine's own limits, both dialects (JSON-RPC and MessagePack-RPC) in one run:
//   health  `health` in closed loops, 1 and C clients, against a raw Unix-socket server
//           (one process, epoll) that answers each request with the daemon's own answer,
//           byte for byte: ratio = daemon requests/s over raw requests/s (goal >= 0.9).
//   stream  execute_stream of N bytes of text against the same pipeline read from a local
//           pipe: ratio = local time over daemon time (goals: JSON >= 0.35, MessagePack
//           >= 0.6). The client decodes every chunk, as a real one must.
//   memory  the Pss of all the daemon's processes (shared memory counted once) idle, with
//           Q jobs queued, after they ran, and at the peak of a flood of F bytes of output
//           (execute_stream read as it comes, and execute keeping its capped share).
// Compare only numbers from the same run. Exit status 1 when anything failed. See
// bench/README.md.
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "bench/bench_daemon.h"
#include "common/unique_fd.h"
#include "frontend/codec/json_codec.h"
#include "frontend/codec/msgpack_codec.h"

extern char** environ;

namespace {

using namespace sp::bench;
using sp::rpc::Array, sp::rpc::Object, sp::rpc::Value;

struct Options {
  double seconds = 2;
  int clients = 8;
  std::string method = "health";  // of the closed loops
  uint64_t stream_bytes = 256ull << 20;
  int queued = 10000;
  uint64_t flood_bytes = 1ull << 30;
  std::string daemon;
  std::vector<std::string> daemon_args;
};

constexpr double kStartupTimeout = 10, kStopTimeout = 10;
constexpr int64_t kRequestTimeout = 60;  // s, for one answer (SO_RCVTIMEO)
constexpr int kPerConnection = 250;      // queued jobs per connection: under --max-inflight 256

// One dialect's framing: requests out, answers (or stream chunks) in.
struct Dialect {
  bool msgpack = false;

  const char* name() const { return msgpack ? "MessagePack-RPC" : "JSON-RPC"; }

  std::string request(uint64_t id, const char* method, Object params) const {
    std::string out;
    if (msgpack) {
      sp::rpc::append_msgpack(out, Array{0, id, method, Array{std::move(params)}});
      return out;
    }
    out = "{\"jsonrpc\":\"2.0\",\"id\":" + std::to_string(id) + ",\"method\":\"" + method +
          "\",\"params\":";
    sp::rpc::append_value(out, std::move(params));
    return out + "}\n";
  }

  sp::Result<std::string_view> read(Conn& c) const {
    if (!msgpack) return c.read_line();
    return c.read_unit([](std::string_view b) -> std::optional<std::pair<size_t, size_t>> {
      const sp::rpc::FrameScan s = sp::rpc::scan_frame(b);
      if (s.status == sp::rpc::FrameScan::kNeedMore) return std::nullopt;
      return std::pair{s.size, s.size};  // an invalid frame: what parse() then refuses
    });
  }

  // The answer's result, or a chunk's payload; *last: it was the answer that ends the call.
  std::optional<Value> payload(std::string_view unit, bool* last) const {
    auto v = msgpack ? sp::rpc::parse_msgpack(unit) : sp::rpc::parse_value(unit);
    if (!v) return std::nullopt;
    if (msgpack) {
      if (!v->is_array() || v->get_array().size() < 3) return std::nullopt;
      Array& a = v->get_array();
      if (a[0] == Value(2)) {  // [2, "stream", [msgid, chunk]]
        *last = false;
        if (!a[2].is_array() || a[2].get_array().size() != 2) return std::nullopt;
        return std::move(a[2].get_array()[1]);
      }
      *last = true;
      if (a.size() != 4 || !a[2].is_null()) return std::nullopt;
      return std::move(a[3]);
    }
    Value* result = v->is_object() ? v->get_object().if_contains("result") : nullptr;
    if (!result) return std::nullopt;
    const Value* type = result->is_object() ? result->get_object().if_contains("type") : nullptr;
    *last = !type || *type == Value("exit");
    return std::move(*result);
  }
};

sp::Result<Conn> connect(const std::string& socket) {
  auto fd = connect_unix(socket);
  if (!fd) return fd.error();
  const timeval tv{kRequestTimeout, 0};
  setsockopt(fd->get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return Conn(std::move(*fd));
}

// The result of one call on a fresh connection (not for streams).
sp::Result<Value> call(const std::string& socket, const Dialect& d, const char* method,
                       Object params = {}) {
  auto conn = connect(socket);
  if (!conn) return conn.error();
  if (auto st = conn->send_all(d.request(1, method, std::move(params))); !st) return st.error();
  auto unit = d.read(*conn);
  if (!unit) return unit.error();
  bool last = false;
  auto v = d.payload(*unit, &last);
  if (!v) return sp::Error{0, std::string(method) + ": " + std::string(unit->substr(0, 300))};
  return std::move(*v);
}

// ---- health against a raw request/response server --------------------------------------

struct Rate {
  double per_s = 0, p50_us = 0, p99_us = 0;
};

// C closed loops, one per connection, each sending `request` and reading one answer per
// round for `secs`; an error (a broken connection, an answer that is not one) ends the run.
sp::Result<Rate> closed_loops(std::vector<Conn> conns, const Dialect& d, const std::string& request,
                              double secs) {
  const int n = static_cast<int>(conns.size());
  std::barrier<> start(n + 1);
  std::atomic<bool> stop{false};
  std::vector<std::vector<uint64_t>> lat(n);
  std::vector<std::string> errors(n);
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      while (!stop.load(std::memory_order_relaxed)) {
        const uint64_t t0 = now_ns();
        auto sent = conns[i].send_all(request);
        auto unit = sent ? d.read(conns[i]) : sp::Result<std::string_view>(sent.error());
        if (!unit || unit->empty()) {
          errors[i] = unit ? "an empty answer" : unit.error().message();
          return;
        }
        lat[i].push_back(now_ns() - t0);
      }
    });
  }
  start.arrive_and_wait();
  const uint64_t t0 = now_ns();
  std::this_thread::sleep_for(std::chrono::nanoseconds(to_ns(secs)));
  stop = true;
  for (auto& t : threads) t.join();
  const double wall = static_cast<double>(now_ns() - t0) / 1e9;
  std::vector<uint64_t> all;
  for (int i = 0; i < n; ++i) {
    if (!errors[i].empty()) return sp::Error{0, errors[i]};
    all.insert(all.end(), lat[i].begin(), lat[i].end());
  }
  std::sort(all.begin(), all.end());
  return Rate{static_cast<double>(all.size()) / wall, percentile(all, 50) / 1e3,
              percentile(all, 99) / 1e3};
}

// The raw server's side, in a forked child: epoll over `fds`; every `request_size` bytes
// read from a connection are answered with `answer`. Ends when every connection closed.
[[noreturn]] void serve_raw(std::vector<int> fds, size_t request_size, const std::string& answer) {
  const int ep = epoll_create1(0);
  for (size_t i = 0; i < fds.size(); ++i) {
    epoll_event ev{EPOLLIN, {.u64 = i}};
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
  }
  std::vector<size_t> pending(fds.size(), 0);
  size_t open = fds.size();
  char buf[65536];
  while (open > 0) {
    epoll_event evs[64];
    const int n = epoll_wait(ep, evs, 64, -1);
    for (int k = 0; k < n; ++k) {
      const size_t i = evs[k].data.u64;
      const ssize_t got = ::read(fds[i], buf, sizeof buf);
      if (got <= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], nullptr);
        --open;
        continue;
      }
      for (pending[i] += static_cast<size_t>(got); pending[i] >= request_size;
           pending[i] -= request_size) {
        if (::send(fds[i], answer.data(), answer.size(), MSG_NOSIGNAL) < 0) _exit(1);
      }
    }
  }
  _exit(0);
}

// `clients` closed loops against a raw server answering `request` with `answer`.
sp::Result<Rate> raw_loops(int clients, const Dialect& d, const std::string& request,
                           const std::string& answer, double secs) {
  std::vector<Conn> conns;
  std::vector<sp::UniqueFd> theirs;
  for (int i = 0; i < clients; ++i) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
      return sp::Error{errno, "socketpair"};
    conns.emplace_back(sp::UniqueFd(sv[0]));
    theirs.emplace_back(sv[1]);
  }
  const pid_t pid = fork();  // no other thread runs yet
  if (pid < 0) return sp::Error{errno, "fork"};
  if (pid == 0) {
    conns.clear();
    std::vector<int> fds;
    for (auto& fd : theirs) fds.push_back(fd.get());
    serve_raw(fds, request.size(), answer);
  }
  theirs.clear();
  auto rate = closed_loops(std::move(conns), d, request, secs);  // closes ours: the child ends
  ::waitpid(pid, nullptr, 0);
  return rate;
}

struct HealthRow {
  int clients = 0;
  Rate raw, daemon;
  double ratio() const { return raw.per_s > 0 ? daemon.per_s / raw.per_s : 0; }
};

sp::Result<std::vector<HealthRow>> run_health(const std::string& socket, const Dialect& d,
                                              const Options& opt) {
  const std::string request = d.request(1, opt.method.c_str(), {});
  std::string answer;  // the daemon's own answer, framing included, for the raw server
  {
    auto conn = connect(socket);
    if (!conn) return conn.error();
    if (auto st = conn->send_all(request); !st) return st.error();
    auto unit = d.read(*conn);
    if (!unit) return unit.error();
    answer = std::string(*unit) + (d.msgpack ? "" : "\n");
  }
  std::vector<HealthRow> rows;
  for (int clients : {1, opt.clients}) {
    HealthRow row{clients, {}, {}};
    auto raw = raw_loops(clients, d, request, answer, opt.seconds);
    if (!raw) return raw.error();
    std::vector<Conn> conns;
    for (int i = 0; i < clients; ++i) {
      auto c = connect(socket);
      if (!c) return c.error();
      conns.push_back(std::move(*c));
    }
    auto daemon = closed_loops(std::move(conns), d, request, opt.seconds);
    if (!daemon) return daemon.error();
    row.raw = *raw;
    row.daemon = *daemon;
    rows.push_back(row);
  }
  return rows;
}

// ---- execute_stream against a local pipe ------------------------------------------------

std::string text_command(uint64_t bytes) {
  return "yes 'shell-pool streams plain text, line after line' | head -c " + std::to_string(bytes);
}

// Seconds to read all of `command`'s stdout from a pipe, as a local program would.
sp::Result<double> local_pipe_seconds(const std::string& command, uint64_t expect) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return sp::Error{errno, "pipe2"};
  sp::UniqueFd rd(p[0]), wr(p[1]);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, wr.get(), 1);
  std::vector<char*> argv{const_cast<char*>("/bin/sh"), const_cast<char*>("-c"),
                          const_cast<char*>(command.c_str()), nullptr};
  const uint64_t t0 = now_ns();
  pid_t pid = 0;
  const int e = posix_spawn(&pid, "/bin/sh", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (e != 0) return sp::Error{e, "posix_spawn /bin/sh"};
  wr.reset();
  std::vector<char> buf(1 << 18);
  uint64_t total = 0;
  for (ssize_t n; (n = sp::sys_raw([&] { return ::read(rd.get(), buf.data(), buf.size()); })) > 0;)
    total += static_cast<uint64_t>(n);
  int status = 0;
  ::waitpid(pid, &status, 0);
  const double secs = static_cast<double>(now_ns() - t0) / 1e9;
  if (total != expect || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return sp::Error{0, "local pipe: " + std::to_string(total) + " bytes"};
  return secs;
}

// An execute_stream of `command`, every chunk decoded; its stdout bytes and whether it
// exited 0.
struct Streamed {
  uint64_t bytes = 0;
  bool exited_zero = false;
};

sp::Result<Streamed> stream(Conn& conn, const Dialect& d, const std::string& command) {
  if (auto st = conn.send_all(d.request(1, "execute_stream", Object{{"command", command}})); !st)
    return st.error();
  Streamed out;
  for (bool last = false; !last;) {
    auto unit = d.read(conn);
    if (!unit) return unit.error();
    auto p = d.payload(*unit, &last);
    if (!p || !p->is_object()) return sp::Error{0, "execute_stream: not a chunk or an answer"};
    const Object& o = p->get_object();
    const Value* data = o.if_contains("data");
    if (data && data->is_bytes()) out.bytes += data->get_bytes().size();
    if (data && data->is_string()) out.bytes += data->get_string().size();
    if (last)
      out.exited_zero = o.if_contains("exit_code") && *o.if_contains("exit_code") == Value(0);
  }
  return out;
}

// CPU seconds so far of the daemon's frontend and of its workers (not the commands they
// ran): what the daemon spends on a stream, apart from its producer and its reader.
struct RoleCpu {
  double frontend = 0, workers = 0;
};

RoleCpu role_cpu(pid_t supervisor) {
  RoleCpu r;
  for (const Proc& p : daemon_processes(supervisor))
    if (p.role != "supervisor")
      (p.role == "frontend" ? r.frontend : r.workers) += process_cpu(p.pid).self;
  return r;
}

struct StreamRow {
  double local_s = 0, daemon_s = 0;
  RoleCpu cpu;  // during the daemon's stream
  double ratio() const { return daemon_s > 0 ? local_s / daemon_s : 0; }
};

sp::Result<StreamRow> run_stream(const std::string& socket, pid_t daemon, const Dialect& d,
                                 const Options& opt) {
  const std::string command = text_command(opt.stream_bytes);
  StreamRow row;
  auto local = local_pipe_seconds(command, opt.stream_bytes);
  if (!local) return local.error();
  row.local_s = *local;
  auto conn = connect(socket);
  if (!conn) return conn.error();
  const RoleCpu cpu0 = role_cpu(daemon);
  const uint64_t t0 = now_ns();
  auto got = stream(*conn, d, command);
  if (!got) return got.error();
  row.daemon_s = static_cast<double>(now_ns() - t0) / 1e9;
  const RoleCpu cpu1 = role_cpu(daemon);
  row.cpu = {cpu1.frontend - cpu0.frontend, cpu1.workers - cpu0.workers};
  if (got->bytes != opt.stream_bytes || !got->exited_zero)
    return sp::Error{0, "execute_stream: " + std::to_string(got->bytes) + " bytes"};
  return row;
}

}  // namespace

namespace {

// ---- memory ----------------------------------------------------------------------------

uint64_t daemon_pss_kib(pid_t supervisor) {
  uint64_t kib = 0;
  for (const Proc& p : daemon_processes(supervisor)) kib += pss_kib(p.pid);
  return kib;
}

// The largest daemon Pss seen, sampled every 20 ms by a thread of its own until stop().
class PeakPss {
 public:
  explicit PeakPss(pid_t supervisor)
      : thread_([this, supervisor] {
          while (!stop_) {
            peak_ = std::max<uint64_t>(peak_, daemon_pss_kib(supervisor));
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
          }
        }) {}
  uint64_t stop() {
    stop_ = true;
    thread_.join();
    return peak_;
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> peak_{0};
  std::thread thread_;
};

struct MemoryRow {
  uint64_t idle_kib = 0, queued_kib = 0, after_kib = 0, stream_peak_kib = 0, execute_peak_kib = 0;
  int64_t queued = 0;  // jobs.queued in `health` when queued_kib was taken
};

// jobs.queued of the daemon's `health`.
sp::Result<int64_t> queued_jobs(const std::string& socket) {
  auto h = call(socket, Dialect{}, "health");
  if (!h) return h.error();
  const Value* jobs = h->is_object() ? h->get_object().if_contains("jobs") : nullptr;
  const Value* q = jobs && jobs->is_object() ? jobs->get_object().if_contains("queued") : nullptr;
  if (!q || !q->is_number()) return sp::Error{0, "health: no jobs.queued"};
  return q->is_int64() ? q->get_int64() : static_cast<int64_t>(q->get_uint64());
}

// opt.queued jobs that wait for `gate` to exist, sent in lines of kPerConnection per
// connection; Pss while they wait (as many as can are queued), then after they ran.
sp::Status queue_and_drain(const std::string& socket, pid_t pid, const std::string& gate,
                           const Options& opt, MemoryRow& row) {
  const Dialect d;
  const std::string wait = "while [ ! -e " + gate + " ]; do sleep 0.01; done";
  std::vector<Conn> conns;
  std::vector<int> counts;
  for (int left = opt.queued; left > 0; left -= kPerConnection) {
    auto c = connect(socket);
    if (!c) return c.error();
    std::string lines;
    counts.push_back(std::min(left, kPerConnection));
    for (int i = 1; i <= counts.back(); ++i)
      lines += d.request(uint64_t(i), "execute", Object{{"command", wait}});
    if (auto st = c->send_all(lines); !st) return st;
    conns.push_back(std::move(*c));
  }
  const uint64_t end = now_ns() + to_ns(30);
  for (;;) {  // until all but the two running are queued, or 30 s
    auto q = queued_jobs(socket);
    if (!q) return q.error();
    row.queued = *q;
    if (*q >= opt.queued - 2 || now_ns() > end) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  row.queued_kib = daemon_pss_kib(pid);
  std::ofstream{gate};
  for (size_t i = 0; i < conns.size(); ++i) {
    for (int k = 0; k < counts[i]; ++k) {
      auto unit = d.read(conns[i]);
      if (!unit) return unit.error();
      bool last = false;
      auto r = d.payload(*unit, &last);
      const Value* code = r && r->is_object() ? r->get_object().if_contains("exit_code") : nullptr;
      if (!code || *code != Value(0))
        return sp::Error{0, "a queued job: " + std::string(unit->substr(0, 300))};
    }
  }
  row.after_kib = daemon_pss_kib(pid);
  return {};
}

// A daemon of its own for memory: 2 jobs at a time, room for opt.queued more.
sp::Result<MemoryRow> run_memory(const std::string& exe, const Options& opt, const TempDir& dir) {
  std::vector<std::string> args = opt.daemon_args;
  args.insert(args.end(), {"--workers", "2", "--max-concurrent", "2", "--queue-size",
                           std::to_string(opt.queued + 16)});
  const std::string socket = dir.path + "/memory.sock";
  Daemon daemon;
  if (auto st = daemon.start(exe, args, socket, dir.path + "/memory.log"); !st) return st.error();
  if (auto st = daemon.wait_ready(socket, kStartupTimeout); !st) return st.error();
  MemoryRow row;
  if (auto h = call(socket, Dialect{}, "health"); !h) return h.error();
  row.idle_kib = daemon_pss_kib(daemon.pid());
  if (auto st = queue_and_drain(socket, daemon.pid(), dir.path + "/gate", opt, row); !st)
    return st.error();
  const std::string flood = text_command(opt.flood_bytes);
  {
    auto conn = connect(socket);
    if (!conn) return conn.error();
    PeakPss peak(daemon.pid());
    auto got = stream(*conn, Dialect{true}, flood);
    row.stream_peak_kib = peak.stop();
    if (!got) return got.error();
    if (got->bytes != opt.flood_bytes) return sp::Error{0, "flood: execute_stream fell short"};
  }
  {
    PeakPss peak(daemon.pid());
    auto r = call(socket, Dialect{}, "execute", Object{{"command", flood}});
    row.execute_peak_kib = peak.stop();
    if (!r) return r.error();
  }
  if (auto st = daemon.stop(kStopTimeout); !st) return st.error();
  return row;
}

// ---- a run -----------------------------------------------------------------------------

struct Round {
  std::vector<HealthRow> health[2];  // [dialect]: 1 client, then opt.clients
  StreamRow stream[2];
};

sp::Result<Round> run_round(const std::string& socket, pid_t daemon, const Options& opt) {
  Round r;
  for (int m = 0; m < 2; ++m) {
    const Dialect d{m == 1};
    auto h = run_health(socket, d, opt);
    if (!h) return sp::Error{0, std::string(d.name()) + " health: " + h.error().message()};
    r.health[m] = *h;
    auto s = run_stream(socket, daemon, d, opt);
    if (!s) return sp::Error{0, std::string(d.name()) + " stream: " + s.error().message()};
    r.stream[m] = *s;
  }
  return r;
}

void print_round(const Round& r, const Options& opt) {
  printf("%-16s %8s %13s %9s %13s %9s %7s\n", opt.method.c_str(), "clients", "raw req/s", "raw p50",
         "daemon req/s", "p50 µs", "ratio");
  for (int m = 0; m < 2; ++m) {
    for (const HealthRow& h : r.health[m]) {
      printf("%-16s %8d %13.0f %9.1f %13.0f %9.1f %7.2f\n", Dialect{m == 1}.name(), h.clients,
             h.raw.per_s, h.raw.p50_us, h.daemon.per_s, h.daemon.p50_us, h.ratio());
    }
  }
  const double mib = static_cast<double>(opt.stream_bytes) / (1 << 20);
  printf("%-16s %8s %13s %9s %13s %9s %7s %13s\n", "stream", "MiB", "local MiB/s", "",
         "daemon MiB/s", "", "ratio", "CPU ms/MiB");
  for (int m = 0; m < 2; ++m) {
    const StreamRow& s = r.stream[m];
    printf("%-16s %8.0f %13.0f %9s %13.0f %9s %7.2f %6.2f + %4.2f\n", Dialect{m == 1}.name(), mib,
           mib / s.local_s, "", mib / s.daemon_s, "", s.ratio(), 1e3 * s.cpu.frontend / mib,
           1e3 * s.cpu.workers / mib);
  }
  printf("(CPU: the frontend's + the workers', not the command's)\n");
  printf("\n");
}

// Median of each ratio over the rounds.
void print_medians(const std::vector<Round>& rounds, const Options& opt) {
  auto med = [&](auto get) {
    std::vector<double> v;
    for (const Round& r : rounds) v.push_back(get(r));
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  printf(
      "medians of %zu rounds (goals: health >= 0.90; stream: JSON >= 0.35, MessagePack >= 0.60)\n",
      rounds.size());
  for (int m = 0; m < 2; ++m) {
    const double mib = static_cast<double>(opt.stream_bytes) / (1 << 20);
    printf(
        "%-16s %s 1 client %.2f, %d clients %.2f; stream %.2f, CPU ms/MiB frontend %.2f, "
        "workers %.2f\n",
        Dialect{m == 1}.name(), opt.method.c_str(),
        med([&](const Round& r) { return r.health[m][0].ratio(); }), rounds[0].health[m][1].clients,
        med([&](const Round& r) { return r.health[m][1].ratio(); }),
        med([&](const Round& r) { return r.stream[m].ratio(); }),
        med([&](const Round& r) { return 1e3 * r.stream[m].cpu.frontend / mib; }),
        med([&](const Round& r) { return 1e3 * r.stream[m].cpu.workers / mib; }));
  }
  printf("\n");
}

void print_memory(const MemoryRow& m, const Options& opt) {
  auto mib = [](uint64_t kib) { return static_cast<double>(kib) / 1024; };
  printf("memory: Pss of all the daemon's processes, MiB (--queue-size %d, 2 running)\n",
         opt.queued + 16);
  printf("  idle %.1f; %lld jobs queued %.1f; after they ran %.1f\n", mib(m.idle_kib),
         static_cast<long long>(m.queued), mib(m.queued_kib), mib(m.after_kib));
  printf(
      "  flood of %.0f MiB: execute_stream (MessagePack-RPC) peak %.1f; execute (JSON-RPC) "
      "peak %.1f\n",
      static_cast<double>(opt.flood_bytes) / (1 << 20), mib(m.stream_peak_kib),
      mib(m.execute_peak_kib));
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  int repeat = 3;
  bool skip_memory = false;
  CLI::App app{"shell-pool limits: health and streams against raw loops, memory under load"};
  app.option_defaults()->always_capture_default();
  app.add_option("--seconds", opt.seconds, "wall time per health loop")->check(CLI::PositiveNumber);
  app.add_option("--clients", opt.clients, "clients of the second health loop")
      ->check(CLI::Range(1, 256));
  app.add_option("--method", opt.method,
                 "method of the closed loops; a name the daemon does not know measures the "
                 "frontend doing no work (answered -32601)");
  app.add_option("--stream-bytes", opt.stream_bytes, "bytes of text per execute_stream")
      ->check(CLI::Range(uint64_t(1), uint64_t(1) << 40));
  app.add_option("--queued", opt.queued, "jobs queued at once in the memory phase")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--flood-bytes", opt.flood_bytes, "bytes of output of the memory phase's flood")
      ->check(CLI::Range(uint64_t(1), uint64_t(1) << 40));
  app.add_option("--repeat", repeat, "rounds of health and stream (medians printed)")
      ->check(CLI::Range(1, 100));
  app.add_flag("--no-memory", skip_memory, "skip the memory phase");
  app.add_option("--daemon", opt.daemon, "shell-poold binary (default: next to limits)");
  app.add_option("--daemon-arg", opt.daemon_args,
                 "extra daemon argument, repeatable; write --daemon-arg=--flag for dashes")
      ->allow_extra_args(false);
  CLI11_PARSE(app, argc, argv);
  setvbuf(stdout, nullptr, _IOLBF, 0);
  const std::string exe = find_daemon(opt.daemon);
  if (exe.empty()) return fprintf(stderr, "limits: no shell-poold found; pass --daemon\n"), 2;
  const char* base = getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/shell-pool-limits.XXXXXX";
  if (!mkdtemp(tmpl.data())) return perror("limits: mkdtemp"), 1;
  const TempDir dir{tmpl};
  printf("daemon %s; health %.1f s per loop; stream %llu bytes\n\n", exe.c_str(), opt.seconds,
         static_cast<unsigned long long>(opt.stream_bytes));
  Daemon daemon;
  const std::string socket = dir.path + "/sock";
  auto fail = [&](const std::string& what) {
    fprintf(stderr, "limits: %s\n%s", what.c_str(), daemon.log_tail().c_str());
    return 1;
  };
  if (auto st = daemon.start(exe, opt.daemon_args, socket, dir.path + "/daemon.log"); !st)
    return fail(st.error().message());
  if (auto st = daemon.wait_ready(socket, kStartupTimeout); !st) return fail(st.error().message());
  std::vector<Round> rounds;
  for (int k = 1; k <= repeat; ++k) {
    auto r = run_round(socket, daemon.pid(), opt);
    if (!r) return fail(r.error().message());
    printf("round %d/%d\n", k, repeat);
    print_round(*r, opt);
    rounds.push_back(*r);
  }
  print_medians(rounds, opt);
  if (auto st = daemon.stop(kStopTimeout); !st) return fail(st.error().message());
  if (skip_memory) return 0;
  auto m = run_memory(exe, opt, dir);
  if (!m) return fprintf(stderr, "limits: memory: %s\n", m.error().message().c_str()), 1;
  print_memory(*m, opt);
  return 0;
}
