// Helpers of the tests of what dist/ ships (the systemd units, the default
// configuration, the install and the .deb): running helper programs (cmake,
// cpack, systemd-analyze, systemctl, dpkg-deb) with their stdout and stderr
// captured apart, so a test can require that stderr stays empty; installing
// this build into a temp tree; reading unit files.
//
// For the test's threads; nothing here asserts. A helper program runs in a
// process group of its own, killed whole if it overruns its timeout.
#pragma once

#include <string>
#include <vector>

namespace sp::test {

// Where things are, from CMake. A tool that is not installed is "".
inline constexpr const char* kSourceDir = SP_SOURCE_DIR;
inline constexpr const char* kBuildDir = SP_BUILD_DIR;
inline constexpr const char* kCmake = SP_CMAKE;
inline constexpr const char* kCpack = SP_CPACK;
inline constexpr const char* kSystemdAnalyze = SP_SYSTEMD_ANALYZE;
inline constexpr const char* kSystemctl = SP_SYSTEMCTL;
inline constexpr const char* kSocketActivate = SP_SYSTEMD_SOCKET_ACTIVATE;
inline constexpr const char* kDpkgDeb = SP_DPKG_DEB;

struct ProgramRun {
  std::string command;    // argv joined with spaces
  bool finished = false;  // false: killed after the timeout (or never started)
  int exit_code = -1;     // 128+N if signal N ended it
  std::string out, err;
  // The command, how it ended and both streams, for INFO().
  std::string describe() const;
};

// Runs `argv` (argv[0] an absolute path) with this process's environment
// changed by `env`: "NAME=value" sets NAME, a bare "NAME" removes it. Its
// stdout and stderr go through files in `dir`.
ProgramRun run_program(const std::vector<std::string>& argv, const std::string& dir,
                       const std::vector<std::string>& env = {}, double timeout_s = 120);

// `cmake --install <build dir> --prefix <prefix>` with DESTDIR=<destdir>;
// its output files go to `dir`.
ProgramRun install_build(const std::string& destdir, const std::string& prefix,
                         const std::string& dir);

// The values of `key=` lines of a unit file's text, in order (comments and
// section headers skipped, no line continuations: the shipped units use none).
std::vector<std::string> unit_values(const std::string& unit_text, const std::string& key);
// The last one, or "" if there is none.
std::string unit_value(const std::string& unit_text, const std::string& key);

std::string replace_all(std::string text, const std::string& from, const std::string& to);
// Every file (regular or symlink) under `root`, as paths relative to it, sorted.
std::vector<std::string> files_under(const std::string& root);
bool write_file(const std::string& path, const std::string& content);  // false if it cannot

}  // namespace sp::test
