#include "tests/dist_harness.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/unique_fd.h"
#include "tests/daemon_harness.h"

extern char** environ;

namespace sp::test {

namespace {

// This process's environment with `changes` applied (see run_program).
std::vector<std::string> changed_environment(const std::vector<std::string>& changes) {
  auto name_of = [](const std::string& entry) { return entry.substr(0, entry.find('=')); };
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string entry = *e;
    if (std::none_of(changes.begin(), changes.end(),
                     [&](const std::string& c) { return name_of(c) == name_of(entry); }))
      env.push_back(entry);
  }
  for (const std::string& c : changes)
    if (c.find('=') != std::string::npos) env.push_back(c);
  return env;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r");
  size_t e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

}  // namespace

std::string ProgramRun::describe() const {
  return command + " -> " + (finished ? "exit " + std::to_string(exit_code) : "killed (timeout)") +
         "\n--- stdout:\n" + out + "--- stderr:\n" + err;
}

ProgramRun run_program(const std::vector<std::string>& args, const std::string& dir,
                       const std::vector<std::string>& env, double timeout_s) {
  static std::atomic<int> serial{0};
  ProgramRun run;
  for (const std::string& a : args) run.command += (run.command.empty() ? "" : " ") + a;
  std::string base = dir + "/program" + std::to_string(++serial);
  UniqueFd out(::open((base + ".out").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  UniqueFd err(::open((base + ".err").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!out || !err || !devnull || args.empty()) return run;

  // Everything the child touches is prepared before the fork.
  std::vector<std::string> environment = changed_environment(env);
  std::vector<char*> argv, envp;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const std::string& e : environment) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return run;
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a test that dies takes its helper along
    if (::getppid() != parent) _exit(126);
    if (::dup2(devnull.get(), 0) < 0 || ::dup2(out.get(), 1) < 0 || ::dup2(err.get(), 2) < 0)
      _exit(126);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  ::setpgid(pid, pid);  // also here, so that the group exists before any kill below
  int status = 0;
  run.finished =
      wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, timeout_s, 0.01);
  if (!run.finished) {
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  if (WIFEXITED(status)) run.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) run.exit_code = 128 + WTERMSIG(status);
  run.out = read_file(base + ".out");
  run.err = read_file(base + ".err");
  return run;
}

ProgramRun install_build(const std::string& destdir, const std::string& prefix,
                         const std::string& dir) {
  return run_program({kCmake, "--install", kBuildDir, "--prefix", prefix}, dir,
                     {"DESTDIR=" + destdir});
}

std::vector<std::string> unit_values(const std::string& unit_text, const std::string& key) {
  std::vector<std::string> values;
  std::istringstream in(unit_text);
  for (std::string line; std::getline(in, line);) {
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';' || line[0] == '[') continue;
    size_t eq = line.find('=');
    if (eq != std::string::npos && trim(line.substr(0, eq)) == key)
      values.push_back(trim(line.substr(eq + 1)));
  }
  return values;
}

std::string unit_value(const std::string& unit_text, const std::string& key) {
  std::vector<std::string> values = unit_values(unit_text, key);
  return values.empty() ? std::string() : values.back();
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

std::vector<std::string> files_under(const std::string& root) {
  std::vector<std::string> files;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec))
    if (it->is_regular_file() || it->is_symlink())
      files.push_back(std::filesystem::relative(it->path(), root).string());
  std::sort(files.begin(), files.end());
  return files;
}

bool write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  return bool(out.flush());
}

}  // namespace sp::test
