// interactive: the cost of interactive jobs and of secret redaction, each
// against its baseline in the same run.
//
//   (a) raw pipe round trip: write a line to a local `cat` through a pipe, read it back.
//   (b) daemon round trip: the same line to `cat` run by the real shell-poold
//       (execute_stream with stdin_open): job_stdin_write sent to the stdout chunk read.
//   (c) the same on a PTY (`stty -echo; cat`, pty: true).
//   (d) redaction, in process: Redactor::feed over --redact-mib of log-like text in 64 KiB
//       pieces with 10 secrets, against a plain copy of the same pieces.
//   (e) redaction, end to end: a detached job writes --redact-mib of that text; its
//       duration with 10 secrets against none (the worker reads and redacts all of it;
//       past the spool cap the output is dropped, so the disk is not what is measured).
// Round trips: p50 and p99 in µs over --rounds lines. Compare only numbers of one run.
#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <cstdio>
#include <random>

#include "bench/bench_daemon.h"
#include "common/redactor.h"

namespace {

namespace json = boost::json;
using namespace sp::bench;

struct Options {
  int rounds = 2000;
  int repeat = 3;
  uint64_t redact_mib = 1024;
  std::string daemon;
};

struct Stats {
  double p50_us = 0, p99_us = 0;
};

Stats stats_of(std::vector<uint64_t> ns) {
  std::sort(ns.begin(), ns.end());
  return {percentile(ns, 50) / 1e3, percentile(ns, 99) / 1e3};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

[[noreturn]] void fail(const std::string& why) {
  std::fprintf(stderr, "interactive: %s\n", why.c_str());
  std::exit(1);
}

// (a): a local cat on two pipes.
Stats raw_round_trip(int rounds) {
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) fail("pipe");
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::execl("/bin/cat", "cat", nullptr);
    _exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  std::vector<uint64_t> ns;
  char buf[256];
  for (int i = 0; i < rounds; ++i) {
    const uint64_t t0 = now_ns();
    if (::write(in[1], "a line\n", 7) != 7) fail("write to cat");
    size_t got = 0;
    while (got < 7) {
      ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n <= 0) fail("read from cat");
      got += size_t(n);
    }
    ns.push_back(now_ns() - t0);
  }
  ::close(in[1]);
  ::close(out[0]);
  ::waitpid(pid, nullptr, 0);
  return stats_of(std::move(ns));
}

std::string request(uint64_t id, const char* method, json::object params) {
  return json::serialize(json::object{
             {"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", std::move(params)}}) +
         "\n";
}

// (b), (c): cat run by the daemon; a line in by job_stdin_write, out as a chunk.
Stats daemon_round_trip(const std::string& socket, int rounds, bool pty) {
  auto fd = connect_unix(socket);
  if (!fd) fail(fd.error().message());
  Conn c(std::move(*fd));
  json::object p{{"command", pty ? "stty -echo; cat" : "cat"}, {"stdin_open", true}};
  if (pty) p["pty"] = true;
  if (!c.send_all(request(1, "execute_stream", p))) fail("send");
  auto first = c.read_line();
  if (!first) fail(first.error().message());
  const std::string job_id(json::parse(*first).at("result").at("job_id").as_string());
  if (pty) {  // until stty ran: a line echoed back once is the sign
    for (bool quiet = false; !quiet;) {
      if (!c.send_all(request(2, "job_stdin_write", {{"job_id", job_id}, {"data", "warm\n"}})))
        fail("send");
      for (int seen = 0; seen < 2;) {
        auto line = c.read_line();
        if (!line) fail(line.error().message());
        json::value v = json::parse(*line);
        if (v.at("id") == 2) {
          ++seen;
        } else if (v.at("result").at("type") == "stdout") {
          quiet = json::value_to<std::string>(v.at("result").at("data")) == "warm\r\n";
          ++seen;
        }
      }
    }
  }
  std::vector<uint64_t> ns;
  const std::string end = pty ? "\r\n" : "\n";
  for (int i = 0; i < rounds; ++i) {
    const uint64_t t0 = now_ns();
    if (!c.send_all(request(uint64_t(3 + i), "job_stdin_write",
                            {{"job_id", job_id}, {"data", "a line\n"}})))
      fail("send");
    bool answered = false, echoed = false;
    std::string data;
    while (!answered || !echoed) {
      auto line = c.read_line();
      if (!line) fail(line.error().message());
      json::value v = json::parse(*line);
      if (v.at("id") != 1) {
        if (v.as_object().contains("error")) fail("job_stdin_write: " + std::string(*line));
        answered = true;
        continue;
      }
      data += json::value_to<std::string>(v.at("result").at("data"));
      if (data.size() >= 6 + end.size() && !echoed) {
        ns.push_back(now_ns() - t0);
        echoed = true;
      }
    }
  }
  // The end of cat's input (a terminal's is ^D).
  json::object close{{"job_id", job_id}};
  if (pty) close["data"] = "\x04";
  if (!c.send_all(request(9, pty ? "job_stdin_write" : "job_stdin_close", close))) fail("send");
  for (;;) {  // until the stream's exit record
    auto line = c.read_line();
    if (!line) fail(line.error().message());
    json::value v = json::parse(*line);
    if (v.at("id") == 1 && v.at("result").at("type") == "exit") break;
  }
  return stats_of(std::move(ns));
}

// Log-like text, and 10 secrets that look like tokens (some of their first
// bytes are common in the text, so the redactor leaves its fast path).
std::string log_text() {
  std::string text;
  for (int i = 0; text.size() < (1 << 16); ++i)
    text += "2026-12-02T17:00:0" + std::to_string(i % 10) +
            "Z INFO request id=" + std::to_string(10000 + i) +
            " path=/api/v1/items status=200 took=" + std::to_string(i % 97) + "ms\n";
  text.resize(1 << 16);
  return text;
}

std::vector<std::string> ten_secrets() {
  std::mt19937 rng(7);
  std::vector<std::string> out;
  const std::string alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  for (int i = 0; i < 10; ++i) {
    std::string s = i % 2 ? "sk-live-" : "ghp_";
    for (int k = 0; k < 24; ++k) s += alphabet[rng() % alphabet.size()];
    out.push_back(s);
  }
  return out;
}

// (d): GiB/s through feed() against a plain copy of the same pieces.
std::pair<double, double> redact_in_process(uint64_t mib) {
  const std::string piece = log_text();
  std::string out(piece.size() + sp::kMaxSecretBytes, '\0');
  const uint64_t pieces = mib * 16;  // 64 KiB each
  uint64_t t0 = now_ns();
  volatile char sink = 0;
  for (uint64_t i = 0; i < pieces; ++i) {
    std::memcpy(out.data(), piece.data(), piece.size());
    sink = sink + out[i % piece.size()];
  }
  const double copy_s = double(now_ns() - t0) / 1e9;
  sp::Redactor r(ten_secrets());
  t0 = now_ns();
  for (uint64_t i = 0; i < pieces; ++i) {
    const size_t n = r.feed(piece, out.data());
    sink = sink + out[n / 2];
  }
  const double redact_s = double(now_ns() - t0) / 1e9;
  const double gib = double(mib) / 1024;
  return {gib / copy_s, gib / redact_s};
}

// (e): a detached job writing `mib` MiB of that text; its duration in ms.
double redact_job_ms(const std::string& socket, uint64_t mib, bool secrets) {
  auto fd = connect_unix(socket);
  if (!fd) fail(fd.error().message());
  Conn c(std::move(*fd));
  json::array secret_list;
  for (const std::string& s : ten_secrets()) secret_list.emplace_back(s);
  // One line of the text, written again and again by `yes`.
  json::object submit{{"command", "yes '" + log_text().substr(0, 4000) + "' | head -c " +
                                      std::to_string(mib << 20)}};
  if (secrets) submit["secrets"] = secret_list;
  if (!c.send_all(request(1, "job_submit", submit))) fail("send");
  auto line = c.read_line();
  if (!line) fail(line.error().message());
  json::value v = json::parse(*line);
  if (!v.as_object().contains("result")) fail("job_submit: " + std::string(*line));
  const std::string id(v.at("result").at("job_id").as_string());
  if (!c.send_all(request(2, "job_wait", {{"job_id", id}, {"max_output_bytes", 0}}))) fail("send");
  line = c.read_line();
  if (!line) fail(line.error().message());
  v = json::parse(*line);
  const json::object& r = v.at("result").as_object();
  if (r.at("state") != "exited") fail("redaction job: " + std::string(*line));
  const double ms = double(r.at("duration_ms").to_number<int64_t>());
  if (!c.send_all(request(3, "job_forget", {{"job_id", id}}))) fail("send");
  (void)c.read_line();
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app{"shell-pool interactive and redaction benchmark: each against its baseline"};
  app.option_defaults()->always_capture_default();
  app.add_option("--rounds", opt.rounds, "lines per round-trip phase")->check(CLI::PositiveNumber);
  app.add_option("--repeat", opt.repeat, "run every phase K times, then print medians")
      ->check(CLI::PositiveNumber);
  app.add_option("--redact-mib", opt.redact_mib, "MiB through the redactor in (d) and (e)");
  app.add_option("--daemon", opt.daemon, "shell-poold binary (default: next to this one)");
  CLI11_PARSE(app, argc, argv);
  const std::string exe = find_daemon(opt.daemon);
  if (exe.empty()) fail("no shell-poold found; pass --daemon");

  std::string tmpl = (fs::temp_directory_path() / "sp-bench-XXXXXX").string();
  if (!mkdtemp(tmpl.data())) fail("mkdtemp");
  const TempDir dir{tmpl};
  const std::string socket = tmpl + "/sock";
  Daemon daemon;
  if (auto st = daemon.start(exe, {"--workers", "1"}, socket, tmpl + "/log"); !st)
    fail(st.error().message());
  if (auto st = daemon.wait_ready(socket, 10); !st) fail(st.error().message() + daemon.log_tail());

  std::vector<double> a50, b50, c50, a99, b99, c99, copy, redact, plain_ms, secret_ms;
  for (int k = 0; k < opt.repeat; ++k) {
    Stats a = raw_round_trip(opt.rounds), b = daemon_round_trip(socket, opt.rounds, false),
          c = daemon_round_trip(socket, opt.rounds, true);
    a50.push_back(a.p50_us), a99.push_back(a.p99_us);
    b50.push_back(b.p50_us), b99.push_back(b.p99_us);
    c50.push_back(c.p50_us), c99.push_back(c.p99_us);
    auto [cp, rd] = redact_in_process(opt.redact_mib);
    copy.push_back(cp), redact.push_back(rd);
    plain_ms.push_back(redact_job_ms(socket, opt.redact_mib, false));
    secret_ms.push_back(redact_job_ms(socket, opt.redact_mib, true));
    std::fprintf(stderr,
                 "round %d: a %.1f b %.1f c %.1f µs; redact %.2f/%.2f GiB/s; job %.0f/%.0f ms\n",
                 k + 1, a.p50_us, b.p50_us, c.p50_us, cp, rd, plain_ms.back(), secret_ms.back());
  }
  (void)daemon.stop(10);
  std::printf("medians of %d rounds, %d lines each\n", opt.repeat, opt.rounds);
  std::printf("(a) raw pipe round trip          p50 %8.1f µs  p99 %8.1f µs\n", median(a50),
              median(a99));
  std::printf("(b) daemon, pipe job             p50 %8.1f µs  p99 %8.1f µs  (b/a %.1fx)\n",
              median(b50), median(b99), median(b50) / median(a50));
  std::printf("(c) daemon, PTY job              p50 %8.1f µs  p99 %8.1f µs  (c/a %.1fx)\n",
              median(c50), median(c99), median(c50) / median(a50));
  std::printf("(d) in process, %llu MiB: copy %.2f GiB/s, redact with 10 secrets %.2f GiB/s\n",
              (unsigned long long)opt.redact_mib, median(copy), median(redact));
  std::printf("(e) a job writing %llu MiB: %.0f ms without secrets, %.0f ms with 10 (x%.2f)\n",
              (unsigned long long)opt.redact_mib, median(plain_ms), median(secret_ms),
              median(secret_ms) / median(plain_ms));
  return 0;
}
