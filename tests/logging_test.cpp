// How the real shell-poold logs: the formats (--log-format), the journal
// detected from JOURNAL_STREAM, and deaths in a kill storm bounded.
#include <signal.h>

#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <sstream>
#include <string>

#include "tests/daemon_harness.h"

using namespace sp::test;
using Catch::Contains;
using Catch::StartsWith;

namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  return lines;
}

}  // namespace

TEST_CASE("--log-format journal: <N> priority prefixes and no timestamps", "[daemon][logging]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--log-format", "journal"}});
  stop_cleanly(d);
  for (const std::string& line : lines_of(d.log())) {
    INFO(line);
    CHECK_THAT(line, StartsWith("<6>[") || StartsWith("<4>[") || StartsWith("<3>["));
  }
  CHECK_THAT(d.log(),
             Contains("<6>[supervisor ") && Contains("<6>[worker 0 ") && Contains("<6>[frontend "));
}

TEST_CASE("--log-format auto: journal only when stderr is the stream JOURNAL_STREAM names",
          "[daemon][logging]") {
  SECTION("stderr is that stream") {
    // The shell names its own stderr (the log file) and execs the daemon on it.
    START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"},
                                  .wrapper = {"/bin/sh", "-c",
                                              "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) "
                                              "exec \"$0\" \"$@\""}});
    stop_cleanly(d);
    CHECK_THAT(d.log(), StartsWith("<6>[supervisor "));
  }
  SECTION("stderr is something else") {
    START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1"}, .env = {"JOURNAL_STREAM=1:2"}});
    stop_cleanly(d);
    CHECK_THAT(d.log(), StartsWith("20"));  // a timestamp
  }
}

TEST_CASE("--log-format json: one object a line", "[daemon][logging]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--log-format", "json"}});
  Client c(d.socket());
  // A message with quotes and a newline in it (a refused limit) stays one line.
  json::object p = sh("true");
  p["limits"] = {{"open_files", 0}};
  c.call("execute", p);
  stop_cleanly(d);
  size_t n = 0;
  for (const std::string& line : lines_of(d.log())) {
    INFO(line);
    boost::system::error_code ec;
    json::value v = json::parse(line, ec);
    REQUIRE_FALSE(ec);
    const json::object& o = v.as_object();
    CHECK(o.contains("ts"));
    CHECK(o.contains("level"));
    CHECK(o.contains("role"));
    CHECK(o.at("pid").is_int64());
    CHECK(o.at("msg").is_string());
    ++n;
  }
  CHECK(n > 5);
}

TEST_CASE("a kill storm logs at most 5 deaths of a role per 10 s", "[daemon][logging]") {
  START_DAEMON(d, {"--workers", "1"});
  Client c(d.socket());
  kill_ready_worker(d, c, 7);
  stop_cleanly(d);
  CHECK(count_of(d.log(), "worker 0 killed by signal KILL") == 5);
}
