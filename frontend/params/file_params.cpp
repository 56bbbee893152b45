// Params of the workspace file methods.

#include "frontend/params/readers.h"

namespace sp::rpc {

using namespace detail;

namespace {

// "mode": an integer 0..0777, or a string of octal digits ("0644"). No
// setuid, setgid or sticky bit: the daemon may run as root.
std::optional<RpcError> read_mode(Obj obj, std::optional<uint32_t>& out) {
  const Value* v = field(obj, "mode");
  if (v == nullptr) return std::nullopt;
  uint64_t mode = 010000;
  if (v->is_int64() && v->get_int64() >= 0) {
    mode = uint64_t(v->get_int64());
  } else if (v->is_string() && !v->get_string().empty() && v->get_string().size() <= 6 &&
             v->get_string().find_first_not_of("01234567") == std::string::npos) {
    mode = std::stoull(v->get_string(), nullptr, 8);
  }
  if (mode > 0777)
    return bad_params(
        "\"mode\" must be permission bits 0..0777: an integer, or octal digits in a string "
        "(\"0644\"); setuid, setgid and sticky are not set through the file methods");
  out = uint32_t(mode);
  return std::nullopt;
}

}  // namespace

Parsed<FileParams> parse_file_params(FileOp op, const Value& params) {
  FileParams p;
  p.op = op;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_string(obj, "path", kRequired | kNonEmpty, p.path)) return *e;
  if (p.path.find('\0') != std::string::npos) return bad_params("\"path\" holds a NUL byte");
  if (p.path.size() >= 4096) return bad_params("\"path\" is longer than 4095 bytes");
  switch (op) {
    case FileOp::kRead:
      if (auto e = read_byte_count(obj, "offset", p.offset)) return *e;
      if (auto e = read_bounded(obj, "max_bytes", kMaxFileRead, p.max_bytes)) return *e;
      if (auto e = read_encoding(obj, "encoding", p.encoding)) return *e;
      break;
    case FileOp::kWrite: {
      std::optional<std::string> data;
      if (auto e = read_bytes(obj, "data", "encoding", data, p.encoding)) return *e;
      if (!data) return bad_params("\"data\" is required (\"\" writes an empty file)");
      p.data = std::move(*data);
      if (auto e = read_byte_count(obj, "offset", p.offset)) return *e;
      if (auto e = read_bool(obj, "append", p.append)) return *e;
      if (p.append && p.offset) return bad_params("give \"offset\" or \"append\", not both");
      if (auto e = read_bool(obj, "mkdirs", p.mkdirs)) return *e;
      if (auto e = read_mode(obj, p.mode)) return *e;
      break;
    }
    case FileOp::kList:
      if (auto e = read_bool(obj, "recursive", p.recursive)) return *e;
      if (auto e = read_bounded(obj, "max_entries", kMaxListEntries, p.max_entries)) return *e;
      break;
    case FileOp::kStat:
      break;
    case FileOp::kRemove:
      if (auto e = read_bool(obj, "recursive", p.recursive)) return *e;
      break;
    case FileOp::kMkdir:
      if (auto e = read_mode(obj, p.mode)) return *e;
      break;
    case FileOp::kExtract: {
      std::optional<std::string> data;
      if (auto e = read_bytes(obj, "data", "encoding", data, p.encoding)) return *e;
      if (auto e = read_string(obj, "source", kNonEmpty, p.source)) return *e;
      if (p.source.find('\0') != std::string::npos)
        return bad_params("\"source\" holds a NUL byte");
      if (data.has_value() == !p.source.empty())
        return bad_params(
            "give the archive as \"data\" (with \"encoding\": \"base64\") or as \"source\", "
            "a file beneath the files root: one of them");
      if (data) p.data = std::move(*data);
      p.max_bytes = kDefaultExtractBytes;
      if (auto e = read_bounded(obj, "max_bytes", kMaxExtractBytes, p.max_bytes)) return *e;
      break;
    }
  }
  return p;
}

Parsed<ArchiveCreateParams> parse_archive_create_params(const Value& params) {
  ArchiveCreateParams p;
  Obj obj;
  if (auto e = params_object(params, obj)) return *e;
  if (auto e = read_string(obj, "archive_id", kNonEmpty, p.archive_id)) return *e;
  if (auto e = read_string(obj, "path", p.archive_id.empty() ? kRequired | kNonEmpty : kNonEmpty,
                           p.path))
    return *e;
  if (p.path.find('\0') != std::string::npos) return bad_params("\"path\" holds a NUL byte");
  std::string format = "tar.gz";
  if (auto e = read_string(obj, "format", kNonEmpty, format)) return *e;
  if (format != "tar.gz" && format != "tgz" && format != "tar")
    return bad_params("\"format\" must be \"tar.gz\" or \"tar\"");
  p.gzip = format != "tar";
  std::optional<uint64_t> cursor;
  if (auto e = read_byte_count(obj, "cursor", cursor)) return *e;
  if (cursor && p.archive_id.empty())
    return bad_params("\"cursor\" goes with the \"archive_id\" the first call answered");
  p.cursor = cursor.value_or(0);
  if (auto e = read_bounded(obj, "max_bytes", kMaxFileRead, p.max_bytes)) return *e;
  std::optional<double> wait;
  if (auto e = read_seconds(obj, "wait", false, wait)) return *e;
  if (wait) p.wait_s = *wait;
  return p;
}

}  // namespace sp::rpc
