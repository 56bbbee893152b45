#include "frontend/hosts.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <sstream>

#include "common/log.h"
#include "common/remote_error.h"
#include "common/text.h"
#include "frontend/names.h"
#include "shm/codec.h"
#include "shm/role_config.h"

namespace sp::frontend {

namespace {

const char* auth_name(shm::HostAuth a) {
  switch (a) {
    case shm::HostAuth::kKey:
      return "key";
    case shm::HostAuth::kAgent:
      return "agent";
    case shm::HostAuth::kPassword:
      return "password";
  }
  return "unknown";
}

const char* policy_name(shm::HostKeyPolicy p) {
  switch (p) {
    case shm::HostKeyPolicy::kStrict:
      return "strict";
    case shm::HostKeyPolicy::kAcceptNew:
      return "accept-new";
    case shm::HostKeyPolicy::kPinned:
      return "pinned";
    case shm::HostKeyPolicy::kInsecure:
      return "insecure";
  }
  return "unknown";
}

rpc::Value text_or_null(const std::string& s) {
  return s.empty() ? rpc::Value(nullptr) : rpc::Value(s);
}

}  // namespace

// One fan-out call: its hosts' entries in request order, filled as they end.
struct Hosts::FanOutCall {
  FanOutCall(Connections& o, Reply r) : out(o), reply(std::move(r)) {}
  ~FanOutCall() {
    if (!answered) out.drop(reply);  // its client left, or it was a notification
  }
  Connections& out;
  Reply reply;
  rpc::ExecParams params;
  bool stream = false;
  std::vector<rpc::Object> entries;
  std::vector<std::string> hosts;
  size_t next = 0;     // the next host to start
  size_t running = 0;  // started, not ended
  size_t ended = 0;
  bool stopped = false;  // fail_fast: a host failed, start no more
  bool answered = false;
};

Hosts::Hosts(const shm::Segment& seg, JobQueue& queue, AttachedJobs& attached, Connections& out)
    : seg_(seg), table_(seg), queue_(queue), attached_(attached), out_(out) {}

void Hosts::add_methods(MethodTable& methods) {
  methods.add<rpc::HostAddParams>("host_add", rpc::parse_host_add_params,
                                  [this](rpc::HostAddParams& p, Reply r) { add(p, std::move(r)); });
  methods.add("host_list", [this](Reply r) { list(std::move(r)); });
  methods.add<rpc::HostNameParams>(
      "host_remove", rpc::parse_host_name_params,
      [this](rpc::HostNameParams& p, Reply r) { remove(p, std::move(r)); });
  methods.add<rpc::HostNameParams>(
      "host_check", rpc::parse_host_name_params,
      [this](rpc::HostNameParams& p, Reply r) { check(p, std::move(r)); },
      MethodTable::Holds::kInflight);
  attached_.set_fan_out(
      [this](rpc::ExecParams& p, Reply r, bool stream) { fan_out(p, std::move(r), stream); });
}

namespace {

bool same_settings(const shm::HostConfig& a, const shm::HostConfig& b) {
  return a.name == b.name && a.address == b.address && a.user == b.user && a.port == b.port &&
         a.auth == b.auth && a.key_file == b.key_file && a.agent_socket == b.agent_socket &&
         a.secret == b.secret && a.policy == b.policy && a.fingerprint == b.fingerprint &&
         a.connect_timeout_ms == b.connect_timeout_ms && a.keepalive_ms == b.keepalive_ms &&
         a.idle_timeout_ms == b.idle_timeout_ms && a.max_connections == b.max_connections;
}

// A secret file's content, without the newline that ends it; nullopt if unreadable.
std::optional<std::string> read_secret(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

}  // namespace

void Hosts::apply_config(const shm::RoleConfig& o) {
  std::vector<std::string> named;
  for (const std::string& spec : shm::config_hosts(o)) {
    auto parsed = rpc::parse_host_spec(spec);
    if (auto* e = std::get_if<rpc::RpcError>(&parsed)) {  // checked by the supervisor already
      spdlog::error("--host: {}", e->message);
      continue;
    }
    shm::HostConfig& h = std::get<rpc::HostSpec>(parsed).add.host;
    h.from_config = true;
    named.push_back(h.name);
    if (const std::string& file = std::get<rpc::HostSpec>(parsed).secret_file; !file.empty()) {
      auto secret = read_secret(file);
      if (!secret) {
        spdlog::error("--host {}: cannot read its secret file {}", h.name, file);
        continue;
      }
      if (secret->size() >= shm::kHostSecretBytes || secret->find('\0') != std::string::npos) {
        spdlog::error("--host {}: its secret file {} holds more than {} bytes or a NUL", h.name,
                      file, shm::kHostSecretBytes - 1);
        continue;
      }
      h.secret = std::move(*secret);
    }
    if (auto i = table_.find(h.name)) {
      shm::HostConfig now = table_.read(*i);
      if (!now.from_config) {
        spdlog::warn("--host {}: host_add added a host of that name, which stays", h.name);
        continue;
      }
      if (same_settings(now, h)) continue;
      table_.remove(*i);
      queue_.ring_remote();
      spdlog::info("host {} changed in the configuration: replaced", h.name);
    }
    if (std::holds_alternative<shm::HostError>(table_.add(h)))
      spdlog::error("--host {}: every host slot is taken (--hosts)", h.name);
    else
      spdlog::info("host {} from the configuration: {}@{} port {}", h.name, h.user, h.address,
                   h.port);
  }
  for (uint32_t i : table_.all()) {
    shm::HostConfig h = table_.read(i);
    if (!h.from_config || std::find(named.begin(), named.end(), h.name) != named.end()) continue;
    table_.remove(i);
    queue_.ring_remote();
    spdlog::info("host {} is no longer in the configuration: removed", h.name);
  }
}

void Hosts::add(rpc::HostAddParams& p, Reply r) {
  auto added = table_.add(p.host);
  if (auto* e = std::get_if<shm::HostError>(&added))
    return out_.fail(r, to_rpc(HostFault{*e == shm::HostError::kExists ? HostFault::kExists
                                                                       : HostFault::kTableFull,
                                         p.host.name, ""}));
  const uint32_t i = std::get<uint32_t>(added);
  spdlog::info("host {} added: {}@{} port {}, {} auth, host key {}", p.host.name, p.host.user,
               p.host.address, p.host.port, auth_name(p.host.auth), policy_name(p.host.policy));
  if (p.host.policy == shm::HostKeyPolicy::kInsecure)
    spdlog::warn("host {}: its host key will not be checked (policy insecure)", p.host.name);
  out_.answer(r, describe(i));
}

rpc::Object Hosts::describe(uint32_t i) const {
  const shm::HostConfig h = table_.read(i);
  const shm::PoolFigures f = table_.figures(i);
  const bool current = f.generation == h.generation;
  rpc::Object auth{{"type", auth_name(h.auth)}};
  if (h.auth == shm::HostAuth::kKey) {
    auth["key_file"] = h.key_file;
    auth["passphrase"] = !h.secret.empty();  // whether one is set, never what it is
  }
  if (h.auth == shm::HostAuth::kAgent) auth["agent_socket"] = text_or_null(h.agent_socket);
  rpc::Object key{{"policy", policy_name(h.policy)}};
  if (h.policy == shm::HostKeyPolicy::kPinned) key["fingerprint"] = h.fingerprint;
  return rpc::Object{
      {"name", h.name},
      {"address", h.address},
      {"port", h.port},
      {"user", h.user},
      {"auth", std::move(auth)},
      {"host_key", std::move(key)},
      {"connect_timeout_ms", h.connect_timeout_ms},
      {"keepalive_ms", h.keepalive_ms},
      {"idle_timeout_ms", h.idle_timeout_ms},
      {"max_connections", h.max_connections},
      {"from_config", h.from_config},
      {"connections", current ? f.connections : 0},
      {"connecting", current ? f.connecting : 0},
      {"busy_channels", current ? f.busy : 0},
      {"channel_cap", current ? f.channel_cap : 0},
      {"jobs_started", current ? f.jobs_started : 0},
      {"fingerprint", current ? text_or_null(f.fingerprint) : rpc::Value(nullptr)},
      {"key_type", current ? text_or_null(f.key_type) : rpc::Value(nullptr)},
      {"last_error", current ? text_or_null(f.last_error) : rpc::Value(nullptr)},
      {"last_error_at_ms",
       current && f.last_error_unix_ms ? rpc::Value(f.last_error_unix_ms) : rpc::Value(nullptr)},
  };
}

void Hosts::list(Reply r) {
  rpc::Array hosts;
  for (uint32_t i : table_.all()) hosts.emplace_back(describe(i));
  out_.answer(r, rpc::Object{{"hosts", std::move(hosts)}});
}

uint32_t Hosts::jobs_on(uint32_t i, uint32_t gen) const {
  const shm::JobTable& jobs = queue_.jobs();
  shm::DecodedSpec spec;
  uint32_t n = 0;
  for (uint32_t s = 0; s < jobs.size(); ++s) {
    const shm::JobState st = jobs.load(s).state;
    if (st == shm::JobState::kFree || shm::is_terminal(st)) continue;
    if (!(jobs.slot(s).control.load(std::memory_order_acquire) & shm::kControlRemote)) continue;
    if (!shm::decode_spec(seg_.spec(s), jobs.slot(s).spec_words, spec)) continue;
    if (spec.host_slot == i + 1 && spec.host_generation == gen) ++n;
  }
  return n;
}

void Hosts::remove(rpc::HostNameParams& p, Reply r) {
  auto i = table_.find(p.name);
  if (!i) return out_.fail(r, to_rpc(HostFault{HostFault::kNoHost, p.name, ""}));
  const uint32_t busy = jobs_on(*i, table_.generation(*i));
  if (busy && !p.force)
    return out_.fail(r, to_rpc(HostFault{HostFault::kBusy, p.name, std::to_string(busy)}));
  table_.remove(*i);
  queue_.ring_remote();  // its connections close; its jobs end host_removed
  spdlog::info("host {} removed{}", p.name,
               busy ? " with " + std::to_string(busy) + " jobs, which end" : "");
  out_.answer(r, rpc::Object{{"name", p.name}, {"removed", true}, {"jobs_ended", busy}});
}

void Hosts::check(rpc::HostNameParams& p, Reply r) {
  if (!table_.find(p.name)) return out_.fail(r, to_rpc(HostFault{HostFault::kNoHost, p.name, ""}));
  rpc::ExecParams job;
  job.command = "host_check";
  job.host = p.name;
  job.host_check = true;
  job.max_output_bytes = 4096;
  std::string name = p.name;
  attached_.run(job, std::move(r), [this, name](Reply reply, AttachedJobs::Ended e) {
    rpc::Object o{{"name", name}, {"ok", e.state == shm::JobState::kExited}};
    std::istringstream lines(e.out);
    for (std::string line; std::getline(lines, line);) {
      size_t sp = line.find(' ');
      if (sp == std::string::npos) continue;
      std::string key = line.substr(0, sp), value = line.substr(sp + 1);
      if (key == "auth_methods") {
        rpc::Array methods;
        for (size_t at = 0; at <= value.size();) {
          size_t comma = std::min(value.find(',', at), value.size());
          if (comma > at) methods.emplace_back(value.substr(at, comma - at));
          at = comma + 1;
        }
        o["auth_methods"] = std::move(methods);
      } else if (key == "latency_us") {
        o["latency_ms"] = double(std::stoull(value)) / 1000.0;
      } else if (key == "fingerprint" || key == "key_type" || key == "banner") {
        o[key] = value;
      }
    }
    o["error"] =
        e.state == shm::JobState::kExited
            ? rpc::Value(nullptr)
            : remote_error_value(e.error_code ? e.error_code : uint8_t(RemoteError::kProtocolError),
                                 e.error_phase, e.failure);
    out_.answer(reply, o);
  });
}

void Hosts::fan_out(rpc::ExecParams& p, Reply r, bool stream) {
  for (const std::string& h : p.hosts)
    if (!table_.find(h)) return out_.fail(r, to_rpc(SubmitError{SubmitError::kNoHost, h}));
  auto call = std::make_shared<FanOutCall>(out_, std::move(r));
  call->stream = stream;
  call->hosts = std::move(p.hosts);
  call->params = std::move(p);
  call->params.hosts.clear();
  call->entries.resize(call->hosts.size());
  for (size_t i = 0; i < call->hosts.size(); ++i)
    call->entries[i] = rpc::Object{{"host", call->hosts[i]}, {"status", "queued"}};
  launch(call);
}

void Hosts::service() {
  // Launching may end more jobs at once (a queue-full refusal): take the list first.
  while (!to_launch_.empty()) {
    auto calls = std::exchange(to_launch_, {});
    for (const auto& call : calls) launch(call);
  }
}

void Hosts::launch(const std::shared_ptr<FanOutCall>& call) {
  FanOutCall& c = *call;
  if (!out_.wanted(c.reply)) c.stopped = true;  // its client left: start nothing more
  const size_t bound = c.params.max_parallel ? c.params.max_parallel : c.hosts.size();
  while (!c.stopped && c.next < c.hosts.size() && c.running < bound) {
    const size_t i = c.next++;
    rpc::ExecParams one = c.params;
    one.host = c.hosts[i];
    ++c.running;
    auto queued =
        attached_.run_shared(one, c.reply, c.stream, [this, call, i](Reply, AttachedJobs::Ended e) {
          --call->running;
          settle(*call, i, std::move(e));
          to_launch_.push_back(call);
        });
    if (queued) {
      --c.running;
      AttachedJobs::Ended e;
      e.state = shm::JobState::kFailed;
      e.exit_code = -1;
      e.failure = to_rpc(*queued).message;
      settle(c, i, std::move(e));
    }
  }
  if (c.stopped || c.next == c.hosts.size())
    for (size_t i = c.next; i < c.hosts.size(); ++i) {
      c.entries[i]["status"] = "skipped";
      c.entries[i]["error"] = nullptr;
      ++c.ended;
    }
  if (c.stopped) c.next = c.hosts.size();
  if (c.ended < c.hosts.size() || c.answered) return;
  // Every host has its entry: the answer, with a summary.
  uint64_t succeeded = 0, failed = 0, errors = 0;
  std::optional<int64_t> worst;
  rpc::Array results;
  for (rpc::Object& e : c.entries) {
    const std::string status(e["status"].get_string());
    const bool has_error = !e["error"].is_null();
    const auto* code = e.if_contains("exit_code");
    if (status == "exited" && code && code->is_int64()) {
      int64_t x = code->get_int64();
      if (!worst || x > *worst) worst = x;
      (x == 0 ? succeeded : failed) += 1;
    } else if (status != "skipped") {
      has_error ? ++errors : ++failed;
    }
    results.emplace_back(std::move(e));
  }
  rpc::Object summary{{"total", c.hosts.size()},
                      {"succeeded", succeeded},
                      {"failed", failed},
                      {"errors", errors},
                      {"skipped", c.hosts.size() - succeeded - failed - errors},
                      {"worst_exit_code", worst ? rpc::Value(*worst) : rpc::Value(nullptr)}};
  rpc::Object answer{{"results", std::move(results)}, {"summary", std::move(summary)}};
  if (c.stream) answer["type"] = "exit";
  c.answered = true;
  out_.answer(c.reply, answer);
}

void Hosts::settle(FanOutCall& c, size_t i, AttachedJobs::Ended e) {
  rpc::Object& o = c.entries[i];
  o["status"] = state_name(e.state);
  o["exit_code"] =
      e.state == shm::JobState::kExited ? rpc::Value(e.exit_code) : rpc::Value(nullptr);
  o["signal"] = signal_value(e.signal);
  if (!c.stream) {
    std::string carry, text;
    append_output_text(text, e.out, c.params.encoding, carry, true);
    o["stdout"] = output_value(std::move(text), c.params.encoding);
    carry.clear();
    text.clear();
    append_output_text(text, e.err, c.params.encoding, carry, true);
    o["stderr"] = output_value(std::move(text), c.params.encoding);
    add_encoding(o, c.params.encoding);
  }
  o["truncated"] = e.truncated;
  o["duration_ms"] = e.duration_ms;
  o["job_id"] = e.job_id ? rpc::Value(std::to_string(e.job_id)) : rpc::Value(nullptr);
  if (e.error_code)
    o["error"] = remote_error_value(e.error_code, e.error_phase, e.failure);
  else if (!e.failure.empty())
    o["error"] =
        rpc::Object{{"code", state_name(e.state)}, {"phase", "run"}, {"message", e.failure}};
  else
    o["error"] = nullptr;
  ++c.ended;
  const bool ok = e.state == shm::JobState::kExited && e.exit_code == 0;
  if (!ok && c.params.fail_fast) c.stopped = true;
}

}  // namespace sp::frontend
