#include "frontend/file_methods.h"

#include <algorithm>
#include <string_view>

#include "common/text.h"
#include "frontend/codec/json_codec.h"
#include "frontend/names.h"

namespace sp::frontend {

namespace {

using rpc::FileOp;

template <FileOp op>
rpc::Parsed<rpc::FileParams> parse(const rpc::Value& params) {
  return rpc::parse_file_params(op, params);
}

const char* op_name(FileOp op) {
  switch (op) {
    case FileOp::kRead:
      return "read";
    case FileOp::kWrite:
      return "write";
    case FileOp::kList:
      return "list";
    case FileOp::kStat:
      return "stat";
    case FileOp::kRemove:
      return "remove";
    case FileOp::kMkdir:
      return "mkdir";
    case FileOp::kExtract:
      return "unpack";
  }
  return "?";
}

constexpr uint64_t kHeaderRoom = 64 * 1024;      // the helper's JSON line before a read's bytes
constexpr uint64_t kMaxAnswerBytes = 64u << 20;  // the helper's line for the other methods

// The helper's error (its JSON line: {"error", "message", "errno"}) as an
// RPC error; nullopt if `v` is not one.
std::optional<rpc::RpcError> helper_error(const std::optional<rpc::Value>& v) {
  if (!v || !v->is_object()) return std::nullopt;
  const rpc::Object& o = v->get_object();
  const rpc::Value* kind = o.if_contains("error");
  if (!kind || !kind->is_string()) return std::nullopt;
  const rpc::Value* msg = o.if_contains("message");
  const rpc::Value* err = o.if_contains("errno");
  return to_rpc(FileOpError{kind->get_string(), msg && msg->is_string() ? msg->get_string() : "",
                            err && err->is_string() ? err->get_string() : ""});
}

// `data` is UTF-8 text, but for an incomplete sequence at its end (a read
// that stopped inside a character), whose length goes into `tail`.
bool utf8_text(std::string_view data, size_t& tail) {
  std::string out, carry;
  append_utf8_sanitized(out, data, carry, false);
  tail = carry.size();
  return out.size() + carry.size() == data.size() && data.compare(0, out.size(), out) == 0;
}

}  // namespace

void FileMethods::add_methods(MethodTable& methods) {
  auto add = [&](const char* name, rpc::Parsed<rpc::FileParams> (*reader)(const rpc::Value&)) {
    methods.add<rpc::FileParams>(
        name, reader, [this](rpc::FileParams& p, Reply r) { start(p, std::move(r)); },
        MethodTable::Holds::kInflight);
  };
  add("file_read", parse<FileOp::kRead>);
  add("file_write", parse<FileOp::kWrite>);
  add("file_list", parse<FileOp::kList>);
  add("file_stat", parse<FileOp::kStat>);
  add("file_remove", parse<FileOp::kRemove>);
  add("file_mkdir", parse<FileOp::kMkdir>);
  add("archive_extract", parse<FileOp::kExtract>);
  methods.add<rpc::ArchiveCreateParams>(
      "archive_create", rpc::parse_archive_create_params,
      [this](rpc::ArchiveCreateParams& p, Reply r) { archive_create(p, std::move(r)); },
      MethodTable::Holds::kInflight);
}

rpc::ExecParams FileMethods::helper(const char* op, const std::string& path,
                                    double timeout_s) const {
  rpc::ExecParams e;
  // The worker's own binary: in the child it forks, /proc/self/exe is it.
  e.command = "/proc/self/exe";
  e.shell = false;
  e.args = {"files", op, "--root", o_.files_root, "--path", path};
  e.timeout_s = o_.max_timeout_s > 0 ? std::min(timeout_s, o_.max_timeout_s) : timeout_s;
  return e;
}

void FileMethods::start(rpc::FileParams& p, Reply r) {
  rpc::ExecParams e =
      helper(op_name(p.op), p.path, p.op == FileOp::kExtract ? kPackTimeoutS : kTimeoutS);
  auto arg = [&](const char* flag, uint64_t v) {
    e.args.emplace_back(flag);
    e.args.push_back(std::to_string(v));
  };
  if (p.offset) arg("--offset", *p.offset);
  if (p.mode) arg("--mode", *p.mode);
  if (p.append) e.args.emplace_back("--append");
  if (p.mkdirs) e.args.emplace_back("--mkdirs");
  if (p.recursive) e.args.emplace_back("--recursive");
  if (p.op == FileOp::kRead || p.op == FileOp::kExtract) arg("--max-bytes", p.max_bytes);
  if (p.op == FileOp::kList) arg("--max-entries", p.max_entries);
  if (!p.source.empty()) {
    e.args.emplace_back("--source");
    e.args.push_back(p.source);
  }
  if (p.op == FileOp::kWrite || (p.op == FileOp::kExtract && p.source.empty())) {
    arg("--max-input", p.data.size());
    e.stdin_data = std::move(p.data);
  }
  // A read's bytes and its line; any other answer's line (a list's
  // entries: beyond this, the call fails saying its output was too large).
  e.max_output_bytes = p.op == FileOp::kRead ? p.max_bytes + kHeaderRoom : kMaxAnswerBytes;
  e.kill_on_output_cap = true;
  p.data.clear();
  jobs_.run(e, std::move(r), [this, p = std::move(p)](Reply reply, AttachedJobs::Ended ended) {
    answer(p, std::move(reply), std::move(ended));
  });
}

void FileMethods::answer(const rpc::FileParams& p, Reply r, AttachedJobs::Ended e) {
  const size_t eol = e.out.find('\n');
  std::optional<rpc::Value> head;
  if (eol != std::string::npos) head = rpc::parse_value(std::string_view(e.out).substr(0, eol));
  if (auto error = helper_error(head); error && e.state == shm::JobState::kExited)
    return out_.fail(r, *error);
  // Its answer counts only if it ended well, and a read's bytes all came.
  const rpc::Value* bytes =
      head && head->is_object() ? head->get_object().if_contains("bytes") : nullptr;
  const bool whole =
      p.op != FileOp::kRead ||
      (bytes && eol != std::string::npos &&
       ((bytes->is_int64() && uint64_t(bytes->get_int64()) == e.out.size() - eol - 1) ||
        (bytes->is_uint64() && bytes->get_uint64() == e.out.size() - eol - 1)));
  if (!head || !head->is_object() || e.state != shm::JobState::kExited || e.exit_code != 0 ||
      !whole) {
    // The helper did not get to say all: it was killed, timed out, could
    // not start, or its worker died.
    std::string why = std::string("the file operation ended ") + state_name(e.state);
    if (!e.failure.empty()) why += ": " + e.failure;
    if (!e.err.empty()) why += ": " + e.err.substr(0, 512);
    return out_.fail(r, to_rpc(FileOpError{"failed", why, {}}));
  }
  rpc::Object result = std::move(head->get_object());
  if (p.op != FileOp::kRead) return out_.answer(r, result);

  std::string_view data = std::string_view(e.out).substr(eol + 1);
  const uint64_t offset = p.offset.value_or(0);
  std::string text;
  if (p.encoding != OutputEncoding::kUtf8) {
    std::string carry;  // not used by these two
    append_output_text(text, data, p.encoding, carry, true);
  } else {
    size_t tail = 0;
    const bool valid = utf8_text(data, tail);
    const rpc::Value* eof = result.if_contains("eof");
    const bool at_end = eof && eof->is_bool() && eof->get_bool();
    if (valid && tail && tail == data.size() && !at_end)
      return out_.fail(
          r, to_rpc(FileOpError{"invalid",
                                "the character at byte " + std::to_string(offset) + " of \"" +
                                    p.path + "\" is longer than " + "\"max_bytes\"",
                                {}}));
    if (!valid || (tail && at_end))
      return out_.fail(r, to_rpc(FileOpError{"not_text",
                                             "\"" + p.path + "\" is not UTF-8 text from byte " +
                                                 std::to_string(offset) +
                                                 " on; read it with \"encoding\": \"base64\"",
                                             {}}));
    // A read that stopped inside a character: the character is left for
    // the next read (from offset + bytes).
    data.remove_suffix(tail);
    if (tail) {
      result["bytes"] = uint64_t(data.size());
      result["eof"] = false;
    }
    text.assign(data);
  }
  result["data"] = output_value(std::move(text), p.encoding);
  result["offset"] = offset;
  result["encoding"] = p.encoding == OutputEncoding::kBase64  ? "base64"
                       : p.encoding == OutputEncoding::kBytes ? "binary"
                                                              : "utf8";
  out_.answer(r, result);
}

void FileMethods::archive_create(rpc::ArchiveCreateParams& p, Reply r) {
  rpc::JobOutputParams read;
  read.stream = shm::SpoolView::kStdout;
  read.max_bytes = p.max_bytes;
  read.encoding = OutputEncoding::kBase64;
  read.wait_s = p.wait_s;
  if (p.archive_id.empty()) {
    rpc::ExecParams e = helper("pack", p.path, kPackTimeoutS);
    if (p.gzip) e.args.emplace_back("--gzip");
    auto id = detached_.start_job(e);
    if (auto* err = std::get_if<SubmitError>(&id)) return out_.fail(r, to_rpc(*err));
    read.job_id = std::get<std::string>(id);
  } else {
    read.job_id = p.archive_id;
    read.cursor = p.cursor;
  }
  auto shape = [cap = o_.job_spool_bytes](
                   rpc::Object out,
                   rpc::Object status) -> std::variant<rpc::Object, rpc::RpcError> {
    const rpc::Value* eof = out.if_contains("eof");
    if (eof && eof->is_bool() && eof->get_bool()) {
      if (const rpc::Value* err = status.if_contains("stderr"); err && err->is_string())
        if (auto error = helper_error(rpc::parse_value(
                std::string_view(err->get_string()).substr(0, err->get_string().find('\n')))))
          return *error;
      const rpc::Value* code = status.if_contains("exit_code");
      if (!code || !code->is_int64() || code->get_int64() != 0) {
        const rpc::Value* why = status.if_contains("error");
        return to_rpc(FileOpError{
            "failed",
            "packing ended " +
                (why && why->is_string() ? why->get_string() : std::string("without its archive")),
            {}});
      }
      const rpc::Value* truncated = out.if_contains("truncated");
      if (truncated && truncated->is_bool() && truncated->get_bool())
        return to_rpc(FileOpError{"too_large",
                                  "the archive is larger than a detached job's output may be "
                                  "(--job-output-bytes, " +
                                      std::to_string(cap) + " bytes)",
                                  {}});
    }
    if (const rpc::Value* id = out.if_contains("job_id")) {
      rpc::Value copy = *id;  // (adding a member may move the others)
      out["archive_id"] = std::move(copy);
    }
    return out;
  };
  detached_.read_output(read, std::move(r), std::move(shape));
}

}  // namespace sp::frontend
