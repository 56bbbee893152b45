// Tests for the JSON-RPC codec (frontend/codec/json_codec.h), the method
// params readers (frontend/params/params.h) and the output text helpers
// (common/text.h).
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <string>

#include <boost/json.hpp>

#include "common/text.h"
#include "frontend/codec/json_codec.h"
#include "frontend/params/params.h"

namespace json = boost::json;
using namespace sp;
using namespace sp::rpc;
using Catch::Contains;

namespace {

// A JSON text as the codec would hand it to a method.
Value val(std::string_view text) {
  std::optional<Value> v = parse_value(text);
  REQUIRE(v);
  return std::move(*v);
}

Call only_call(std::string_view text) {
  Line line = parse_line(text);
  REQUIRE_FALSE(line.error);
  REQUIRE_FALSE(line.batch);
  REQUIRE(line.calls.size() == 1);
  return std::move(line.calls[0]);
}

void require_invalid_request(const Call& c) {
  REQUIRE(c.error);
  CHECK(c.error->code == Code::InvalidRequest);
  CHECK_FALSE(c.notification);
}

template <typename T>
RpcError error_of(const Parsed<T>& r) {
  REQUIRE(std::holds_alternative<RpcError>(r));
  RpcError e = std::get<RpcError>(r);
  CHECK(e.code == Code::InvalidParams);
  return e;
}

template <typename T>
T value_of(const Parsed<T>& r) {
  if (auto* e = std::get_if<RpcError>(&r)) FAIL(e->message);
  return std::get<T>(r);
}

Parsed<ExecParams> exec(std::string_view params_json) {
  return parse_exec_params(val(params_json));
}

std::string exec_error(std::string_view params_json) {
  return error_of(exec(params_json)).message;
}

std::string sanitize(std::string_view in) {
  std::string out, carry;
  append_utf8_sanitized(out, in, carry, true);
  CHECK(carry.empty());
  return out;
}

const std::string kFFFD = "\xEF\xBF\xBD";

}  // namespace

TEST_CASE("a line that is not JSON is one parse error with no calls") {
  for (std::string_view text : {"{", "not json", "{}x", "{\"a\":1,}", "[1 2]"}) {
    Line line = parse_line(text);
    REQUIRE(line.error);
    CHECK(line.error->code == Code::ParseError);
    CHECK(line.calls.empty());
  }
}

TEST_CASE("invalid UTF-8 inside a request string is a parse error") {
  Line line = parse_line("{\"jsonrpc\":\"2.0\",\"method\":\"a\xff\",\"id\":1}");
  REQUIRE(line.error);
  CHECK(line.error->code == Code::ParseError);
}

TEST_CASE("a blank line has nothing to answer") {
  for (std::string_view text : {"", "   ", "\r", " \t\r"}) {
    Line line = parse_line(text);
    CHECK_FALSE(line.error);
    CHECK(line.calls.empty());
  }
}

TEST_CASE("a valid request yields its method, params and id") {
  Call c = only_call(R"({"jsonrpc":"2.0","method":"execute","params":{"command":"ls"},"id":7})");
  CHECK_FALSE(c.error);
  CHECK_FALSE(c.notification);
  CHECK(c.method == "execute");
  CHECK(c.id == Value(7));
  CHECK(*c.params.get_object().if_contains("command") == Value("ls"));
  Call arr = only_call(R"({"jsonrpc":"2.0","method":"m","params":[1,2],"id":"x"})");
  CHECK(arr.params.is_array());
  Call unknown = only_call(R"({"jsonrpc":"2.0","method":"m","id":1,"extra":true})");
  CHECK_FALSE(unknown.error);
}

TEST_CASE("structurally invalid requests are answered with -32600") {
  SECTION("missing jsonrpc keeps a usable id") {
    Call c = only_call(R"({"method":"m","id":3})");
    require_invalid_request(c);
    CHECK(c.id == Value(3));
  }
  SECTION("jsonrpc 1.0") {
    require_invalid_request(only_call(R"({"jsonrpc":"1.0","method":"m","id":1})"));
  }
  SECTION("jsonrpc as a number") {
    require_invalid_request(only_call(R"({"jsonrpc":2.0,"method":"m","id":1})"));
  }
  SECTION("method missing or not a string") {
    require_invalid_request(only_call(R"({"jsonrpc":"2.0","id":1})"));
    require_invalid_request(only_call(R"({"jsonrpc":"2.0","method":5,"id":1})"));
    require_invalid_request(only_call(R"({"jsonrpc":"2.0","method":null,"id":1})"));
  }
  SECTION("scalar params") {
    for (auto p : {"5", "\"x\"", "true"}) {
      std::string text = std::string(R"({"jsonrpc":"2.0","method":"m","id":1,"params":)") + p + "}";
      require_invalid_request(only_call(text));
    }
  }
  SECTION("id of a type that cannot be echoed is replaced by null") {
    for (auto id : {"{}", "[1]", "true", "1e400"}) {
      std::string text = std::string(R"({"jsonrpc":"2.0","method":"m","id":)") + id + "}";
      Call c = only_call(text);
      require_invalid_request(c);
      CHECK(c.id.is_null());
    }
  }
  SECTION("an invalid request without id is still answered") {
    Call c = only_call(R"({"method":"m"})");
    require_invalid_request(c);
    CHECK(c.id.is_null());
  }
  SECTION("a top-level scalar is one invalid call") {
    require_invalid_request(only_call("5"));
    require_invalid_request(only_call("\"execute\""));
  }
}

TEST_CASE("only a valid request without an id member is a notification") {
  Call n = only_call(R"({"jsonrpc":"2.0","method":"m","params":{}})");
  CHECK_FALSE(n.error);
  CHECK(n.notification);
  Call null_id = only_call(R"({"jsonrpc":"2.0","method":"m","id":null})");
  CHECK_FALSE(null_id.error);
  CHECK_FALSE(null_id.notification);
  CHECK(null_id.id.is_null());
  Call null_params = only_call(R"({"jsonrpc":"2.0","method":"m","params":null,"id":1})");
  CHECK_FALSE(null_params.error);
  CHECK(null_params.params.is_null());
}

TEST_CASE("a batch yields one call per element, valid or not") {
  Line line =
      parse_line(R"([{"jsonrpc":"2.0","method":"a","id":1}, 1, {"jsonrpc":"2.0","method":"n"},)"
                 R"( {"method":"x","id":2}, []])");
  REQUIRE_FALSE(line.error);
  CHECK(line.batch);
  REQUIRE(line.calls.size() == 5);
  CHECK_FALSE(line.calls[0].error);
  CHECK(line.calls[0].method == "a");
  require_invalid_request(line.calls[1]);
  CHECK(line.calls[1].id.is_null());
  CHECK_FALSE(line.calls[2].error);
  CHECK(line.calls[2].notification);
  require_invalid_request(line.calls[3]);
  CHECK(line.calls[3].id == Value(2));
  require_invalid_request(line.calls[4]);
}

TEST_CASE("an empty batch is one invalid-request error") {
  Line line = parse_line(" [ ] ");
  REQUIRE(line.error);
  CHECK(line.error->code == Code::InvalidRequest);
  CHECK(line.calls.empty());
}

TEST_CASE("deeply nested input is a parse error, not a crash") {
  const std::string arrays(10000, '[');
  Line a = parse_line(arrays + std::string(10000, ']'));
  REQUIRE(a.error);
  CHECK(a.error->code == Code::ParseError);
  std::string objects;
  for (int i = 0; i < 10000; ++i) objects += "{\"a\":";
  Line o = parse_line(objects);
  REQUIRE(o.error);
  CHECK(o.error->code == Code::ParseError);
  // Nesting within the limit is fine.
  std::string ok = R"({"jsonrpc":"2.0","method":"m","id":1,"params":[)";
  ok += std::string(50, '[') + std::string(51, ']') + "}";
  CHECK_FALSE(parse_line(ok).error);
}

TEST_CASE("ids are echoed exactly as the client wrote them") {
  const std::pair<const char*, const char*> cases[] = {
      {R"("abc")", R"("abc")"},
      {R"("q\"\\ é \u0001")", R"("q\"\\ é \u0001")"},
      {"9007199254740993", "9007199254740993"},
      {"18446744073709551615", "18446744073709551615"},
      {"-42", "-42"},
      {"0", "0"},
      {"1.5", "1.5"},
      {"0.1", "0.1"},
      {"1.0", "1.0"},
      {"-2.5e-7", "-2.5e-07"},
      {"null", "null"},
  };
  for (const auto& [in, want] : cases) {
    CAPTURE(in);
    Call c = only_call(std::string(R"({"jsonrpc":"2.0","method":"m","id":)") + in + "}");
    REQUIRE_FALSE(c.error);
    CHECK(result_text(c.id, nullptr) ==
          std::string(R"({"jsonrpc":"2.0","id":)") + want + R"(,"result":null})");
    CHECK_THAT(error_text(c.id, {Code::Internal, "x"}), Contains(std::string("\"id\":") + want));
  }
}

TEST_CASE("error_text has code and message, and data only when set") {
  std::string plain = error_text(Value(1), {Code::MethodNotFound, "method not found: \"x\""});
  CHECK(plain ==
        R"({"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"method not found: \"x\""}})");
  json::value parsed = json::parse(error_text(nullptr, queue_full_error(250)));
  CHECK(parsed.at("jsonrpc") == "2.0");
  CHECK(parsed.at("id").is_null());
  CHECK(parsed.at("error").at("code") == -32000);
  CHECK(parsed.at("error").at("data").at("retry_after_ms") == 250);
  CHECK(parsed.at("error").at("message").is_string());
}

TEST_CASE("result_text and batch_text produce parseable JSON") {
  Value result = Object{{"stdout", "a\nb\t\"c\"\x01"},
                        {"exit_code", 0},
                        {"ratio", 0.25},
                        {"big", 1e300},
                        {"inf", HUGE_VAL},
                        {"list", Array{1, true, nullptr}}};
  std::string text = result_text(Value("id-1"), result);
  json::value back = json::parse(text);
  CHECK(back.at("result").at("stdout") == "a\nb\t\"c\"\x01");
  CHECK(back.at("result").at("ratio") == 0.25);
  CHECK(back.at("result").at("big") == 1e300);
  CHECK(back.at("result").at("inf").is_null());
  CHECK(batch_text({}) == "");
  CHECK(batch_text({"1", "{\"a\":2}"}) == "[1,{\"a\":2}]");
}

TEST_CASE("append_string output round-trips through a JSON parser") {
  std::mt19937 rng(42);
  for (int iter = 0; iter < 500; ++iter) {
    std::string raw(rng() % 64, '\0');
    for (char& ch : raw) ch = static_cast<char>(rng() % 0x80);  // ASCII incl. controls
    std::string text;
    append_string(text, raw);
    CHECK(json::parse(text).as_string() == raw);
  }
}

TEST_CASE("execute params: valid values of every field") {
  const ExecParams p = value_of(exec(R"({"command":"ls","args":["-l","/tmp"],"shell":true,
      "timeout":1.5,"working_dir":"/tmp","session_id":"s1","env":{"A":"1","B":""},
      "output_encoding":"base64","max_output_bytes":1024,"stdin":"","unknown":{}})"));
  CHECK(p.command == "ls");
  CHECK(p.args == std::vector<std::string>{"-l", "/tmp"});
  CHECK(p.shell);
  CHECK(p.timeout_s == 1.5);
  CHECK(p.working_dir == "/tmp");
  CHECK(p.session_id == "s1");
  CHECK(p.env == sp::EnvPairs{{"A", "1"}, {"B", ""}});
  CHECK(p.encoding == sp::OutputEncoding::kBase64);
  CHECK(p.max_output_bytes == 1024u);
}

TEST_CASE("execute params: defaults") {
  const ExecParams d = value_of(exec(R"({"command":"cargo build"})"));
  CHECK(d.shell);
  CHECK(d.args.empty());
  CHECK_FALSE(d.timeout_s);
  CHECK(d.working_dir.empty());
  CHECK(d.session_id.empty());
  CHECK(d.env.empty());
  CHECK(d.encoding == sp::OutputEncoding::kUnset);
  CHECK_FALSE(d.max_output_bytes);
  CHECK_FALSE(value_of(exec(R"({"command":"ls","args":["-l"]})")).shell);
  CHECK(value_of(exec(R"({"command":"ls","args":["-l"],"shell":true})")).shell);
  CHECK_FALSE(value_of(exec(R"({"command":"ls","shell":false})")).shell);
  const ExecParams nulls = value_of(
      exec(R"({"command":"x","args":null,"timeout":null,"env":null,"stdin":null,"shell":null})"));
  CHECK(nulls.shell);
  CHECK_FALSE(nulls.timeout_s);
  CHECK(value_of(exec(R"({"command":"x","timeout":3})")).timeout_s == 3.0);
  CHECK(value_of(exec(R"({"command":"x","timeout":1e300})")).timeout_s == 1e300);
  CHECK(value_of(exec(R"({"command":"x","max_output_bytes":0})")).max_output_bytes == 0u);
  CHECK(value_of(exec(R"({"command":"x","max_output_bytes":1e6})")).max_output_bytes == 1000000u);
  CHECK(value_of(exec(R"({"command":"x","output_encoding":"utf8"})")).encoding ==
        sp::OutputEncoding::kUtf8);
}

TEST_CASE("execute params: every invalid field is a -32602 naming it") {
  CHECK_THAT(exec_error("[\"ls\"]"), Contains("params must be an object"));
  CHECK_THAT(error_of(parse_exec_params(nullptr)).message, Contains("\"command\" is required"));
  CHECK_THAT(exec_error("{}"), Contains("\"command\" is required"));
  CHECK_THAT(exec_error(R"({"command":5})"), Contains("\"command\" must be a string"));
  CHECK_THAT(exec_error(R"({"command":""})"), Contains("\"command\" must not be empty"));
  CHECK_THAT(exec_error(R"({"command":"a\u0000b"})"), Contains("\"command\" must not contain NUL"));
  CHECK_THAT(exec_error(R"({"command":"x","args":"-l"})"), Contains("\"args\" must be an array"));
  CHECK_THAT(exec_error(R"({"command":"x","args":["a",2]})"), Contains("(element 1)"));
  CHECK_THAT(exec_error(R"({"command":"x","args":["\u0000"]})"), Contains("\"args\" elements"));
  CHECK_THAT(exec_error(R"({"command":"x","shell":"yes"})"), Contains("\"shell\" must be true"));
  for (auto t : {"0", "-1", "\"5\"", "true", "1e400", "[]"}) {
    CAPTURE(t);
    CHECK(exec_error(std::string(R"({"command":"x","timeout":)") + t + "}") ==
          "invalid params: \"timeout\" must be a positive number of seconds");
  }
  CHECK_THAT(exec_error(R"({"command":"x","working_dir":1})"), Contains("\"working_dir\""));
  CHECK_THAT(exec_error(R"({"command":"x","session_id":{}})"), Contains("\"session_id\""));
  CHECK_THAT(exec_error(R"({"command":"x","env":["A=1"]})"), Contains("\"env\" must be an object"));
  CHECK(exec_error(R"({"command":"x","env":{"FOO":1}})") ==
        "invalid params: \"env\" values must be strings (key \"FOO\")");
  CHECK_THAT(exec_error(R"({"command":"x","env":{"":"1"}})"), Contains("must not be empty"));
  CHECK_THAT(exec_error(R"({"command":"x","env":{"A=B":"1"}})"), Contains("'='"));
  CHECK_THAT(exec_error(R"({"command":"x","env":{"A\u0000":"1"}})"), Contains("NUL"));
  CHECK_THAT(exec_error(R"({"command":"x","env":{"A":"\u0000"}})"), Contains("NUL"));
  CHECK_THAT(exec_error(R"({"command":"x","output_encoding":"hex"})"),
             Contains("\"output_encoding\" must be \"utf8\" or \"base64\""));
  for (auto m : {"-1", "1.5", "\"10\"", "1e30"}) {
    CAPTURE(m);
    CHECK_THAT(exec_error(std::string(R"({"command":"x","max_output_bytes":)") + m + "}"),
               Contains("\"max_output_bytes\" must be an integer >= 0"));
  }
  CHECK_THAT(exec_error(R"({"command":"x","stdin":"@@","stdin_encoding":"base64"})"),
             Contains("\"stdin\" is not valid base64"));
  CHECK_THAT(exec_error(R"({"command":"x","stdin":"x","stdin_encoding":"hex"})"),
             Contains("\"stdin_encoding\" must be \"utf8\" or \"base64\""));
  CHECK_THAT(exec_error(R"({"command":"x","stdin_open":1})"),
             Contains("\"stdin_open\" must be true or false"));
  CHECK_THAT(exec_error(R"({"command":"x","stdin":5})"), Contains("\"stdin\" must be a string"));
  CHECK(exec_error(R"({"command":"x","limits":{"memory_bytes":"1G"}})") ==
        "invalid params: \"memory_bytes\" in \"limits\" must be an integer >= 0");
  CHECK_THAT(exec_error(R"({"command":"x","limits":{"memory":1}})"),
             Contains("unknown field \"memory\" in \"limits\"") && Contains("memory_bytes"));
}

TEST_CASE("a long env key in an error message is cut at a code point boundary") {
  std::string key = std::string(63, 'a') + "\xC3\xA9" + std::string(100, 'b');
  std::string msg = exec_error(R"({"command":"x","env":{")" + key + R"(":1}})");
  CHECK_THAT(msg, Contains(std::string(63, 'a') + "\"..."));
  std::string text = error_text(nullptr, {Code::InvalidParams, msg});
  CHECK_NOTHROW(json::parse(text));
}

TEST_CASE("session params") {
  const SessionCreateParams s =
      value_of(parse_session_create_params(val(R"({"name":"dev","env_vars":{"X":"1"}})")));
  CHECK(s.name == "dev");
  CHECK(s.env_vars == sp::EnvPairs{{"X", "1"}});
  const SessionCreateParams empty = value_of(parse_session_create_params(nullptr));
  CHECK(empty.name.empty());
  CHECK(empty.env_vars.empty());
  CHECK_THAT(error_of(parse_session_create_params(val(R"({"name":1})"))).message,
             Contains("\"name\" must be a string"));
  CHECK_THAT(error_of(parse_session_create_params(val(R"({"env_vars":{"X":2}})"))).message,
             Contains("\"env_vars\" values must be strings (key \"X\")"));
  CHECK_THAT(error_of(parse_session_create_params(val("[]"))).message,
             Contains("params must be an object"));

  CHECK(value_of(parse_session_id_param(val(R"({"session_id":"abc"})"))) == "abc");
  CHECK_THAT(error_of(parse_session_id_param(val("{}"))).message,
             Contains("\"session_id\" is required"));
  CHECK_THAT(error_of(parse_session_id_param(nullptr)).message, Contains("is required"));
  CHECK_THAT(error_of(parse_session_id_param(val(R"({"session_id":""})"))).message,
             Contains("must not be empty"));
  CHECK_THAT(error_of(parse_session_id_param(val(R"({"session_id":7})"))).message,
             Contains("must be a string"));
}

TEST_CASE("utf8 sanitizer passes valid text through unchanged") {
  const std::string valid =
      "plain ascii, long enough for the 8-byte path; é ñ € 漢字 😀 \xF4\x8F\xBF\xBF end";
  CHECK(sanitize(valid) == valid);
  CHECK(sanitize("") == "");
  std::string appended = "prefix:";
  std::string carry;
  append_utf8_sanitized(appended, "abc", carry, false);
  CHECK(appended == "prefix:abc");
}

TEST_CASE("utf8 sanitizer replaces invalid bytes by maximal subparts") {
  CHECK(sanitize("a\x80"
                 "b") == "a" + kFFFD + "b");
  CHECK(sanitize("\xFF\xFE") == kFFFD + kFFFD);
  CHECK(sanitize("\xF5\x80") == kFFFD + kFFFD);
  CHECK(sanitize("\xC0\x80") == kFFFD + kFFFD);                          // overlong NUL
  CHECK(sanitize("\xE0\x80\x80") == kFFFD + kFFFD + kFFFD);              // overlong 3-byte
  CHECK(sanitize("\xED\xA0\x80") == kFFFD + kFFFD + kFFFD);              // surrogate U+D800
  CHECK(sanitize("\xF4\x90\x80\x80") == kFFFD + kFFFD + kFFFD + kFFFD);  // > U+10FFFF
  CHECK(sanitize("\xE2\x82"
                 "A") == kFFFD + "A");  // truncated, one U+FFFD
  CHECK(sanitize("\xF0\x9F\x98"
                 "A") == kFFFD + "A");
  // The example of the Unicode Standard, section 3.9 (U+FFFD substitution).
  CHECK(sanitize("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64") ==
        "a" + kFFFD + kFFFD + kFFFD + "b" + kFFFD + "c" + kFFFD + kFFFD + "d");
  CHECK(sanitize("0123456789abcdef\xFF"
                 "0123456789abcdef") == "0123456789abcdef" + kFFFD + "0123456789abcdef");
}

TEST_CASE("utf8 sanitizer reassembles a character split across chunks") {
  std::string out, carry;
  append_utf8_sanitized(out, "x\xF0", carry, false);
  CHECK(carry.size() == 1);
  append_utf8_sanitized(out, "\x9F", carry, false);
  CHECK(carry.size() == 2);
  append_utf8_sanitized(out, "\x98\x80y", carry, true);
  CHECK(carry.empty());
  CHECK(out == "x\xF0\x9F\x98\x80y");

  std::string bad, carry2;
  append_utf8_sanitized(bad, "\xF0\x9F", carry2, false);
  append_utf8_sanitized(bad, "A", carry2, false);
  CHECK(bad == kFFFD + "A");
  CHECK(carry2.empty());
}

TEST_CASE("utf8 sanitizer flushes a truncated sequence as U+FFFD at the end") {
  CHECK(sanitize("ab\xE2\x82") == "ab" + kFFFD);
  std::string out, carry;
  append_utf8_sanitized(out, "ab\xE2", carry, false);
  CHECK(out == "ab");
  append_utf8_sanitized(out, "", carry, true);
  CHECK(out == "ab" + kFFFD);
  CHECK(carry.empty());
}

TEST_CASE("utf8 sanitizer output is valid JSON string content, chunking never matters") {
  std::mt19937 rng(7);
  const unsigned char interesting[] = {0x00, 0x0A, 0x22, 0x5C, 0x41, 0x7F, 0x80, 0x9F,
                                       0xA0, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xED, 0xEF,
                                       0xF0, 0xF4, 0xF5, 0xFF, 0x8F, 0x90};
  for (int iter = 0; iter < 2000; ++iter) {
    std::string raw(rng() % 40, '\0');
    for (char& ch : raw) {
      ch = static_cast<char>(rng() % 2 ? interesting[rng() % sizeof interesting] : rng() % 256);
    }
    const std::string whole = sanitize(raw);
    std::string text;
    append_string(text, whole);
    json::error_code ec;
    json::value v = json::parse(text, ec);
    REQUIRE_FALSE(ec);
    CHECK(v.as_string() == whole);

    std::string chunked, carry;
    size_t pos = 0;
    while (pos < raw.size()) {
      const size_t len = std::min<size_t>(rng() % 5, raw.size() - pos);
      append_utf8_sanitized(chunked, std::string_view(raw).substr(pos, len), carry, false);
      pos += len;
    }
    append_utf8_sanitized(chunked, "", carry, true);
    CHECK(chunked == whole);
  }
}

TEST_CASE("base64 matches the RFC 4648 test vectors") {
  const std::pair<const char*, const char*> vectors[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [in, want] : vectors) {
    std::string out;
    append_base64(out, in);
    CHECK(out == want);
    CHECK(decode_base64(want) == std::optional<std::string>(in));
  }
  CHECK(decode_base64("//79AAE=") == std::string("\xFF\xFE\xFD\x00\x01", 5));
  CHECK(decode_base64("Zm9v\n") == std::nullopt);  // not in the alphabet
  CHECK(decode_base64("Zm=9v") == std::nullopt);   // '=' inside
  std::string bin = "x:";
  append_base64(bin, std::string_view("\xFF\xFE\xFD\x00\x01", 5));
  CHECK(bin == "x://79AAE=");
}

TEST_CASE("a DAG's node name given twice is refused, also inside a batch") {
  using sp::shm::PlanKind;
  auto dag_error = [](const Value& params) -> std::string {
    auto parsed = parse_plan_params(PlanKind::kDag, params);
    return std::holds_alternative<RpcError>(parsed) ? std::get<RpcError>(parsed).message : "";
  };
  Call c = only_call(
      R"({"jsonrpc":"2.0","id":1,"method":"execute_dag","params":{"nodes":{"a":{"command":"x"},"b":{"command":"y","env":{"a":"1","a":"2"}},"a":{"command":"z"}}}})");
  CHECK_THAT(dag_error(c.params), Contains("\"a\" is given twice"));
  // Duplicates elsewhere (an env object) are not node names: the last wins.
  Call env = only_call(
      R"({"jsonrpc":"2.0","id":1,"method":"execute_dag","params":{"nodes":{"a":{"command":"x","env":{"k":"1","k":"2"}}}}})");
  CHECK(dag_error(env.params).empty());
  // A node named "nodes" is a node, not another set of node names.
  Call named = only_call(
      R"({"jsonrpc":"2.0","id":1,"method":"execute_dag","params":{"nodes":{"nodes":{"command":"x","command":"y"}}}})");
  CHECK(dag_error(named.params).empty());
  Line batch = parse_line(
      R"([{"jsonrpc":"2.0","id":1,"method":"execute_dag","params":{"nodes":{"n":{"command":"x"}}}}, )"
      R"({"jsonrpc":"2.0","id":2,"method":"job_submit","params":{"strategy":"dag","nodes":{"m":{"command":"x"},"m":{"command":"y"}}}}])");
  REQUIRE(batch.calls.size() == 2);
  CHECK(dag_error(batch.calls[0].params).empty());
  auto submit = parse_job_submit_params(batch.calls[1].params);
  REQUIRE(std::holds_alternative<RpcError>(submit));
  CHECK_THAT(std::get<RpcError>(submit).message, Contains("\"m\" is given twice"));
  // A name written with escapes is the same name.
  Call escaped = only_call(
      R"({"jsonrpc":"2.0","id":1,"method":"execute_dag","params":{"nodes":{"a":{"command":"x"},"\u0061":{"command":"y"}}}})");
  CHECK_THAT(dag_error(escaped.params), Contains("\"a\" is given twice"));
}

TEST_CASE("a decoded object keeps duplicate keys, and a lookup finds the last") {
  Value v = val(R"({"k":1,"j":true,"k":2})");
  REQUIRE(v.is_object());
  CHECK(v.get_object().size() == 3);
  CHECK(*v.get_object().if_contains("k") == Value(2));
  std::string text;
  append_value(text, v);
  CHECK(text == R"({"k":1,"j":true,"k":2})");
}

TEST_CASE("plan params: steps are execute specs, a DAG is checked whole") {
  auto plan = [](sp::shm::PlanKind kind, std::string_view params) {
    return parse_plan_params(kind, val(params));
  };
  auto error = [&](sp::shm::PlanKind kind, std::string_view params) {
    auto p = plan(kind, params);
    REQUIRE(std::holds_alternative<RpcError>(p));
    CHECK(std::get<RpcError>(p).code == Code::InvalidParams);
    return std::get<RpcError>(p).message;
  };
  auto chain = plan(sp::shm::PlanKind::kChain,
                    R"({"commands":[{"command":"a","timeout":2},{"command":"b","args":["x"]}],)"
                    R"("stop_on_error":false})");
  REQUIRE(std::holds_alternative<PlanParams>(chain));
  const PlanParams& c = std::get<PlanParams>(chain);
  REQUIRE(c.steps.size() == 2);
  CHECK(c.steps[0].name == "0");
  CHECK(c.steps[0].exec.timeout_s == 2.0);
  CHECK_FALSE(c.steps[1].exec.shell);
  CHECK_FALSE(c.stop_on_error);
  CHECK_THAT(error(sp::shm::PlanKind::kChain, R"({"commands":[{"command":"a"},{"command":""}]})"),
             Contains("\"commands\"[1]: \"command\""));
  CHECK_THAT(
      error(sp::shm::PlanKind::kParallel, R"({"commands":[{"command":"a"}],"max_parallel":65})"),
      Contains("max_parallel"));
  CHECK_THAT(error(sp::shm::PlanKind::kDag, R"({"nodes":{"a":{"command":"x","depends_on":"b"}}})"),
             Contains("node \"a\": \"depends_on\""));
  CHECK_THAT(
      error(sp::shm::PlanKind::kDag, R"({"nodes":{"a":{"command":"x","depends_on":["a"]}}})"),
      Contains("cycle: a -> a"));
  CHECK_THAT(error(sp::shm::PlanKind::kDag, R"({"nodes":[{"command":"x"}]})"),
             Contains("\"nodes\""));
  // A long name is cut for the message at a character, never inside one.
  const std::string long_name = std::string(63, 'f') + "\u1615";
  for (const std::string& params :
       {R"({"nodes":{")" + long_name + R"(":{"command":"x"}}})",
        R"({"nodes":{"a":{"command":"x","depends_on":[")" + long_name + R"("]}}})"}) {
    std::string message = error(sp::shm::PlanKind::kDag, params);
    CHECK_THAT(message, Contains(std::string(63, 'f') + "\"..."));
    CHECK_NOTHROW(json::parse(error_text(nullptr, {Code::InvalidParams, message})));
  }
  auto dag = plan(sp::shm::PlanKind::kDag,
                  R"({"nodes":{"c":{"command":"x","depends_on":["a","b"]},"a":{"command":"y"},)"
                  R"("b":{"command":"z","depends_on":["a"]}},"fail_fast":true,"max_parallel":2})");
  REQUIRE(std::holds_alternative<PlanParams>(dag));
  CHECK(std::get<PlanParams>(dag).fail_fast);
  CHECK(std::get<PlanParams>(dag).max_parallel == 2);
}
