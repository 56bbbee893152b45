// Readiness probes of supervised services: is a TCP port accepting, does an
// HTTP URL answer with the expected status, is a file there. Each probe is
// one bounded attempt (its own timeout, no retries: the caller paces
// them). Run by the probe helper (`shell-poold probe KIND ...`,
// services/probe.cpp) as a job, so a probe never blocks the frontend and a
// hung one is killed like any job. A "command" probe is a job of the
// service's own command line and needs nothing here.
// Pure apart from the sockets and files it touches; thread-compatible.
#pragma once

#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace sp::services {

struct ProbeResult {
  bool ok = false;
  std::string error;  // why not, for the service's last_probe
};

// Connects to host:port (a name or a numeric address) within `timeout_ms`.
ProbeResult probe_tcp(const std::string& host, uint16_t port, uint32_t timeout_ms);
// GET `url` (http:// only) within `timeout_ms`; ok when the status is
// `status`, or any 2xx/3xx when `status` is 0.
ProbeResult probe_http(const std::string& url, unsigned status, uint32_t timeout_ms);
// `path` exists (relative to the working directory, as the service sees it).
ProbeResult probe_file(const std::string& path);

struct ProbeArgs {
  std::string kind;  // tcp, http, file
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  std::string url, path;
  unsigned status = 0;
  uint32_t timeout_ms = 1000;
};
// The (hidden) "probe" subcommand of shell-poold, and running it: one JSON
// line {"ok": bool, "error": ...} on stdout; exit 0 when ok, else 1.
CLI::App* add_probe_command(CLI::App& app, ProbeArgs& args);
int run_probe(const ProbeArgs& args);

}  // namespace sp::services
