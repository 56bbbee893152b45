// `cmake --install` and `cpack -G DEB` of this build: what lands where (the
// two programs, the systemd units naming them, the default configuration,
// the docs, and nothing test-only), that systemd itself accepts the
// installed units (systemd-analyze verify, nothing on stderr), and that the
// installed daemon runs and reloads by the units' command lines.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "tests/daemon_harness.h"
#include "tests/dist_harness.h"

using namespace sp::test;
using Catch::Contains;

namespace {

bool executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111) == 0111;
}

std::vector<std::string> words(const std::string& command_line) {
  std::istringstream in(command_line);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

unsigned mode_of(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_mode & 07777 : 0;
}

// Installs this build under `prefix` into <dir>/root; returns that root.
std::string install_into(const TempDir& dir, const std::string& prefix) {
  std::string root = dir.path() + "/root";
  ProgramRun install = install_build(root, prefix, dir.path());
  INFO(install.describe());
  REQUIRE(install.exit_code == 0);
  return root;
}

// What every shipped service and socket unit must say (and must not), for
// units whose programs live in `bindir`, configuration is `config` and socket
// is `socket`.
void check_units(const std::string& service, const std::string& socket_unit,
                 const std::string& bindir, const std::string& config, const std::string& socket) {
  INFO(service);
  CHECK(unit_value(service, "ExecStart") ==
        bindir + "/shell-poold --config " + config + " --socket " + socket);
  CHECK(unit_value(service, "ExecReload") == bindir + "/shell-pool --socket " + socket + " reload");
  CHECK(unit_value(service, "Type") == "notify");
  CHECK(unit_value(service, "NotifyAccess") == "main");
  CHECK(unit_value(service, "KillMode") == "mixed");
  CHECK(unit_value(service, "Restart") == "on-failure");
  CHECK(unit_value(service, "RestartPreventExitStatus") == "78");
  CHECK(unit_value(service, "Delegate") == "yes");
  CHECK(unit_value(service, "OOMPolicy") == "continue");
  CHECK(unit_value(service, "WatchdogSec") == "30s");
  // Above the default drain (10 s) plus the daemon's 5 s before SIGKILL.
  std::string stop = unit_value(service, "TimeoutStopSec");
  REQUIRE(stop.size() > 1);
  CHECK(stop.back() == 's');
  CHECK(std::stod(stop) > 15);
  // Each of these would break jobs (setuid tools, per-job cgroups, JITs).
  for (const char* key : {"NoNewPrivileges", "ProtectControlGroups", "MemoryDenyWriteExecute"})
    CHECK(unit_values(service, key).empty());
  CHECK(service.find("@SP_") == std::string::npos);  // nothing left unconfigured

  INFO(socket_unit);
  CHECK(unit_value(socket_unit, "ListenStream") == socket);
  CHECK(unit_value(socket_unit, "FileDescriptorName") == "rpc");
  CHECK(unit_value(socket_unit, "SocketMode") == "0600");
  CHECK(unit_value(socket_unit, "DirectoryMode") == "0700");
  CHECK(socket_unit.find("@SP_") == std::string::npos);
}

}  // namespace

TEST_CASE("cmake --install puts the programs, units, configuration and docs under the prefix",
          "[install]") {
  TempDir dir;
  const std::string root = install_into(dir, "/usr");

  // Exactly these files: no test binary, crash-point daemon or benchmark.
  std::vector<std::string> expected = {
      "etc/shell-pool/shell-pool.toml",
      "usr/bin/shell-pool",
      "usr/bin/shell-poold",
      "usr/lib/systemd/system/shell-pool.service",
      "usr/lib/systemd/system/shell-pool.socket",
      "usr/lib/systemd/user/shell-pool.service",
      "usr/lib/systemd/user/shell-pool.socket",
      "usr/share/doc/shell-pool/BENCHMARKS.md",
      "usr/share/doc/shell-pool/README.md",
  };
  for (const auto& doc : std::filesystem::directory_iterator(std::string(kSourceDir) + "/docs"))
    if (doc.path().extension() == ".md")
      expected.push_back("usr/share/doc/shell-pool/docs/" + doc.path().filename().string());
  std::sort(expected.begin(), expected.end());
  CHECK(files_under(root) == expected);

  CHECK(executable_file(root + "/usr/bin/shell-poold"));
  CHECK(executable_file(root + "/usr/bin/shell-pool"));
  for (const char* unit : {"system/shell-pool.service", "system/shell-pool.socket",
                           "user/shell-pool.service", "user/shell-pool.socket"})
    CHECK(mode_of(root + "/usr/lib/systemd/" + unit) == 0644);
  CHECK(read_file(root + "/etc/shell-pool/shell-pool.toml") ==
        read_file(std::string(kSourceDir) + "/dist/shell-pool.toml"));
  CHECK(read_file(root + "/usr/share/doc/shell-pool/README.md") ==
        read_file(std::string(kSourceDir) + "/README.md"));
}

TEST_CASE("the installed units run the installed programs on their socket unit's path",
          "[install]") {
  TempDir dir;
  const std::string root = install_into(dir, "/usr");
  const std::string units = root + "/usr/lib/systemd/";
  check_units(read_file(units + "system/shell-pool.service"),
              read_file(units + "system/shell-pool.socket"), "/usr/bin",
              "/etc/shell-pool/shell-pool.toml", "/run/shell-pool/shell-pool.sock");
  check_units(read_file(units + "user/shell-pool.service"),
              read_file(units + "user/shell-pool.socket"), "/usr/bin",
              "/etc/shell-pool/shell-pool.toml", "%t/shell-pool/shell-pool.sock");
  CHECK(unit_value(read_file(units + "system/shell-pool.service"), "Documentation") ==
        "file:///usr/share/doc/shell-pool/README.md");
}

TEST_CASE("the units follow the prefix given at install time, not the configured one",
          "[install]") {
  TempDir dir;
  // /opt/<name> puts the configuration under /etc/opt/<name> (GNUInstallDirs).
  const std::string root = install_into(dir, "/opt/sp");
  const std::string config = "/etc/opt/sp/shell-pool/shell-pool.toml";
  CHECK(executable_file(root + "/opt/sp/bin/shell-poold"));
  CHECK(file_exists(root + config));
  check_units(read_file(root + "/opt/sp/lib/systemd/system/shell-pool.service"),
              read_file(root + "/opt/sp/lib/systemd/system/shell-pool.socket"), "/opt/sp/bin",
              config, "/run/shell-pool/shell-pool.sock");
}

TEST_CASE("an installed configuration is kept by the next install", "[install]") {
  TempDir dir;
  const std::string root = install_into(dir, "/usr");
  const std::string config = root + "/etc/shell-pool/shell-pool.toml";
  REQUIRE(write_file(config, "workers = 3\n"));
  install_into(dir, "/usr");
  CHECK(read_file(config) == "workers = 3\n");
}

TEST_CASE(
    "the installed daemon runs as ExecStart says, on the socket unit's fd, and reloads by "
    "ExecReload",
    "[install][systemd]") {
  if (std::string(kSocketActivate).empty()) {
    WARN("skipped: systemd-socket-activate is not installed (Debian package systemd)");
    return;
  }
  TempDir dir;
  const std::string root = install_into(dir, "/usr");
  const std::string service = read_file(root + "/usr/lib/systemd/system/shell-pool.service");
  // <bindir>/shell-poold --config <file> --socket <path>, the paths mapped into
  // the tree, the socket passed as shell-pool.socket passes it (named rpc).
  std::vector<std::string> start = words(unit_value(service, "ExecStart"));
  REQUIRE(start.size() == 5);
  REQUIRE(start[1] == "--config");
  REQUIRE(start[3] == "--socket");
  const std::string sock = dir.path() + "/activated.sock";
  START_DAEMON(d, DaemonOptions{.flags = {"--config", root + start[2]},
                                .socket = sock,  // the harness passes it as --socket
                                .binary = root + start[0],
                                .wrapper = {kSocketActivate, "-l", sock, "--fdname=rpc", "-E",
                                            "XDG_RUNTIME_DIR=" + dir.path()}});
  Client c(sock);
  REQUIRE(c.connected());
  CHECK(str(execute(c, sh("echo installed")), "stdout") == "installed\n");

  // <bindir>/shell-pool --socket <path> reload: done when it returns.
  std::vector<std::string> reload = words(unit_value(service, "ExecReload"));
  REQUIRE(reload.size() == 4);
  REQUIRE(reload[1] == "--socket");
  ProgramRun run = run_program({root + reload[0], "--socket", sock, reload[3]}, dir.path());
  INFO(run.describe());
  CHECK(run.exit_code == 0);
  CHECK(num(health(c).at("config").as_object(), "generation") == 2);
  CHECK(d.stop() == 0);
  CHECK(!file_exists(d.shm_path()));
}

TEST_CASE("systemd-analyze verify accepts the installed units without a word", "[install]") {
  if (std::string(kSystemdAnalyze).empty()) {
    WARN("skipped: systemd-analyze is not installed (Debian package systemd)");
    return;
  }
  TempDir dir;
  const std::string root = install_into(dir, "/usr");

  SECTION("system units, in the installed tree as root") {
    // --root: the units and the programs they run are looked up in the tree.
    // The tree has no sysinit.target and the like to depend on, so errors
    // of units other than ours are not reported (--recursive-errors=no).
    std::vector<std::string> verify = {kSystemdAnalyze,     "verify",
                                       "--root=" + root,    "--recursive-errors=no",
                                       "shell-pool.socket", "shell-pool.service"};
    ProgramRun run = run_program(verify, dir.path());
    INFO(run.describe());
    CHECK(run.exit_code == 0);
    CHECK(run.err.empty());
    CHECK(run.out.empty());

    // It does check the programs: one missing is an error.
    std::filesystem::remove(root + "/usr/bin/shell-poold");
    ProgramRun broken = run_program(verify, dir.path());
    INFO(broken.describe());
    CHECK(broken.exit_code != 0);
    CHECK_THAT(broken.err, Contains("/usr/bin/shell-poold"));
  }

  SECTION("user units, for a user manager, with the programs at their installed place") {
    // A user manager takes no --root: the units are verified as copies that
    // name the programs in the tree, in a private runtime and config dir.
    const std::string copies = dir.path() + "/user-units";
    REQUIRE(std::filesystem::create_directories(copies + "/runtime"));
    std::filesystem::permissions(copies + "/runtime", std::filesystem::perms::owner_all);
    for (const char* unit : {"shell-pool.socket", "shell-pool.service"}) {
      std::string text = read_file(root + "/usr/lib/systemd/user/" + unit);
      REQUIRE(write_file(copies + "/" + unit, replace_all(text, "/usr/bin/", root + "/usr/bin/")));
    }
    ProgramRun run =
        run_program({kSystemdAnalyze, "verify", "--user", copies + "/shell-pool.socket",
                     copies + "/shell-pool.service"},
                    dir.path(),
                    {"XDG_RUNTIME_DIR=" + copies + "/runtime", "HOME=" + copies,
                     "XDG_CONFIG_HOME=" + copies + "/config", "DBUS_SESSION_BUS_ADDRESS"});
    INFO(run.describe());
    CHECK(run.exit_code == 0);
    CHECK(run.err.empty());
    CHECK(run.out.empty());
  }
}

TEST_CASE("cpack -G DEB packs the install for /usr with its dependencies and a conffile",
          "[install][deb]") {
  if (std::string(kDpkgDeb).empty()) {
    WARN("skipped: dpkg-deb is not installed");
    return;
  }
  TempDir dir;
  ProgramRun pack = run_program({kCpack, "-G", "DEB", "-B", dir.path() + "/out", "--config",
                                 std::string(kBuildDir) + "/CPackConfig.cmake"},
                                dir.path(), {}, 300);
  INFO(pack.describe());
  REQUIRE(pack.exit_code == 0);
  std::string deb;
  for (const auto& f : std::filesystem::directory_iterator(dir.path() + "/out"))
    if (f.path().extension() == ".deb") deb = f.path().string();
  REQUIRE_THAT(deb, Contains("shell-pool_"));

  ProgramRun info = run_program({kDpkgDeb, "-I", deb}, dir.path());
  INFO(info.describe());
  REQUIRE(info.exit_code == 0);
  CHECK_THAT(info.out, Contains("Package: shell-pool\n"));
  CHECK_THAT(info.out, Contains("Section: admin\n"));
  CHECK_THAT(info.out, Contains("Maintainer: "));
  CHECK_THAT(info.out, Contains("Description: crash-isolated daemon"));
  CHECK_THAT(info.out, Contains("libsystemd0"));  // from dpkg-shlibdeps
  ProgramRun conffiles = run_program({kDpkgDeb, "-I", deb, "conffiles"}, dir.path());
  CHECK(conffiles.out == "/etc/shell-pool/shell-pool.toml\n");

  ProgramRun contents = run_program({kDpkgDeb, "-c", deb}, dir.path());
  INFO(contents.describe());
  CHECK_THAT(contents.out, Contains("./usr/bin/shell-poold\n"));
  CHECK_THAT(contents.out, Contains("./usr/bin/shell-pool\n"));
  CHECK_THAT(contents.out, !Contains("crashpoints"));
  CHECK_THAT(contents.out, !Contains("_test"));

  const std::string tree = dir.path() + "/tree";
  REQUIRE(run_program({kDpkgDeb, "-x", deb, tree}, dir.path()).exit_code == 0);
  check_units(read_file(tree + "/usr/lib/systemd/system/shell-pool.service"),
              read_file(tree + "/usr/lib/systemd/system/shell-pool.socket"), "/usr/bin",
              "/etc/shell-pool/shell-pool.toml", "/run/shell-pool/shell-pool.sock");
  CHECK(read_file(tree + "/etc/shell-pool/shell-pool.toml") ==
        read_file(std::string(kSourceDir) + "/dist/shell-pool.toml"));
}
