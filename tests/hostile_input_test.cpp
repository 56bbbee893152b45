// Hostile clients, part two: malformed, deeply nested, huge and mistyped
// requests against the real shell-poold. Every bad request gets its JSON-RPC
// error on a connection that stays usable, and none of the daemon's processes
// dies. (The ordinary protocol behaviour is pinned down in daemon_test.cpp;
// floods and connection hoarding are in hostile_output_test.cpp.)
#include <catch2/catch.hpp>

#include <dirent.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/daemon_harness.h"

using namespace sp::test;
using Catch::Contains;

// ---- malformed requests ----

TEST_CASE(
    "malformed UTF-8, deep nesting, huge numbers and unusable ids get their JSON-RPC error "
    "on a connection that stays usable",
    "[daemon][hostile][jsonrpc]") {
  START_DAEMON(d, {"--workers", "2"});
  Client c(d.socket());
  REQUIRE(c.connected());
  std::vector<pid_t> roles = role_pids(d);
  const std::string pre = R"({"jsonrpc":"2.0",)";
  const std::string deep_arrays(100000, '[');
  std::string deep_objects, deep_mixed, deep_env;
  for (int i = 0; i < 50000; ++i) deep_objects += R"({"a":)";
  deep_objects += "1" + std::string(50000, '}');
  for (int i = 0; i < 20000; ++i) deep_mixed += R"([{"a":)";
  for (int i = 0; i < 1000; ++i) deep_env += R"({"a":)";
  deep_env += R"("x")" + std::string(1000, '}');
  auto depth_request = [&](int arrays) {  // the request object is depth 1
    return pre + R"("id":"depth","method":"session_list","params":)" + std::string(arrays, '[') +
           std::string(size_t(arrays), ']') + "}";
  };
  struct Case {
    std::string what, line;
    int code;  // 0: a result is expected
    json::value id = nullptr;
  };
  const Case cases[] = {
      // Invalid UTF-8 anywhere is a parse error: nothing of the line is trusted.
      {"0xFF inside a string",
       pre + R"("id":1,"method":"execute","params":{"command":"echo \xff"}})", -32700},
      {"0xFF outside a string", pre + "\"id\":2,\xff\"method\":\"health\"}", -32700},
      {"a line of invalid bytes", "\xff\xfe\xfd\x80", -32700},
      {"an overlong encoding in the method", pre + "\"id\":3,\"method\":\"health\xc0\xaf\"}",
       -32700},
      {"a UTF-8 encoded surrogate in a param",
       pre + "\"id\":4,\"method\":\"execute\",\"params\":{\"command\":\"echo \xed\xa0\x80\"}}",
       -32700},
      {"a code point above U+10FFFF in a key",
       pre + "\"id\":5,\"method\":\"health\",\"\xf4\x90\x80\x80\":1}", -32700},
      {"a truncated sequence ending the id", pre + "\"id\":\"x\xe2\x82\",\"method\":\"health\"}",
       -32700},
      {"a lone continuation byte in an env value",
       pre + "\"id\":6,\"method\":\"execute\",\"params\":{\"command\":\"true\",\"env\":{\"A\":"
             "\"\x80\"}}}",
       -32700},
      {"Latin-1 in a session name",
       pre + "\"id\":7,\"method\":\"session_create\",\"params\":{\"name\":\"caf\xe9\"}}", -32700},
      {"an escaped lone surrogate",
       pre + R"("id":8,"method":"execute","params":{"command":"\ud800"}})", -32700},
      {"a raw NUL inside a string", pre + "\"id\":9,\"method\":\"hea" + '\0' + "lth\"}", -32700},
      {"a raw NUL after the request", pre + "\"id\":10,\"method\":\"health\"}" + '\0', -32700},
      // Nesting deeper than 64 is a parse error, at any depth of input.
      {"100000 unclosed [", deep_arrays, -32700},
      {"100000 closed [", deep_arrays + std::string(100000, ']'), -32700},
      {"50000 nested objects", deep_objects, -32700},
      {"20000 nested [{", deep_mixed, -32700},
      {"1000 nested objects in env",
       pre + R"("id":11,"method":"execute","params":{"command":"true","env":)" + deep_env + "}}",
       -32700},
      {"nesting of exactly 64", depth_request(63), 0, "depth"},
      {"nesting of 65", depth_request(64), -32700},
      // Ids: a number that is not finite, or an id that is not a scalar, is unusable.
      {"id 1e400", pre + R"("id":1e400,"method":"health"})", -32600},
      {"id -1e309", pre + R"("id":-1e309,"method":"health"})", -32600},
      {"id {}", pre + R"("id":{},"method":"health"})", -32600},
      {"id {\"a\":1}", pre + R"("id":{"a":1},"method":"health"})", -32600},
      {"id []", pre + R"("id":[],"method":"health"})", -32600},
      {"id [1]", pre + R"("id":[1],"method":"health"})", -32600},
      {"id true", pre + R"("id":true,"method":"health"})", -32600},
      {"id false", pre + R"("id":false,"method":"health"})", -32600},
      {"id 1e-400 (underflows to 0)", pre + R"("id":1e-400,"method":"health"})", 0, 0.0},
      {"id 2^64", pre + R"("id":18446744073709551616,"method":"health"})", 0,
       18446744073709551616.0},
      {"id of 30 digits", pre + R"("id":123456789012345678901234567890,"method":"health"})", 0,
       123456789012345678901234567890.0},
      // Huge numbers as params.
      {"timeout 1e400",
       pre + R"("id":20,"method":"execute","params":{"command":"true","timeout":1e400}})", -32602,
       20},
      {"timeout -1e309",
       pre + R"("id":21,"method":"execute","params":{"command":"true","timeout":-1e309}})", -32602,
       21},
      {"timeout 1e-400",
       pre + R"("id":22,"method":"execute","params":{"command":"true","timeout":1e-400}})", -32602,
       22},
      {"timeout 2^64 (runs)",
       pre +
           R"("id":23,"method":"execute","params":{"command":"true","timeout":18446744073709551616}})",
       0, 23},
      {"max_output_bytes 2^64",
       pre +
           R"("id":24,"method":"execute","params":{"command":"true","max_output_bytes":18446744073709551616}})",
       -32602, 24},
      {"max_output_bytes 1e400",
       pre + R"("id":25,"method":"execute","params":{"command":"true","max_output_bytes":1e400}})",
       -32602, 25},
      {"kill_grace_ms -1e309",
       pre + R"("id":26,"method":"execute","params":{"command":"true","kill_grace_ms":-1e309}})",
       -32602, 26},
      {"kill_grace_ms 2^64-1 (runs)",
       pre +
           R"("id":27,"method":"execute","params":{"command":"true","kill_grace_ms":18446744073709551615}})",
       0, 27},
      {"limits.open_files 1e400",
       pre +
           R"("id":28,"method":"execute","params":{"command":"true","limits":{"open_files":1e400}}})",
       -32602, 28},
  };
  for (const Case& k : cases) {
    INFO(k.what << ": sent " << k.line.substr(0, 200));
    REQUIRE(c.send_line(k.line));
    auto v = c.read_json(10);
    INFO("answer: " << c.last_line().substr(0, 300));
    REQUIRE(v);
    REQUIRE(v->is_object());
    const json::object& o = v->as_object();
    REQUIRE(o.contains("id"));
    CHECK(o.at("id") == k.id);
    if (k.code == 0) {
      CHECK(o.contains("result"));
    } else {
      CHECK(num(error_of(o), "code") == k.code);
    }
  }
  // A number too large for a double is not JSON the daemon can read: a parse
  // error or an unusable id, never a crash.
  REQUIRE(c.send_line(pre + R"("id":1e99999999999999999999,"method":"health"})"));
  auto v = c.read_json(10);
  INFO("answer: " << c.last_line());
  REQUIRE(v);
  CHECK(v->as_object().at("id").is_null());
  int64_t code = num(error_of(v->as_object()), "code");
  CHECK((code == -32700 || code == -32600));

  // The connection and every process of the daemon survived all of that,
  // and no session was made from a request that did not parse.
  CHECK(str(execute(c, sh("echo alive")), "stdout") == "alive\n");
  CHECK(result_of(c.call("session_list", nullptr)).at("sessions").as_array().empty());
  CHECK_FALSE(c.eof());
  check_same_roles(d, c, roles);
  stop_cleanly(d);
}

TEST_CASE("limits up to 2^64-1 are accepted and run the command, or are refused naming the limit",
          "[daemon][hostile][limits]") {
  // A limit that large means "no limit in practice". It must not wrap around
  // (a CPU limit's hard value is one second above the soft one) and end the
  // job as failed to start.
  START_DAEMON(d, {"--workers", "2"});
  Client c(d.socket());
  REQUIRE(c.connected());
  for (const char* limit :
       {"cpu_seconds", "address_space_bytes", "file_size_bytes", "processes", "memory_bytes"})
    for (uint64_t value : {UINT64_MAX - 1, UINT64_MAX}) {
      json::object p = sh("echo ran");
      p["limits"] = {{limit, value}};
      json::object r = c.call("execute", p);
      INFO(limit << " = " << value << ": " << json::serialize(r));
      if (r.contains("error")) {
        json::object e = error_of(r);
        CHECK(num(e, "code") == -32602);
        CHECK_THAT(str(e, "message"), Contains(limit));
      } else {
        json::object res = result_of(r);
        CHECK(str(res, "status") == "exited");
        CHECK(str(res, "stdout") == "ran\n");
      }
    }
  stop_cleanly(d);
}

// ---- mistyped params ----

TEST_CASE(
    "a wrong type or value in any param of the execute, session and job methods is a -32602 "
    "naming it",
    "[daemon][hostile][params]") {
  START_DAEMON(d, {"--workers", "2"});
  Client c(d.socket());
  REQUIRE(c.connected());
  std::vector<pid_t> roles = role_pids(d);
  int64_t submitted = num(health(c).at("counters").as_object(), "submitted");

  using Values = std::vector<json::value>;
  const json::array empty_array;
  const json::object empty_object;
  // Not a string (null is "absent" for optional params, so it is no error there).
  const Values not_string = {5,
                             -1,
                             1.5,
                             true,
                             false,
                             empty_array,
                             json::array{"x"},
                             empty_object,
                             json::object{{"a", "b"}}};
  // Not an integer >= 0 (byte counts, grace).
  const Values not_count = {"10",          "",
                            true,          empty_array,
                            empty_object,  -1,
                            1.5,           -0.5,
                            1e30,          18446744073709551616.0,
                            json::array{1}};
  const Values not_env = {"A=1",
                          "",
                          5,
                          true,
                          empty_array,
                          json::array{"A=1"},
                          json::object{{"A", 1}},
                          json::object{{"A", true}},
                          json::object{{"A", nullptr}},
                          json::object{{"A", empty_object}},
                          json::object{{"A", json::array{"x"}}},
                          json::object{{"", "x"}},
                          json::object{{"A=B", "x"}},
                          json::object{{"A", std::string("x\0y", 3)}}};
  auto with = [](const Values& a, const Values& b) {
    Values all = a;
    all.insert(all.end(), b.begin(), b.end());
    return all;
  };
  struct Param {
    std::string name;  // as the message must quote it
    Values bad;
    std::string limit = {};  // set: `name` is this limit inside "limits"
  };
  std::vector<Param> exec_params = {
      {"command", with(not_string, {nullptr, "", json::string("a\0b", 3)})},
      {"args",
       {"x", "", 5, true, empty_object, json::array{1}, json::array{nullptr},
        json::array{"a", json::array{"b"}}, json::array{empty_object},
        json::array{std::string("\0", 1)}}},
      {"shell", {"true", "false", "", 1, 0, empty_array, empty_object}},
      {"timeout",
       {"5", "", true, false, empty_array, empty_object, json::array{1}, -1, 0, -0.5, 0.0}},
      {"working_dir", with(not_string, {json::string("/tmp\0x", 6)})},
      {"session_id", not_string},
      {"env", not_env},
      {"output_encoding", with(not_string, {"", "hex", "UTF8", "base32", json::array{"base64"}})},
      {"max_output_bytes", not_count},
      {"kill_grace_ms", not_count},
      {"limits", {"cpu_seconds=1", "", 5, true, empty_array, json::array{empty_object}}},
      {"output_policy", with(not_string, {"", "drop", "KILL", json::array{"kill"}})},
      {"stdin", not_string},
      {"stdin_encoding", with(not_string, {"", "hex", "UTF8", json::array{"base64"}})},
      {"stdin_open", {"true", "", 1, 0, empty_array, empty_object}},
  };
  for (const char* limit : {"cpu_seconds", "address_space_bytes", "open_files", "processes",
                            "file_size_bytes", "memory_bytes"})
    exec_params.push_back({limit, with(not_count, {0}), limit});

  size_t checked = 0;
  auto check_bad = [&](std::string_view method, const json::value& params,
                       const std::string& name) {
    INFO(method << " " << json::serialize(params));
    auto r = c.try_call(method, params, 10);
    INFO("answer: " << c.last_line().substr(0, 300));
    REQUIRE(r);
    json::object e = error_of(*r);
    CHECK(num(e, "code") == -32602);
    CHECK_THAT(str(e, "message"), Contains(name));
    ++checked;
  };
  for (std::string_view method : {"execute", "execute_stream", "job_submit"}) {
    check_bad(method, json::array{"echo"}, "params");
    check_bad(method, json::array{}, "params");
    check_bad(method, empty_object, "\"command\"");
    for (const Param& p : exec_params)
      for (const json::value& bad : p.bad) {
        json::object params;
        if (p.name != "command") params["command"] = "echo should-not-run";
        if (p.limit.empty()) {
          params[p.name] = bad;
        } else {
          params["limits"] = json::object{{p.limit, bad}};
        }
        check_bad(method, params, "\"" + p.name + "\"");
      }
  }

  for (const json::value& bad : with(not_string, {json::string("a\0b", 3), json::string(200, 'n')}))
    check_bad("session_create", json::object{{"name", bad}}, "\"name\"");
  for (const json::value& bad : not_env)
    check_bad("session_create", json::object{{"env_vars", bad}}, "\"env_vars\"");
  check_bad("session_create", json::array{"name"}, "params");
  for (const json::value& bad : with(not_string, {nullptr, "", json::string("a\0b", 3)}))
    check_bad("session_destroy", json::object{{"session_id", bad}}, "\"session_id\"");
  check_bad("session_destroy", empty_object, "\"session_id\"");
  check_bad("session_destroy", nullptr, "\"session_id\"");
  check_bad("session_destroy", json::array{"id"}, "params");
  // Detached jobs: every param of every job method.
  const Values bad_id =
      with(not_string, Values{"", json::string("a\0b", 3), json::string(65, 'j')});
  for (const json::value& bad : with(bad_id, Values{"42", "a b", "x/y"}))
    check_bad("job_submit", json::object{{"command", "true"}, {"job_id", bad}}, "\"job_id\"");
  for (const char* m :
       {"job_status", "job_wait", "job_output", "job_cancel", "job_signal", "job_forget"}) {
    check_bad(m, empty_object, "\"job_id\"");
    check_bad(m, json::array{"1"}, "params");
    for (const json::value& bad : with(bad_id, Values{nullptr}))
      check_bad(m, json::object{{"job_id", bad}, {"signal", "TERM"}}, "\"job_id\"");
  }
  const Values bad_seconds = {"5", "", true, empty_array, empty_object, -1, -0.5};
  auto job = [](const char* key, const json::value& v) {
    return json::object{{"job_id", "x-1"}, {key, v}, {"signal", "TERM"}};
  };
  for (const json::value& bad : bad_seconds) {
    check_bad("job_wait", job("timeout", bad), "\"timeout\"");
    check_bad("job_output", job("wait", bad), "\"wait\"");
  }
  for (const json::value& bad : with(not_string, Values{"", "STDOUT", "all"}))
    check_bad("job_output", job("stream", bad), "\"stream\"");
  for (const json::value& bad : not_count)
    check_bad("job_output", job("cursor", bad), "\"cursor\"");
  for (const json::value& bad : with(not_count, Values{0, 16777217}))
    check_bad("job_output", job("max_bytes", bad), "\"max_bytes\"");
  for (const json::value& bad : {json::value("hex"), json::value(5)}) {
    check_bad("job_output", job("output_encoding", bad), "\"output_encoding\"");
    check_bad("job_wait", job("output_encoding", bad), "\"output_encoding\"");
  }
  const Values bad_signal = {"", "NOPE", "SIGNOPE", 0,           65,
                             -1, 1.5,    true,      empty_array, empty_object};
  for (const json::value& bad : bad_signal) {
    check_bad("job_signal", job("signal", bad), "\"signal\"");
    json::object cancel = job("signal", bad);
    check_bad("job_cancel", cancel, "\"signal\"");
  }
  check_bad("job_signal", json::object{{"job_id", "x-1"}}, "\"signal\"");
  for (const json::value& bad : not_count)
    check_bad("job_cancel", job("grace_ms", bad), "\"grace_ms\"");
  for (const json::value& bad : with(not_string, Values{"sleeping", "RUNNING"}))
    check_bad("job_list", json::object{{"state", bad}}, "\"state\"");
  for (const json::value& bad : not_string)
    check_bad("job_list", json::object{{"session_id", bad}}, "\"session_id\"");
  INFO(checked << " bad params checked");

  // None of them ran a job or made a session, and all was on one connection.
  json::object h = health(c);
  CHECK(num(h.at("counters").as_object(), "submitted") == submitted);
  CHECK(num(h, "sessions") == 0);
  CHECK(result_of(c.call("job_list", {})).at("jobs").as_array().empty());
  CHECK(str(execute(c, sh("echo alive")), "stdout") == "alive\n");
  check_same_roles(d, c, roles);
  stop_cleanly(d);
}

TEST_CASE("a batch's jobs are held to --max-inflight like single lines", "[daemon][hostile]") {
  START_DAEMON(d, {"--workers", "1", "--max-inflight", "2"});
  Client c(d.socket());
  std::string batch = "[";
  for (int i = 1; i <= 5; ++i)
    batch += (i > 1 ? "," : "") + Client::request(i, "execute", sh("sleep 0.2"));
  REQUIRE(c.send_line(batch + "]"));
  auto v = c.read_json(10);
  REQUIRE(v);
  REQUIRE(v->is_array());
  int ran = 0, refused = 0;
  for (const json::value& a : v->as_array()) {
    const json::object& o = a.as_object();
    if (o.contains("result")) ++ran;
    if (o.contains("error") && num(o.at("error").as_object(), "code") == -32002) ++refused;
  }
  CHECK(ran == 2);
  CHECK(refused == 3);
  stop_cleanly(d);
}
