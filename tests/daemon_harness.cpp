#include "tests/daemon_harness.h"

#include "common/text.h"
#include "frontend/codec/msgpack_codec.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

extern char** environ;

namespace sp::test {

namespace {

Clock::time_point deadline_after(double seconds) {
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

// Milliseconds left until `deadline`, as poll() takes them.
int ms_left(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return 0;
  return int(std::min<int64_t>(left.count(), 1'000'000));
}

void sleep_s(double seconds) {
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Forks and execs `argv` with `envp`, stdin from /dev/null and stdout/stderr
// into `out_fd`/`err_fd`. Everything the child touches is prepared before the
// fork; the child only makes async-signal-safe calls.
pid_t spawn(const std::vector<std::string>& args, const std::vector<std::string>& env, int out_fd,
            int err_fd, int in_fd = -1) {
  std::vector<char*> argv, envp;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const std::string& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  UniqueFd devnull_fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  int devnull = in_fd >= 0 ? in_fd : devnull_fd.get();
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    // If the test process dies, the daemon drains and cleans up after itself.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) _exit(126);
    if (::dup2(devnull, 0) < 0 || ::dup2(out_fd, 1) < 0 || ::dup2(err_fd, 2) < 0) _exit(126);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  return pid;
}

std::vector<std::string> environment_plus(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) env.emplace_back(*e);
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

bool connectable(const std::string& path) {
  Client c(path);
  return c.connected();
}

}  // namespace

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

bool wait_until(const std::function<bool()>& pred, double timeout_s, double poll_s) {
  auto deadline = deadline_after(timeout_s);
  for (;;) {
    if (pred()) return true;
    if (Clock::now() >= deadline) return pred();
    sleep_s(poll_s);
  }
}

// ---- TempDir ----

TempDir::TempDir() {
  char tmpl[] = "/tmp/sp-test-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr)
    throw std::runtime_error(std::string("mkdtemp: ") + strerror(errno));
  path_ = tmpl;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

// ---- /proc ----

std::vector<pid_t> children_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  pid_t child;
  while (in >> child) out.push_back(child);
  return out;
}

std::string cmdline_of(pid_t pid) {
  std::string raw = read_file("/proc/" + std::to_string(pid) + "/cmdline");
  while (!raw.empty() && raw.back() == '\0') raw.pop_back();
  for (char& c : raw)
    if (c == '\0') c = ' ';
  return raw;
}

pid_t parent_of(pid_t pid) {
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream in(stat.substr(close + 1));
  std::string state;
  pid_t ppid = 0;
  in >> state >> ppid;
  return state == "Z" ? 0 : ppid;
}

std::vector<pid_t> pids_matching(std::string_view needle) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  pid_t self = ::getpid();
  while (dirent* e = ::readdir(d)) {
    char* end;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end || pid <= 0 || pid == self) continue;
    if (cmdline_of(pid_t(pid)).find(needle) != std::string::npos) out.push_back(pid_t(pid));
  }
  ::closedir(d);
  return out;
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string until_file(const std::string& path, double timeout_s, double poll_s) {
  std::string polls = std::to_string(int64_t(timeout_s / poll_s) + 1);
  std::ostringstream poll;
  poll << poll_s;
  std::string quoted = "'" + path + "'";  // test paths: no quote in them
  return "n=0; until [ -e " + quoted + " ]; do [ $n -ge " + polls +
         " ] && exit 124; n=$((n + 1)); sleep " + poll.str() + "; done";
}

void open_gate(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  REQUIRE(fd);
}

std::string wchan_of(pid_t pid) {
  return read_file("/proc/" + std::to_string(pid) + "/wchan");
}

namespace {

// Bytes `pid` has written so far (/proc/<pid>/io), -1 if gone.
int64_t written_by(pid_t pid) {
  std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/io"));
  for (std::string key; in >> key;) {
    int64_t value = 0;
    if (!(in >> value)) break;
    if (key == "wchar:") return value;
  }
  return -1;
}

}  // namespace

bool held_on_pipe(pid_t pid, double quiet_s) {
  int64_t before = written_by(pid);
  sleep_s(quiet_s);
  return before >= 0 && written_by(pid) == before &&
         wchan_of(pid).find("pipe_write") != std::string::npos;  // anon_pipe_write since 6.x
}

std::string shm_name_for_socket(const std::string& socket_path) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char ch : socket_path) h = (h ^ ch) * 0x100000001b3ULL;
  char buf[40];
  std::snprintf(buf, sizeof buf, "shell-pool-%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// ---- TestDaemon ----

TestDaemon::TestDaemon(std::vector<std::string> flags)
    : TestDaemon(DaemonOptions{.flags = std::move(flags)}) {}

TestDaemon::TestDaemon(DaemonOptions options) {
  start(options);
}

void TestDaemon::start(const DaemonOptions& options) {
  socket_ = options.socket.empty() ? dir() + "/sock" : options.socket;
  unsigned cpus = std::thread::hardware_concurrency();
  workers_ = cpus ? std::min(cpus, 64u) : 2;
  for (size_t i = 0; i + 1 < options.flags.size(); ++i)
    if (options.flags[i] == "--workers") workers_ = std::stoul(options.flags[i + 1]);
  std::vector<std::string> args = options.wrapper;
  args.insert(args.end(), {options.binary, "--socket", socket_});
  args.insert(args.end(), options.flags.begin(), options.flags.end());
  UniqueFd log(::open((dir() + "/daemon.log").c_str(),
                      O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600));
  if (!log) throw std::runtime_error("cannot create the daemon log");
  pid_ = spawn(args, environment_plus(options.env), log.get(), log.get());
  if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + strerror(errno));
  reaped_ = false;
  if (!options.wait_ready) return;
  ready_ = wait_until([&] { return connectable(socket_) || !running(); }, 10) && running() &&
           connectable(socket_);
  if (!options.wait_workers) return;
  ready_ = ready_ && wait_until([&] { return idle() || !running(); }, 10) && running();
}

bool TestDaemon::idle() const {
  // The supervisor starts every worker before the frontend.
  pid_t frontend = frontend_pid(), remote = remote_worker_pid();
  std::vector<pid_t> roles = worker_pids();
  if (!frontend || !remote || roles.size() != workers_) return false;
  roles.push_back(frontend);
  roles.push_back(remote);
  for (pid_t p : roles) {
    std::string wchan = read_file("/proc/" + std::to_string(p) + "/wchan");
    if (wchan != "do_epoll_wait") return false;
  }
  return true;
}

TestDaemon::~TestDaemon() {
  if (reaped_) return;
  ::kill(pid_, SIGTERM);
  if (!wait_exit(15)) kill_and_reap();
}

void TestDaemon::kill_and_reap() {
  ::kill(pid_, SIGKILL);
  int status;
  if (::waitpid(pid_, &status, 0) == pid_) {
    reaped_ = true;
    exit_code_ = decode_status(status);
  }
  // A killed supervisor cannot clean up: do it for it (only if the socket
  // was its own, not another instance's).
  if (ready_) {
    ::shm_unlink(shm_name().c_str());
    ::unlink(socket_.c_str());
  }
}

std::string TestDaemon::state() const {
  std::string s = "pid " + std::to_string(pid_);
  return reaped_ ? s + ", exited with code " + std::to_string(exit_code_) : s + ", running";
}

std::string TestDaemon::log() const {
  return read_file(dir() + "/daemon.log");
}

bool TestDaemon::running() {
  if (reaped_) return false;
  int status;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    exit_code_ = decode_status(status);
    return false;
  }
  return true;
}

std::optional<int> TestDaemon::wait_exit(double timeout_s) {
  if (wait_until([&] { return !running(); }, timeout_s, 0.005)) return exit_code_;
  return std::nullopt;
}

int TestDaemon::stop(double timeout_s) {
  if (!running()) return exit_code_;
  ::kill(pid_, SIGTERM);
  if (auto code = wait_exit(timeout_s)) return *code;
  kill_and_reap();
  FAIL("shell-poold did not exit within " << timeout_s << " s of SIGTERM; log:\n" << log());
  return -1;
}

namespace {

// argv of `pid` ("" elements if gone).
std::vector<std::string> argv_of(pid_t pid) {
  std::string raw = read_file("/proc/" + std::to_string(pid) + "/cmdline");
  std::vector<std::string> out;
  for (size_t pos = 0; pos < raw.size();) {
    size_t end = raw.find('\0', pos);
    if (end == std::string::npos) end = raw.size();
    out.push_back(raw.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

// The role argument the supervisor gives its children: `shell-poold worker
// --index N ...` / `shell-poold frontend ...` (other argv words, such as
// --worker-fds, may contain the names too).
// The remote worker is `worker --index N --ssh ...`: role "remote" here,
// not one of the "worker"s.
bool has_role(pid_t pid, std::string_view role, std::string_view index = {}) {
  std::vector<std::string> argv = argv_of(pid);
  const bool remote = argv.size() >= 5 && argv[1] == "worker" && argv[4] == "--ssh";
  if (role == "remote") return remote;
  if (argv.size() < 2 || argv[1] != role || remote) return false;
  if (index.empty()) return true;
  return argv.size() >= 4 && argv[2] == "--index" && argv[3] == index;
}

}  // namespace

std::vector<pid_t> TestDaemon::worker_pids() const {
  std::vector<pid_t> out;
  for (pid_t p : children())
    if (has_role(p, "worker")) out.push_back(p);
  return out;
}

pid_t TestDaemon::worker_pid(unsigned index) const {
  for (pid_t p : children())
    if (has_role(p, "worker", std::to_string(index))) return p;
  return 0;
}

pid_t TestDaemon::remote_worker_pid() const {
  for (pid_t p : children())
    if (has_role(p, "remote")) return p;
  return 0;
}

pid_t TestDaemon::frontend_pid() const {
  for (pid_t p : children())
    if (has_role(p, "frontend")) return p;
  return 0;
}

// ---- Client ----

Client::Client(const std::string& socket_path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path) {
    connect_errno_ = ENAMETOOLONG;
    return;
  }
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) {
    connect_errno_ = errno;
    return;
  }
  // Non-blocking: a full listen backlog is an error here, never a hang.
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
    connect_errno_ = errno;
    return;
  }
  fd_ = std::move(fd);
}

Client Client::connect_retry(const std::string& socket_path, double timeout_s, double poll_s) {
  auto deadline = deadline_after(timeout_s);
  for (;;) {
    Client c(socket_path);
    if (c.connected() || Clock::now() >= deadline) return c;
    sleep_s(poll_s);
  }
}

bool Client::send_raw(std::string_view bytes, double timeout_s) {
  auto deadline = deadline_after(timeout_s);
  while (!bytes.empty()) {
    if (!fd_) return false;
    ssize_t n = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      bytes.remove_prefix(size_t(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) return false;
    pollfd p{fd_.get(), POLLOUT, 0};
    if (::poll(&p, 1, ms_left(deadline)) <= 0 && Clock::now() >= deadline) return false;
  }
  return true;
}

int Client::unread_by_peer() const {
  int queued = 0;
  if (!fd_ || ::ioctl(fd_.get(), SIOCOUTQ, &queued) != 0) return -1;
  return queued;
}

void Client::shutdown_write() {
  if (fd_) ::shutdown(fd_.get(), SHUT_WR);
}

bool Client::send_line(std::string_view line, double timeout_s) {
  std::string text(line);
  text += '\n';
  return send_raw(text, timeout_s);
}

template <typename Take>
std::optional<std::string> Client::read_until(double timeout_s, Take take) {
  auto deadline = deadline_after(timeout_s);
  for (;;) {
    // take: {length of the unit, bytes it spans} once buf_ holds a whole one.
    if (std::optional<std::pair<size_t, size_t>> unit = take(std::string_view(buf_))) {
      std::string got = buf_.substr(0, unit->first);
      buf_.erase(0, unit->second);
      return got;
    }
    if (!fd_ || eof_) return std::nullopt;
    pollfd p{fd_.get(), POLLIN, 0};
    int r = ::poll(&p, 1, ms_left(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return std::nullopt;  // timed out
    char chunk[256 * 1024];
    ssize_t n = ::recv(fd_.get(), chunk, sizeof chunk, MSG_DONTWAIT);
    if (n > 0) {
      buf_.append(chunk, size_t(n));
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
      eof_ = true;
    }
  }
}

std::optional<std::string> Client::read_line(double timeout_s) {
  return read_until(timeout_s, [](std::string_view b) -> std::optional<std::pair<size_t, size_t>> {
    size_t nl = b.find('\n');
    if (nl == std::string_view::npos) return std::nullopt;
    return std::pair{nl, nl + 1};
  });
}

std::optional<std::string> Client::read_frame(double timeout_s) {
  bool bad = false;
  auto frame =
      read_until(timeout_s, [&](std::string_view b) -> std::optional<std::pair<size_t, size_t>> {
        sp::rpc::FrameScan s = sp::rpc::scan_frame(b);
        if (s.status == sp::rpc::FrameScan::kInvalid) bad = true;
        if (s.status != sp::rpc::FrameScan::kComplete) {
          if (bad) return std::pair{size_t(0), b.size()};
          return std::nullopt;
        }
        return std::pair{s.size, s.size};
      });
  if (bad) return std::nullopt;
  return frame;
}

std::optional<json::value> Client::read_json(double timeout_s) {
  auto line = read_line(timeout_s);
  if (!line) {
    last_line_ = eof_ ? "<EOF>" : "<timeout>";
    return std::nullopt;
  }
  last_line_ = *line;
  boost::system::error_code ec;
  json::value v = json::parse(*line, ec);
  if (ec) return std::nullopt;
  return v;
}

std::string Client::request(const json::value& id, std::string_view method,
                            const json::value& params) {
  json::object req{{"jsonrpc", "2.0"}, {"id", id}, {"method", method}};
  if (!params.is_null()) req["params"] = params;
  return json::serialize(req);
}

std::optional<json::object> Client::try_call(std::string_view method, const json::value& params,
                                             double timeout_s) {
  int64_t id = next_id();
  if (!send_line(request(id, method, params))) return std::nullopt;
  auto v = read_json(timeout_s);
  if (!v || !v->is_object()) return std::nullopt;
  const json::value* got = v->as_object().if_contains("id");
  if (!got || !got->is_int64() || got->as_int64() != id) return std::nullopt;
  return v->as_object();
}

json::object Client::call(std::string_view method, const json::value& params, double timeout_s) {
  auto r = try_call(method, params, timeout_s);
  INFO("request: " << request(last_id_, method, params));
  INFO("answer: " << last_line_);
  REQUIRE(r);
  return *r;
}

LogOnFailure::~LogOnFailure() {
  if (std::uncaught_exceptions() <= exceptions_) return;
  std::fprintf(stderr, "---- shell-poold log (%s) ----\n%s---- end of log ----\n",
               d_.socket().c_str(), d_.log().c_str());
}

json::object result_of(const json::object& response) {
  INFO("response: " << json::serialize(response));
  REQUIRE(response.contains("result"));
  REQUIRE(response.at("result").is_object());
  return response.at("result").as_object();
}

json::object error_of(const json::object& response) {
  INFO("response: " << json::serialize(response));
  REQUIRE(response.contains("error"));
  REQUIRE(response.at("error").is_object());
  return response.at("error").as_object();
}

std::string str(const json::object& o, std::string_view key) {
  INFO("object: " << json::serialize(o) << ", key " << key);
  REQUIRE(o.contains(key));
  REQUIRE(o.at(key).is_string());
  return std::string(o.at(key).as_string());
}

int64_t num(const json::object& o, std::string_view key) {
  INFO("object: " << json::serialize(o) << ", key " << key);
  REQUIRE(o.contains(key));
  REQUIRE((o.at(key).is_int64() || o.at(key).is_uint64()));
  return o.at(key).to_number<int64_t>();
}

json::object execute(Client& c, const json::object& params, double timeout_s) {
  return result_of(c.call("execute", params, timeout_s));
}

void check_left_nothing(const TestDaemon& d, const std::vector<pid_t>& former_children) {
  INFO("daemon log:\n" << d.log());
  CHECK_FALSE(file_exists(d.socket()));
  CHECK_FALSE(file_exists(d.shm_path()));
  CHECK_FALSE(file_exists(d.spool_dir()));  // detached jobs' output files
  CHECK(pids_matching(d.shm_name()).empty());
  for (pid_t p : former_children) {
    INFO("former child " << p << ": " << cmdline_of(p));
    CHECK(parent_of(p) == 0);
  }
}

void stop_cleanly(TestDaemon& d) {
  std::vector<pid_t> children = d.children();
  REQUIRE(d.running());
  int code = d.stop();
  INFO("daemon log:\n" << d.log());
  CHECK(code == 0);
  check_left_nothing(d, children);
}

Streamed read_stream(Client& c, const json::value& id, double timeout_s) {
  Streamed s;
  auto deadline = deadline_after(timeout_s);
  for (;;) {
    auto v = c.read_json(std::chrono::duration<double>(deadline - Clock::now()).count());
    if (!v || !v->is_object()) {
      s.problem = "bad or missing line: " + c.last_line().substr(0, 300);
      return s;
    }
    const json::object& o = v->as_object();
    const json::value* result = o.if_contains("result");
    const json::value* type =
        result && result->is_object() ? result->as_object().if_contains("type") : nullptr;
    if (!o.contains("id") || o.at("id") != id || !type || !type->is_string()) {
      s.problem = "unexpected line: " + c.last_line().substr(0, 300);
      return s;
    }
    const json::object& r = result->as_object();
    if (type->as_string() == "exit") {
      s.exit = r;
      s.ok = true;
      return s;
    }
    const json::value* data = r.if_contains("data");
    if (!data || !data->is_string() ||
        (type->as_string() != "stdout" && type->as_string() != "stderr")) {
      s.problem = "bad chunk: " + c.last_line().substr(0, 300);
      return s;
    }
    (type->as_string() == "stdout" ? s.out : s.err) += std::string_view(data->as_string());
    ++s.chunks;
  }
}

std::string base64_decode(std::string_view in) {
  return sp::decode_base64(in).value_or("<not base64>");
}

std::string base64(std::string_view bytes) {
  std::string out;
  sp::append_base64(out, bytes);
  return out;
}

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (char& ch : s) ch = char(gen() & 0xff);
  return s;
}

// ---- CLI ----

CliRun run_cli(const std::vector<std::string>& args, const std::string& dir, double timeout_s,
               const std::optional<std::string>& stdin_data) {
  static std::atomic<int> serial{0};  // callers may run CLIs from several threads
  std::string base = dir + "/cli" + std::to_string(++serial);
  UniqueFd out(::open((base + ".out").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  UniqueFd err(::open((base + ".err").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  CliRun run;
  if (!out || !err) return run;
  UniqueFd in;
  if (stdin_data) {
    UniqueFd w(::open((base + ".in").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!w ||
        ::write(w.get(), stdin_data->data(), stdin_data->size()) != ssize_t(stdin_data->size()))
      return run;
    in.reset(::open((base + ".in").c_str(), O_RDONLY | O_CLOEXEC));
  }
  std::vector<std::string> argv{SHELL_POOL_CLI};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_t pid = spawn(argv, environment_plus({}), out.get(), err.get(), in ? in.get() : -1);
  if (pid < 0) return run;
  int status = 0;
  run.finished =
      wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, timeout_s, 0.005);
  if (!run.finished) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  run.exit_code = decode_status(status);
  run.out = read_file(base + ".out");
  run.err = read_file(base + ".err");
  return run;
}

json::object health(Client& c) {
  return result_of(c.call("health", nullptr));
}

std::vector<pid_t> role_pids(const TestDaemon& d) {
  std::vector<pid_t> roles = d.worker_pids();
  roles.push_back(d.frontend_pid());
  roles.push_back(d.remote_worker_pid());
  return roles;
}

void check_same_roles(TestDaemon& d, Client& c, const std::vector<pid_t>& roles) {
  CHECK(d.running());
  CHECK(role_pids(d) == roles);
  json::object counters = health(c).at("counters").as_object();
  CHECK(num(counters, "worker_restarts") == 0);
  CHECK(num(counters, "frontend_restarts") == 0);
  CHECK(num(counters, "deaths_by_signal") == 0);
  CHECK(num(counters, "deaths_by_exit") == 0);
}

std::string answer_as_uid(const std::string& socket, uid_t uid, const std::string& request) {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  sp::UniqueFd rd(fds[0]), wr(fds[1]);
  pid_t child = ::fork();
  if (child == 0) {
    rd.reset();
    if (::setgid(uid) != 0 || ::setuid(uid) != 0) _exit(2);
    std::string line;
    try {
      Client c(socket);
      c.send_line(request);
      if (auto got = c.read_line(10)) line = *got;
    } catch (...) {
    }
    [[maybe_unused]] ssize_t n = ::write(wr.get(), line.data(), line.size());
    _exit(0);
  }
  wr.reset();
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(rd.get(), buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
  ::waitpid(child, nullptr, 0);
  return out;
}

Client kill_frontend(TestDaemon& d, double timeout_s) {
  const pid_t old_frontend = d.frontend_pid();
  REQUIRE(old_frontend > 0);
  REQUIRE(::kill(old_frontend, SIGKILL) == 0);
  REQUIRE(wait_until([&] { return d.frontend_pid() != 0 && d.frontend_pid() != old_frontend; },
                     timeout_s));
  Client c = Client::connect_retry(d.socket(), timeout_s);
  REQUIRE(c.connected());
  return c;
}

void kill_ready_worker(TestDaemon& d, Client& c, int times) {
  pid_t last = 0;
  for (int kill_no = 0; kill_no < times; ++kill_no) {
    INFO("kill " << kill_no);
    pid_t w = 0;
    REQUIRE(wait_until(
        [&] {
          auto h = c.try_call("health", nullptr, 5);
          if (!h) return false;
          json::object r = result_of(*h);
          const json::object& w0 = r.at("workers").as_array().at(0).as_object();
          w = pid_t(num(w0, "pid"));
          return w != 0 && w != last && w0.at("ready") == true;
        },
        15, 0.02));
    REQUIRE(::kill(w, SIGKILL) == 0);
    last = w;
  }
  REQUIRE(wait_until([&] { return d.worker_pid(0) != 0 && d.worker_pid(0) != last; }, 15));
}

int count_of(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace sp::test
