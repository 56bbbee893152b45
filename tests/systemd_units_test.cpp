// What dist/ ships, run for real: the default configuration
// (dist/shell-pool.toml) in the daemon, and the user units under the user's
// systemd manager: activation on the first connection, READY, a reload that
// returns when done, and stop.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "tests/daemon_harness.h"
#include "tests/dist_harness.h"

using namespace sp::test;

namespace {

const std::string kShippedConfig = std::string(kSourceDir) + "/dist/shell-pool.toml";

// The options the shipped configuration documents: its "#name = value" lines.
std::set<std::string> documented_options(const std::string& toml) {
  std::set<std::string> names;
  std::regex option(R"(^#([a-z][a-z0-9-]*) = )");
  std::istringstream in(toml);
  std::smatch m;
  for (std::string line; std::getline(in, line);)
    if (std::regex_search(line, m, option)) names.insert(m[1]);
  return names;
}

// The long options shell-poold --help lists, but those a config file does
// not set: --help, --version, --config itself, and --socket (the units and
// whoever runs the daemon pass it).
std::set<std::string> config_options(const std::string& help) {
  std::set<std::string> names;
  std::regex option(R"(^\s+(?:-\w,)?--([a-z][a-z0-9-]*))");
  std::istringstream in(help);
  std::smatch m;
  for (std::string line; std::getline(in, line);)
    if (std::regex_search(line, m, option)) names.insert(m[1]);
  for (const char* not_in_config : {"help", "version", "config", "socket"})
    names.erase(not_in_config);
  return names;
}

std::string joined(const std::set<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : " ") + n;
  return out;
}

}  // namespace

TEST_CASE("the shipped configuration loads: the daemon starts with it, answers and reloads it",
          "[config]") {
  START_DAEMON(d, DaemonOptions{.flags = {"--workers", "1", "--config", kShippedConfig}});
  Client c(d.socket());
  REQUIRE(c.connected());
  CHECK(num(health(c).at("config").as_object(), "generation") == 1);
  CHECK(str(execute(c, sh("echo ok")), "stdout") == "ok\n");
  CHECK(num(result_of(c.call("reload", nullptr)), "generation") == 2);
  stop_cleanly(d);
}

TEST_CASE("the shipped configuration documents every option, each with a valid value", "[config]") {
  TempDir tmp;
  const std::string shipped = read_file(kShippedConfig);
  ProgramRun help = run_program({SHELL_POOLD, "--help"}, tmp.path());
  REQUIRE(help.exit_code == 0);
  std::set<std::string> documented = documented_options(shipped);
  std::set<std::string> options = config_options(help.out);
  REQUIRE(options.size() > 20);
  INFO("documented: " << joined(documented) << "\noptions: " << joined(options));
  CHECK(documented == options);

  // Every documented line taken in at once is a configuration the daemon
  // starts with, and its values are in effect.
  const std::string all = tmp.path() + "/all.toml";
  REQUIRE(write_file(
      all, std::regex_replace(shipped, std::regex(R"((^|\n)#([a-z][a-z0-9-]* = ))"), "$1$2")));
  INFO(read_file(all));
  START_DAEMON(d, DaemonOptions{.flags = {"--config", all}, .wait_workers = false});
  Client c(d.socket());
  REQUIRE(c.connected());
  json::object h = health(c);
  CHECK(h.at("workers").as_array().size() == 4);                  // workers = 4
  CHECK(num(h.at("jobs").as_object(), "max_concurrent") == 256);  // max-concurrent = 256
  CHECK(str(execute(c, sh("awk '/^Max cpu time/ {print $4}' /proc/self/limits")), "stdout") ==
        "3600\n");  // limit = [..., "cpu_seconds=3600"]
  CHECK(num(result_of(c.call("reload", nullptr)), "generation") == 2);  // and reloads
  stop_cleanly(d);
}

namespace {

ProgramRun systemctl_user(const std::string& dir, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {kSystemctl, "--user"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv, dir, {}, 60);
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// The test's copies of the user units in the user manager's runtime unit
// directory, under a name of their own; stopped, removed and forgotten by
// the manager again however the test ends.
class TestUnits {
 public:
  TestUnits(std::string unit_dir, std::string name, std::string work)
      : unit_dir_(std::move(unit_dir)), name_(std::move(name)), work_(std::move(work)) {}
  ~TestUnits() {
    systemctl_user(work_, {"stop", socket(), service()});
    std::error_code ec;
    std::filesystem::remove(unit_dir_ + "/" + socket(), ec);
    std::filesystem::remove(unit_dir_ + "/" + service(), ec);
    systemctl_user(work_, {"daemon-reload"});
    systemctl_user(work_, {"reset-failed", socket(), service()});
  }
  TestUnits(const TestUnits&) = delete;
  TestUnits& operator=(const TestUnits&) = delete;

  std::string socket() const { return name_ + ".socket"; }
  std::string service() const { return name_ + ".service"; }
  std::string is_active(const std::string& unit) const {
    return trimmed(systemctl_user(work_, {"is-active", unit}).out);
  }
  std::string property(const std::string& unit, const std::string& name) const {
    return trimmed(systemctl_user(work_, {"show", "-p", name, "--value", unit}).out);
  }

 private:
  std::string unit_dir_, name_, work_;
};

}  // namespace

TEST_CASE("the user units run under a user manager: activation, ready, reload, stop",
          "[systemd][units]") {
  if (!file_exists("/run/systemd/system")) {
    WARN(
        "skipped: no systemd user manager here: PID 1 is not systemd (/run/systemd/system is "
        "missing), so none runs, and `systemd --user` will not start without one (\"Trying to "
        "run as user instance, but the system has not been booted with systemd\"); made to, "
        "it would take this machine's root cgroup for its own");
    return;
  }
  TempDir tmp;
  const char* runtime = ::getenv("XDG_RUNTIME_DIR");
  ProgramRun probe = systemctl_user(tmp.path(), {"is-system-running"});
  std::string state = trimmed(probe.out);
  if (!runtime || !kSystemctl[0] || (state != "running" && state != "degraded")) {
    WARN("skipped: no systemd user manager answers for uid "
         << ::getuid() << " (XDG_RUNTIME_DIR=" << (runtime ? runtime : "unset")
         << "; systemctl --user is-system-running: " << trimmed(probe.out + probe.err) << ")");
    return;
  }

  // The installed user units, named after this test run, running the
  // installed programs, on a socket of the test's own (a user's real daemon
  // may serve the default one).
  const std::string root = tmp.path() + "/root";
  ProgramRun install = install_build(root, "/usr", tmp.path());
  INFO(install.describe());
  REQUIRE(install.exit_code == 0);
  const std::string name = "shell-pool-test-" + std::to_string(::getpid());
  const std::string sock = tmp.path() + "/sock";
  const std::string unit_dir = std::string(runtime) + "/systemd/user";
  std::filesystem::create_directories(unit_dir);
  for (const char* kind : {".socket", ".service"}) {
    std::string text = read_file(root + "/usr/lib/systemd/user/shell-pool" + kind);
    text = replace_all(text, "%t/shell-pool/shell-pool.sock", sock);
    text = replace_all(text, "shell-pool.socket", name + ".socket");
    text = replace_all(text, "/usr/bin/", root + "/usr/bin/");
    text = replace_all(text, "/etc/shell-pool/", root + "/etc/shell-pool/");
    REQUIRE(write_file(unit_dir + "/" + name + kind, text));
  }
  TestUnits units(unit_dir, name, tmp.path());
  ProgramRun reload_units = systemctl_user(tmp.path(), {"daemon-reload"});
  INFO(reload_units.describe());
  REQUIRE(reload_units.exit_code == 0);

  ProgramRun start = systemctl_user(tmp.path(), {"start", units.socket()});
  INFO(start.describe());
  REQUIRE(start.exit_code == 0);
  CHECK(file_exists(sock));
  CHECK(units.is_active(units.service()) == "inactive");  // nothing connected yet

  // The first connection starts the service; it is active (READY=1) once
  // the daemon serves.
  Client c = Client::connect_retry(sock, 10);
  REQUIRE(c.connected());
  CHECK(num(health(c).at("config").as_object(), "generation") == 1);
  CHECK(wait_until([&] { return units.is_active(units.service()) == "active"; }, 20, 0.1));
  pid_t main_pid = std::stoi("0" + units.property(units.service(), "MainPID"));
  CHECK_THAT(cmdline_of(main_pid), Catch::Contains("shell-poold"));

  // systemctl reload returns once the reload is done.
  ProgramRun reload = systemctl_user(tmp.path(), {"reload", units.service()});
  INFO(reload.describe());
  CHECK(reload.exit_code == 0);
  CHECK(num(health(c).at("config").as_object(), "generation") == 2);
  CHECK(units.is_active(units.service()) == "active");

  // Stop: the daemon drains (nothing runs), exits 0 and leaves nothing.
  c.close();
  ProgramRun stop = systemctl_user(tmp.path(), {"stop", units.service(), units.socket()});
  INFO(stop.describe());
  CHECK(stop.exit_code == 0);
  CHECK(units.is_active(units.service()) == "inactive");
  CHECK(units.property(units.service(), "Result") == "success");
  CHECK(!file_exists(sock));  // RemoveOnStop=yes
  CHECK(pids_matching(sock).empty());
}
