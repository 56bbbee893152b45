#include "shm/codec.h"

#include <capnp/message.h>

#include <kj/exception.h>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "shm/job.capnp.h"

namespace sp::shm {

namespace {

uint64_t text_bytes(std::string_view s) {
  return (s.size() + 1 + 7) & ~uint64_t{7};
}

kj::ArrayPtr<capnp::word> words_of(std::span<unsigned char> bytes, uint64_t words) {
  return {reinterpret_cast<capnp::word*>(bytes.data()), static_cast<size_t>(words)};
}

capnp::Text::Reader text(std::string_view s) {
  return {s.data(), s.size()};
}

}  // namespace

Status parse_limit(std::string_view name_value, Rlimits& out) {
  size_t eq = name_value.find('=');
  std::string_view name = name_value.substr(0, eq);
  std::string_view value = eq == std::string_view::npos ? "" : name_value.substr(eq + 1);
  for (const auto& [known, field] : kLimitNames) {
    if (name != known) continue;
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    if (ec != std::errc() || end != value.data() + value.size() || v == 0)
      return Error{EINVAL, std::string(name) + " needs a positive integer, not \"" +
                               std::string(value) + "\""};
    out.*field = v;
    return {};
  }
  std::string names;
  for (const auto& [known, field] : kLimitNames)
    names += (names.empty() ? "" : ", ") + std::string(known);
  return Error{EINVAL, "unknown limit \"" + std::string(name) + "\"; known: " + names};
}

uint64_t spec_size_bound(const SpecInput& in) {
  // root pointer + struct (10 data words, 5 pointers) + texts + list pointer words.
  // (ptyRows and ptyCols share killGraceMs's word.)
  uint64_t n = 8 + 15 * 8 + text_bytes(in.path) + text_bytes(in.cwd);
  for (auto a : in.argv) n += 8 + text_bytes(a);
  for (auto e : in.env) n += 8 + text_bytes(e);
  for (auto s : in.secrets) n += 8 + ((s.size() + 7) & ~uint64_t{7});
  return n;
}

Result<uint32_t> encode_spec(std::span<unsigned char> arena, uint32_t prev_words,
                             const SpecInput& in) {
  uint64_t bound = spec_size_bound(in);
  if (bound > arena.size())
    return Error{0, "job spec needs " + std::to_string(bound) + " bytes, the limit is " +
                        std::to_string(arena.size())};
  std::memset(arena.data(), 0, std::min<uint64_t>(uint64_t(prev_words) * 8, arena.size()));
  try {
    capnp::FlatMessageBuilder message(words_of(arena, arena.size() / 8));
    auto spec = message.initRoot<schema::JobSpec>();
    spec.setPath(text(in.path));
    auto argv = spec.initArgv(static_cast<unsigned>(in.argv.size()));
    for (unsigned i = 0; i < in.argv.size(); ++i) argv.set(i, text(in.argv[i]));
    auto env = spec.initEnv(static_cast<unsigned>(in.env.size()));
    for (unsigned i = 0; i < in.env.size(); ++i) env.set(i, text(in.env[i]));
    spec.setCwd(text(in.cwd));
    spec.setTimeoutMs(in.timeout_ms);
    spec.setKillGraceMs(in.kill_grace_ms);
    spec.setCpuSeconds(in.limits.cpu_seconds);
    spec.setAddressSpaceBytes(in.limits.address_space_bytes);
    spec.setOpenFiles(in.limits.open_files);
    spec.setProcesses(in.limits.processes);
    spec.setFileSizeBytes(in.limits.file_size_bytes);
    spec.setMemoryBytes(in.limits.memory_bytes);
    spec.setPtyRows(in.pty_rows);
    spec.setPtyCols(in.pty_cols);
    if (!in.secrets.empty()) {
      auto secrets = spec.initSecrets(static_cast<unsigned>(in.secrets.size()));
      for (unsigned i = 0; i < in.secrets.size(); ++i)
        secrets.set(i,
                    capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(in.secrets[i].data()),
                                        in.secrets[i].size()));
    }
    spec.setHostSlot(in.host_slot);
    spec.setHostGeneration(in.host_generation);
    spec.setHostCheck(in.host_check);
    auto segments = message.getSegmentsForOutput();
    return static_cast<uint32_t>(segments[0].size());
  } catch (const kj::Exception& e) {
    return Error{0, std::string("job spec does not fit: ") + e.getDescription().cStr()};
  }
}

Status decode_spec(const unsigned char* arena, uint32_t words, DecodedSpec& out) {
  try {
    kj::ArrayPtr<const capnp::word> seg(reinterpret_cast<const capnp::word*>(arena), words);
    kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segs(&seg, 1);
    capnp::SegmentArrayMessageReader message(segs);
    auto spec = message.getRoot<schema::JobSpec>();
    out.path = spec.getPath().cStr();
    out.argv.clear();
    for (auto a : spec.getArgv()) out.argv.push_back(a.cStr());
    out.argv.push_back(nullptr);
    out.env.clear();
    for (auto e : spec.getEnv()) out.env.push_back(e.cStr());
    out.env.push_back(nullptr);
    out.cwd = spec.hasCwd() && spec.getCwd().size() ? spec.getCwd().cStr() : nullptr;
    out.timeout_ms = spec.getTimeoutMs();
    out.kill_grace_ms = spec.getKillGraceMs();
    out.limits = {spec.getCpuSeconds(), spec.getAddressSpaceBytes(), spec.getOpenFiles(),
                  spec.getProcesses(),  spec.getFileSizeBytes(),     spec.getMemoryBytes()};
    out.pty_rows = spec.getPtyRows();
    out.pty_cols = spec.getPtyCols();
    out.secrets.clear();
    for (auto s : spec.getSecrets())
      out.secrets.emplace_back(reinterpret_cast<const char*>(s.begin()), s.size());
    out.host_slot = spec.getHostSlot();
    out.host_generation = spec.getHostGeneration();
    out.host_check = spec.getHostCheck();
    if ((out.argv.size() < 2 || !*out.path) && !out.host_check)
      return Error{0, "job spec has no program"};
    return {};
  } catch (const kj::Exception& e) {
    return Error{0, std::string("malformed job spec: ") + e.getDescription().cStr()};
  }
}

uint32_t encode_result(std::span<unsigned char> buf, int32_t exit_code, int32_t signal,
                       std::string_view failure, uint8_t error_code, uint8_t error_phase) {
  // root pointer + struct (2 data words, 1 pointer) + text.
  uint64_t room = buf.size() - 8 - 24 - 8;
  if (failure.size() + 1 > room) failure = failure.substr(0, room - 1);
  std::memset(buf.data(), 0, buf.size());
  try {
    capnp::FlatMessageBuilder message(words_of(buf, buf.size() / 8));
    auto r = message.initRoot<schema::JobResult>();
    r.setExitCode(exit_code);
    r.setSignal(signal);
    r.setFailure(text(failure));
    r.setErrorCode(error_code);
    r.setErrorPhase(error_phase);
    return static_cast<uint32_t>(message.getSegmentsForOutput()[0].size());
  } catch (const kj::Exception&) {
    return 0;  // unreachable by the size check above; a 0-word result decodes as defaults
  }
}

JobOutcome decode_result(std::span<const unsigned char> buf, uint32_t words) {
  JobOutcome out;
  if (words == 0 || uint64_t(words) * 8 > buf.size()) return out;
  try {
    kj::ArrayPtr<const capnp::word> seg(reinterpret_cast<const capnp::word*>(buf.data()), words);
    kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segs(&seg, 1);
    capnp::SegmentArrayMessageReader message(segs);
    auto r = message.getRoot<schema::JobResult>();
    out.exit_code = r.getExitCode();
    out.signal = r.getSignal();
    out.failure = r.getFailure().cStr();
    out.error_code = r.getErrorCode();
    out.error_phase = r.getErrorPhase();
  } catch (const kj::Exception& e) {
    out.failure = std::string("malformed job result: ") + e.getDescription().cStr();
  }
  return out;
}

}  // namespace sp::shm
