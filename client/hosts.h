// The CLI's remote hosts: the `host` commands over the daemon's host table
// (host_add, host_list, host_remove, host_check), and the --host and --hosts
// options of run, exec and submit. A job on one host behaves as a local one;
// a fan-out (--hosts) prints each host's output a whole line at a time with
// the host's name in front, then a summary. Single-threaded, like the rest
// of the CLI.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "client/client.h"

namespace CLI {
class App;
}

namespace sp::cli {

// Exit code of a fan-out whose failures were all connection-level (no host
// that ran the command failed): as ssh's.
inline constexpr int kConnectionFailed = 255;

// Every `host` flag's value, bound by add_host_commands (they must outlive
// the parse). A flag not given stays empty or nullopt and is left out of the
// request, so the daemon's default applies.
struct HostFlags {
  std::string name, address;  // address: [user@]address[:port]
  std::optional<uint16_t> port;
  std::string user;
  // Authentication: one of a key (with its passphrase), an agent or a password.
  std::string key_file, passphrase_file, agent_socket, password_file;
  bool agent = false;
  std::string host_key, fingerprint;
  std::optional<uint64_t> connect_timeout_ms, keepalive_ms, idle_timeout_ms, max_connections;
  bool force = false, as_json = false;
};

// The `host` subcommands; after parsing, the one given is true, and so is
// `all` (`host` itself).
struct HostCommands {
  CLI::App* all;
  CLI::App *add, *list, *rm, *check;
};

// Adds `host` and its subcommands to `app`, bound to `f`.
HostCommands add_host_commands(CLI::App& app, HostFlags& f);
// Runs the `host` subcommand that was given; returns the CLI's exit code.
int run_host_command(Client& client, const HostFlags& f, const HostCommands& c);

// Where run, exec and submit send their job: here (both empty), one host, or
// several at once.
struct TargetFlags {
  std::string host;
  std::vector<std::string> hosts;
  std::optional<uint64_t> max_parallel;
  bool fail_fast = false;
};

// Adds --host, --hosts, --max-parallel and --fail-fast to `sub`.
void add_target_options(CLI::App* sub, TargetFlags& t);
// Puts the target into a job's params; true when it is a fan-out (--hosts).
bool add_target_params(json::object& p, const TargetFlags& t);
// Runs the fan-out job `params` (with "hosts") through execute_stream:
// each host's lines prefixed with "HOST: ", stdout and stderr to ours, then
// a summary and a line for each host that did not succeed on stderr.
// Returns 0 if every host succeeded, else the worst exit code of the hosts
// that ran the command, else kConnectionFailed.
int run_fan_out(Client& client, json::object params);

}  // namespace sp::cli
