// The CLI's `service` commands, over the daemon's supervised services
// (service_start ... service_logs): a service is a long-running command that
// shell-poold keeps up under a name, restarting it by its policy and probing
// it for readiness. Each subcommand is one request whose answer is printed
// as JSON, except `logs` (the service's output, byte-exact) and `wait`
// (which also exits 1 when the state it waited for was not reached).
// Single-threaded, like the rest of the CLI.
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

// Every `service` flag's value. add_service_commands binds the options to
// these fields, so they must outlive the parse. A flag not given stays empty
// (nullopt): its field is left out of the request and the daemon's default
// applies.
struct ServiceFlags {
  std::string name;
  // start: the command, and how it runs.
  std::vector<std::string> command, env;
  std::string line, cwd, session;
  // start: restarts, readiness, stopping, the log.
  std::string restart;
  std::optional<uint64_t> backoff_ms, backoff_max_ms, max_restarts, window_ms;
  std::optional<uint16_t> ready_tcp;
  std::string ready_http, ready_file, ready_cmd;
  std::optional<uint64_t> ready_delay_ms, ready_period_ms, ready_timeout_ms, start_period_ms;
  std::string stop_signal;
  std::optional<uint64_t> stop_grace_ms, log_bytes;
  bool wait_ready = false;
  // wait.
  std::string until;
  std::optional<double> timeout;
  // logs.
  bool follow = false;
  std::optional<uint64_t> tail;
  std::string stream;
};

// The `service` subcommands; after parsing, the one given is true, and so
// is `all` (`service` itself).
struct ServiceCommands {
  CLI::App* all;
  CLI::App *start, *stop, *restart, *status, *list, *logs, *wait, *rm;
};

// Adds `service` and its subcommands to `app`, bound to `f`.
ServiceCommands add_service_commands(CLI::App& app, ServiceFlags& f);
// Runs the `service` subcommand that was given; returns the CLI's exit code.
int run_service_command(Client& client, const ServiceFlags& f, const ServiceCommands& c);

}  // namespace sp::cli
