// Isolation and limits against the real shell-poold: per-job cgroups (where
// the host allows them), a fork bomb and a memory hog held by them, the
// daemon's default limits and ceilings, and options from a config file.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "tests/daemon_harness.h"

using namespace sp::test;
using Catch::Contains;

namespace {

// Whether the daemon runs its jobs in cgroups; says why not when it does not.
bool has_cgroups(Client& c) {
  json::object h = health(c);
  std::string isolation = str(h, "isolation");
  if (isolation == "process-group") WARN("no per-job cgroups here: " << h.at("isolation_note"));
  return isolation != "process-group";
}

// Directories named `name` under /sys/fs/cgroup, a few levels deep.
std::vector<std::string> cgroup_dirs_named(const std::string& name) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  std::error_code ec;
  fs::recursive_directory_iterator it("/sys/fs/cgroup",
                                      fs::directory_options::skip_permission_denied, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it.depth() > 4 || !it->is_directory(ec)) {
      it.disable_recursion_pending();
      continue;
    }
    if (it->path().filename() == name) out.push_back(it->path());
  }
  return out;
}

// The pids-controller cgroups of `d`'s jobs, job-<slot> in the tree the
// daemon makes for its instance (isolation/cgroups.h: <base>/<shm name>/job-N,
// in the cgroup v1 pids hierarchy or the v2 tree; the v1 memory hierarchy's
// tree has no pids files).
std::vector<std::string> job_pids_cgroups(const TestDaemon& d) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  for (const std::string& tree : cgroup_dirs_named(d.shm_name())) {
    if (!file_exists(tree + "/pids.max")) continue;
    std::error_code ec;
    for (fs::directory_iterator it(tree, ec); !ec && it != fs::directory_iterator();
         it.increment(ec))
      if (it->path().filename().string().rfind("job-", 0) == 0) out.push_back(it->path());
  }
  return out;
}

// A pids controller file's number: the whole file (pids.current), or the
// value after `key` (pids.events); -1 if absent.
int64_t pids_counter(const std::string& path, std::string_view key = {}) {
  std::istringstream in(read_file(path));
  if (key.empty()) {
    int64_t value = -1;
    return in >> value ? value : -1;
  }
  for (std::string word; in >> word;) {
    int64_t value = -1;
    if (!(in >> value)) break;
    if (word == key) return value;
  }
  return -1;
}

}  // namespace

// execute params for a shell line with a processes limit, which (with the
// default --cgroups auto) gives the job a cgroup.
json::object limited(std::string_view command) {
  return {{"command", command}, {"limits", {{"processes", 1000}}}};
}

TEST_CASE(
    "a job with a processes limit runs in a cgroup of its own, and the tree is gone after stop",
    "[daemon][isolation]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  if (!has_cgroups(c)) return;
  CHECK_THAT(str(health(c), "isolation_note"), Contains("processes or memory_bytes"));
  std::string cgroup = str(execute(c, limited("cat /proc/self/cgroup")), "stdout");
  CHECK_THAT(cgroup, Contains("/" + d.shm_name() + "/job-"));
  // A job without such limits is not moved (a cgroup costs it time).
  cgroup = str(execute(c, sh("cat /proc/self/cgroup")), "stdout");
  CHECK_THAT(cgroup, !Contains("/job-"));
  // A process that left the job's process group dies with the job.
  json::object r = execute(c, limited("setsid sleep 100.6611 >/dev/null 2>&1 & echo started"));
  CHECK(str(r, "stdout") == "started\n");
  CHECK(wait_until([] { return pids_matching("sleep 100.6611").empty(); }, 5));
  CHECK_FALSE(cgroup_dirs_named(d.shm_name()).empty());
  stop_cleanly(d);
  CHECK(cgroup_dirs_named(d.shm_name()).empty());
}

TEST_CASE("--cgroups always gives every job a cgroup", "[daemon][isolation]") {
  bool available = false;
  {
    START_DAEMON(probe, {"--workers", "1"});
    Client c(probe.socket());
    available = has_cgroups(c);
    stop_cleanly(probe);
  }
  if (!available) {
    TestDaemon d(
        DaemonOptions{.flags = {"--workers", "1", "--cgroups", "always"}, .wait_ready = false});
    auto code = d.wait_exit(10);  // refuses to start, saying why
    REQUIRE(code);
    CHECK(*code == 1);
    CHECK_THAT(d.log(), Contains("--cgroups always"));
    return;
  }
  START_DAEMON(d, {"--workers", "1", "--cgroups", "always"});
  Client c(d.socket());
  CHECK_THAT(str(health(c), "isolation_note"), Contains("every job"));
  CHECK_THAT(str(execute(c, sh("cat /proc/self/cgroup")), "stdout"),
             Contains("/" + d.shm_name() + "/job-"));
  stop_cleanly(d);
}

TEST_CASE("a killed worker's job dies whole, processes that left its group too",
          "[daemon][isolation][crash]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  if (!has_cgroups(c)) return;
  REQUIRE(c.send_line(Client::request(
      1, "execute", limited("setsid sleep 100.6621 >/dev/null 2>&1 & sleep 100.6622"))));
  REQUIRE(wait_until([] { return pids_matching("sleep 100.662").size() >= 2; }, 10));
  REQUIRE(::kill(d.worker_pid(0), SIGKILL) == 0);
  auto v = c.read_json(10);
  REQUIRE(v);
  CHECK(str(result_of(v->as_object()), "status") == "lost");
  CHECK(wait_until([] { return pids_matching("sleep 100.662").empty(); }, 5));
  stop_cleanly(d);
}

TEST_CASE("a fork bomb is held to the job's processes limit, even for root",
          "[daemon][isolation][hostile]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  // Without cgroups only RLIMIT_NPROC is left, which counts every process of
  // the uid (other tests' too) and does not bind root: nothing to pin down.
  if (!has_cgroups(c)) return;
  constexpr int64_t kLimit = 40;
  const std::string marker = "bomb-6631";
  // The bomb is lit again every 50 ms, in the background, so a bomb that
  // burnt out is lit again until it hits the limit (the relighting shell
  // stops only when a fork of its own is refused). The job's own shell forks
  // nothing more: it waits in `read`, a builtin, until the test has seen what
  // it needs and writes to the FIFO.
  const std::string go = d.dir() + "/go";
  REQUIRE(::mkfifo(go.c_str(), 0600) == 0);
  json::object params{
      {"command", "(f(){ f|f& }; while :; do f; sleep 0.05; done) >/dev/null 2>&1 & read x <" + go +
                      " # " + marker},
      {"timeout", 20},
      {"limits", {{"processes", kLimit}}}};
  REQUIRE(c.send_line(Client::request(1, "execute", params)));
  std::string cgroup;
  REQUIRE(wait_until(
      [&] {
        for (const std::string& dir : job_pids_cgroups(d))
          if (read_file(dir + "/pids.max") == std::to_string(kLimit) + "\n") cgroup = dir;
        return !cgroup.empty();
      },
      10));
  INFO("the job's cgroup: " << cgroup);
  // While it rages, its processes never pass the limit, forks are refused at
  // it (which also means it got there: the count was at the limit), and the
  // daemon answers.
  Client other(d.socket());
  int64_t refused = 0;
  auto sample = [&] {
    refused = pids_counter(cgroup + "/pids.events", "max");
    CHECK(pids_counter(cgroup + "/pids.current") <= kLimit);
    CHECK(pids_matching(marker).size() <= size_t(kLimit));
    REQUIRE(other.try_call("health", nullptr, 5));
    return refused > 0;
  };
  wait_until(sample, 15, 0.05);
  CHECK(refused > 0);
  CHECK(read_file(cgroup + "/pids.max") == std::to_string(kLimit) + "\n");
  if (file_exists(cgroup + "/pids.peak")) CHECK(pids_counter(cgroup + "/pids.peak") <= kLimit);
  // Let the job's shell end: it ends the job, and the job's end its cgroup.
  REQUIRE(wait_until(
      [&] {
        sp::UniqueFd fifo(::open(go.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
        return fifo && ::write(fifo.get(), "\n", 1) == 1;  // ENXIO until its reader is there
      },
      10));
  auto v = c.read_json(20);
  REQUIRE(v);
  json::object r = result_of(v->as_object());
  CHECK(str(r, "status") == "exited");
  CHECK(wait_until([&] { return pids_matching(marker).empty(); }, 5));
  CHECK(str(execute(other, sh("echo calm")), "stdout") == "calm\n");
  stop_cleanly(d);
}

TEST_CASE("memory_bytes stops a job that allocates past it and says it ran out of memory",
          "[daemon][isolation][limits]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  if (!has_cgroups(c)) return;
  // dash keeps a command substitution's output in memory: 256 MB of it.
  json::object params{{"command", "x=$(head -c 256000000 /dev/zero | tr '\\0' a); echo survived"},
                      {"limits", {{"memory_bytes", 64 << 20}}}};
  json::object r = execute(c, params, 60);
  CHECK(str(r, "stdout").empty());
  CHECK_THAT(str(r, "error"), Contains("out of memory"));
  CHECK(num(health(c).at("counters").as_object(), "oom_kills") == 1);
  // A later job starts with a clean count.
  json::object small{{"command", "echo fine"}, {"limits", {{"memory_bytes", 64 << 20}}}};
  CHECK(execute(c, small).at("error").is_null());
  stop_cleanly(d);
}

TEST_CASE("without cgroups memory_bytes is refused with the reason", "[daemon][isolation]") {
  START_DAEMON(d, {"--workers", "1", "--cgroups", "off"});
  Client c(d.socket());
  json::object h = health(c);
  CHECK(str(h, "isolation") == "process-group");
  CHECK_THAT(str(h, "isolation_note"), Contains("--cgroups off"));
  json::object e = error_of(c.call(
      "execute", json::object{{"command", "true"}, {"limits", {{"memory_bytes", 1 << 20}}}}));
  CHECK(num(e, "code") == -32602);
  CHECK_THAT(str(e, "message"), Contains("memory_bytes"));
  CHECK_THAT(str(e, "message"), Contains("cgroups"));
  stop_cleanly(d);
}

TEST_CASE("--limit sets per-job defaults and --max-limit and --max-timeout set ceilings",
          "[daemon][limits]") {
  START_DAEMON(d, {"--workers", "1", "--limit", "open_files=64", "--max-limit", "open_files=128",
                   "--max-limit", "file_size_bytes=1048576", "--max-timeout", "1"});
  Client c(d.socket());
  CHECK(str(execute(c, sh("ulimit -n")), "stdout") == "64\n");  // the default
  json::object asked{{"command", "ulimit -n"}, {"limits", {{"open_files", 100}}}};
  CHECK(str(execute(c, asked), "stdout") == "100\n");
  // No default for file size: the ceiling applies (dash counts 512-byte blocks).
  CHECK(str(execute(c, sh("ulimit -f")), "stdout") == "2048\n");

  json::object over{{"command", "true"}, {"limits", {{"open_files", 129}}}};
  json::object e = error_of(c.call("execute", over));
  CHECK(num(e, "code") == -32602);
  CHECK_THAT(str(e, "message"), Contains("open_files") && Contains("128"));
  e = error_of(c.call("execute", json::object{{"command", "true"}, {"timeout", 2}}));
  CHECK(num(e, "code") == -32602);
  CHECK_THAT(str(e, "message"), Contains("timeout"));
  // A job without a timeout gets the ceiling.
  json::object r = execute(c, sh("sleep 30"));
  CHECK(str(r, "status") == "timed_out");
  stop_cleanly(d);
}

TEST_CASE("--config reads the daemon's options from a TOML file", "[daemon][config]") {
  TempDir dir;
  std::string path = dir.path() + "/shell-pool.toml";
  std::ofstream(path) << "queue-size = 7\nmax-limit = [\"open_files=77\"]\n";
  START_DAEMON(d, {"--workers", "1", "--config", path});
  Client c(d.socket());
  CHECK(num(health(c).at("jobs").as_object(), "queue_capacity") == 7);
  CHECK(str(execute(c, sh("ulimit -n")), "stdout") == "77\n");
  stop_cleanly(d);
}

TEST_CASE("bad limit flags stop the daemon at start with a clear message", "[daemon][limits]") {
  for (const char* bad : {"nofiles=3", "open_files=0", "open_files=lots"}) {
    INFO(bad);
    TestDaemon d(DaemonOptions{.flags = {"--limit", bad}, .wait_ready = false});
    auto code = d.wait_exit(10);
    REQUIRE(code);
    CHECK(*code != 0);
    CHECK_THAT(d.log(), Contains("limit") || Contains("open_files"));
  }
  // A default above its ceiling would refuse jobs for params they never sent.
  const std::vector<std::pair<std::vector<std::string>, std::string>> clashes = {
      {{"--limit", "open_files=200", "--max-limit", "open_files=100"}, "open_files"},
      {{"--default-timeout", "10", "--max-timeout", "5"}, "--max-timeout"}};
  for (const auto& [flags, named] : clashes) {
    INFO(named);
    TestDaemon d(DaemonOptions{.flags = flags, .wait_ready = false});
    auto code = d.wait_exit(10);
    REQUIRE(code);
    CHECK(*code == 78);  // EX_CONFIG: a broken configuration is not restarted by systemd
    CHECK_THAT(d.log(), Contains(named));
  }
}

TEST_CASE("a frontend killed by the kernel's OOM killer is counted as an OOM death",
          "[daemon][health][crash]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  if (!has_cgroups(c)) return;
  // The frontend runs in a memory cgroup of its own: give it little room
  // over what it uses, then make it hold a big execute output.
  pid_t frontend = d.frontend_pid();
  std::string dir;
  for (const std::string& candidate : cgroup_dirs_named("role-frontend"))
    if (candidate.find(d.shm_name()) != std::string::npos &&
        read_file(candidate + "/cgroup.procs").find(std::to_string(frontend)) != std::string::npos)
      dir = candidate;
  REQUIRE_FALSE(dir.empty());
  bool v2 = file_exists(dir + "/memory.max");
  std::string usage = read_file(dir + (v2 ? "/memory.current" : "/memory.usage_in_bytes"));
  std::string limit = std::to_string(std::stoull(usage) + (8 << 20));
  std::ofstream(dir + (v2 ? "/memory.max" : "/memory.limit_in_bytes")) << limit;
  if (file_exists(dir + "/memory.memsw.limit_in_bytes"))
    std::ofstream(dir + "/memory.memsw.limit_in_bytes") << limit;
  if (file_exists(dir + "/memory.swap.max")) std::ofstream(dir + "/memory.swap.max") << "0";

  REQUIRE(c.send_line(Client::request(1, "execute", sh("head -c 40000000 /dev/zero"))));
  CHECK_FALSE(c.read_line(30));  // the frontend died with it
  REQUIRE(wait_until(
      [&] {
        pid_t now = d.frontend_pid();
        return now && now != frontend;
      },
      10));
  Client fresh = Client::connect_retry(d.socket(), 10);
  json::object counters = health(fresh).at("counters").as_object();
  CHECK(num(counters, "deaths_by_oom") == 1);
  CHECK(num(counters, "deaths_by_signal") == 0);
  CHECK_THAT(d.log(), Contains("OOM killer"));
  stop_cleanly(d);
}

TEST_CASE("request data never reaches the daemon's log", "[daemon][security]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  const std::string secret = "s3cr3t-9921";
  execute(c, json::object{{"command", "echo $TOKEN"}, {"env", {{"TOKEN", secret}}}});
  execute(c, json::object{{"command", "true"}, {"working_dir", "/nonexistent-" + secret}});
  execute(c, json::object{{"command", "/nonexistent/" + secret}, {"args", {secret}}});
  c.call("session_create", json::object{{"name", secret}, {"env_vars", {{"K", secret}}}});
  error_of(c.call("execute", json::object{{"command", secret}, {"timeout", secret}}));
  REQUIRE(c.send_line("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"" + secret + "\"}"));
  REQUIRE(c.read_line());
  stop_cleanly(d);
  CHECK_THAT(d.log(), !Contains(secret));
}

TEST_CASE("over --output-budget, execute jobs are held back and all finish whole",
          "[daemon][limits]") {
  constexpr uint64_t kBudget = 1 << 20, kEach = 3'000'000;
  START_DAEMON(d, {"--workers", "2", "--output-budget", std::to_string(kBudget)});
  std::vector<Client> clients;
  for (int i = 0; i < 6; ++i) {
    clients.emplace_back(d.socket());
    REQUIRE(clients.back().send_line(Client::request(
        1, "execute",
        sh("head -c " + std::to_string(kEach) + " /dev/zero | tr '\\0' x; sleep 0.5"))));
  }
  Client watcher(d.socket());
  std::vector<std::optional<json::value>> answers(clients.size());
  auto start = Clock::now();
  size_t done = 0;
  while (done < clients.size() && seconds_since(start) < 60)
    for (size_t i = 0; i < clients.size(); ++i)
      if (!answers[i] && (answers[i] = clients[i].read_json(0.05))) ++done;
  REQUIRE(done == clients.size());
  for (auto& a : answers) {
    json::object r = result_of(a->as_object());
    std::string out = str(r, "stdout");
    CHECK(out.size() == kEach);
    CHECK(out.find_first_not_of('x') == std::string::npos);
    CHECK_FALSE(r.at("truncated").as_bool());
  }
  // The budget held jobs back (18 MB against 1 MiB), and all finished whole.
  // (How much is held at a moment depends on when clients read their answers
  // and when jobs go quiet, so it is not asserted: see docs/protocol.md.)
  CHECK(num(health(watcher), "output_budget_holds") > 0);
  CHECK(num(health(watcher), "output_buffered_bytes") == 0);
  stop_cleanly(d);
}

TEST_CASE("over --output-budget, a job that went quiet does not hold back the others",
          "[daemon][limits]") {
  START_DAEMON(d, {"--workers", "2", "--output-budget", std::to_string(1 << 20)});
  Client quiet(d.socket()), loud(d.socket());
  // Another client keeps the frontend busy all along (it never idles).
  std::atomic<bool> polling{true};
  std::thread poller([&] {
    Client p(d.socket());
    while (polling && p.try_call("health", nullptr, 5))
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  });
  // The older job prints 2 MB over about a second, taking the budget, then
  // prints nothing until the test opens its gate; the younger one prints
  // meanwhile, and is held while the older one prints.
  const std::string gate = d.dir() + "/gate";
  REQUIRE(quiet.send_line(Client::request(
      1, "execute",
      sh("for i in $(seq 20); do head -c 100000 /dev/zero | tr '\\0' q; sleep 0.05; done; " +
         until_file(gate)))));
  Client watcher(d.socket());
  CHECK(wait_until([&] { return num(health(watcher), "output_buffered_bytes") > 0; }, 10));
  json::object r = execute(loud, sh("head -c 3000000 /dev/zero | tr '\\0' l"), 10);
  polling = false;
  poller.join();
  CHECK(str(r, "stdout").size() == 3000000);
  CHECK_FALSE(quiet.read_line(0.1));  // the older job still runs
  open_gate(gate);
  auto v = quiet.read_json(10);
  REQUIRE(v);
  CHECK(str(result_of(v->as_object()), "stdout").size() == 2000000);
  stop_cleanly(d);
}
